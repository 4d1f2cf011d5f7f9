"""The training child's protocol: typed messages checked on both sides, the child command, demo-weight detection."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from pneumoview.service.training import (
    SCHEMA,
    JsonLineBuffer,
    ProtocolError,
    child_command,
    decode_event,
    encode_event,
    is_demo_weights,
    memory_warning,
)


def test_json_line_buffer_waits_for_whole_lines_and_keeps_junk_apart() -> None:
    buf = JsonLineBuffer()
    assert buf.feed(b'{"event": "valid') == []
    events = buf.feed(b'ate", "done": 1, "total": 3}\nnot json\n{"event": "nope"}\n{"event": "message", "mess')
    assert events == [{"event": "validate", "done": 1, "total": 3}]
    assert buf.junk == ["not json", '{"event": "nope"}']
    assert buf.feed(b'age": "hi"}\n') == [{"event": "message", "message": "hi"}]


def test_encode_checks_the_schema_and_writes_non_finite_as_null() -> None:
    plain = {
        "event": "epoch",
        "fold": 0,
        "epoch": 1,
        "epochs": 2,
        "seconds": 0.5,
        "eta_s": 1.0,
        "done_epochs": 1,
        "total_epochs": 2,
    }
    line = encode_event({**plain, "train_loss": np.float32(0.25), "auc": math.nan, "path": Path("x")})
    assert json.loads(line) == {**plain, "train_loss": 0.25, "auc": None, "path": "x"}
    assert decode_event(line)["auc"] is None
    with pytest.raises(ProtocolError, match="'world_size' must be int"):
        encode_event(
            {
                "event": "start",
                "folds": 1,
                "of_folds": 5,
                "epochs": 3,
                "final_model": False,
                "n_images": 4,
                "device": "cpu",
                "total_epochs": 3,
            }
        )
    with pytest.raises(ProtocolError, match="unknown training event"):
        decode_event('{"event": "surprise"}')
    with pytest.raises(ProtocolError, match="'done' must be int"):
        decode_event('{"event": "validate", "done": true, "total": 2}')


def test_every_event_the_training_cli_emits_is_in_the_schema() -> None:
    """The emitter's event names (grep of the training package) are exactly the schema's."""
    import re

    root = Path(__file__).resolve().parents[2] / "training"
    emitted = set()
    for path in root.glob("*.py"):
        emitted |= set(re.findall(r'"event": "([a-z_]+)"', path.read_text(encoding="utf-8")))
    assert emitted == set(SCHEMA)


def test_child_command_from_an_install_and_from_the_frozen_app(monkeypatch: pytest.MonkeyPatch) -> None:
    assert child_command(["DATA"]) == (sys.executable, ["-m", "training", "DATA", "--json-progress"])
    assert child_command(["D"], python="/opt/py") == ("/opt/py", ["-m", "training", "D", "--json-progress"])
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert child_command(["DATA"]) == (sys.executable, ["train", "DATA", "--json-progress"])


def test_demo_weights_are_recognised_by_their_marks_only(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    marked = tmp_path / "a.safetensors"
    save_file({"x": np.zeros(1, np.float32)}, str(marked), metadata={"pneumoview_demo": "1"})
    plain = tmp_path / "b.safetensors"
    save_file({"x": np.zeros(1, np.float32)}, str(plain))
    demo_llama, real_llama = tmp_path / "l1", tmp_path / "l2"
    demo_llama.mkdir()
    real_llama.mkdir()
    (demo_llama / "config.json").write_text('{"pneumoview_demo": true}')
    (real_llama / "config.json").write_text('{"model_type": "llama"}')
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 8 + b"junk")
    assert is_demo_weights(marked) and is_demo_weights(demo_llama)
    assert not any(is_demo_weights(p) for p in (plain, real_llama, junk, tmp_path / "missing", None, ""))


def test_memory_warning_only_when_the_estimate_exceeds_the_machine() -> None:
    assert memory_warning(8.0, 16.0, device="cpu") is None
    assert memory_warning(None, 16.0, device="cpu") is None and memory_warning(20.0, None, device="cuda") is None
    text = memory_warning(20.0, 16.0, device="cuda")
    assert text is not None and "20.0 GB" in text and "16.0 GB of GPU memory" in text


def test_the_protocol_module_imports_neither_qt_nor_torch() -> None:
    import subprocess

    code = (
        "import sys, pneumoview.service.training; "
        "print(sorted(m for m in ('torch', 'PySide6', 'training') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
