"""``pneumoview models``: list / add / activate / rollback / show / remove / compare through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_support import (
    make_tiny_bundle,
    reference_tensors,
    replace_tensors,
    save_reference_checkpoint,
    small_filesystem,
)

from pneumoview import paths
from pneumoview.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_bundle(folder: Path, *, seed: int, model_id: str, metrics: dict) -> Path:
    return make_tiny_bundle(folder, seed=seed, model_id=model_id, metrics=metrics)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["models", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_whole_lifecycle(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "list")
    assert code == 0 and "no models in" in out and str(home / "data" / "models") in out

    code, out, _ = _run(
        capsys,
        "add",
        str(make_bundle(tmp_path / "a", seed=1, model_id="run-a", metrics={"auc": 0.81})),
        "--activate",
        "--note",
        "first",
    )
    assert code == 0
    first = out.split()[1]
    assert out.splitlines() == [f"added {first}", f"active: {first}"]
    code, out, _ = _run(
        capsys, "add", str(make_bundle(tmp_path / "b", seed=2, model_id="run-b", metrics={"auc": 0.88}))
    )
    second = out.split()[1]

    code, out, _ = _run(capsys, "list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith(f"* {first}") and "auc=0.810" in lines[0]
    assert lines[1].startswith(f"  {second}")

    code, out, _ = _run(capsys, "activate", second)
    assert code == 0 and out.strip() == f"active: {second}"
    code, out, _ = _run(capsys, "list", "--json")
    listed = json.loads(out)
    assert [(e["id"], e["active"]) for e in listed] == [(first, False), (second, True)]

    code, out, _ = _run(capsys, "compare", first, second)
    assert code == 0 and "auc" in out and "0.8100" in out and "0.8800" in out

    code, out, _ = _run(capsys, "show", first, "--json")
    shown = json.loads(out)
    assert shown["note"] == "first" and shown["manifest"]["model_id"] == "run-a" and shown["active"] is False
    code, out, _ = _run(capsys, "show", first)
    assert "model_id: run-a" in out and "auc=0.810" in out

    code, out, _ = _run(capsys, "rollback")
    assert code == 0 and out.strip() == f"rolled back; active: {first}"

    code, out, err = _run(capsys, "remove", first)
    assert code == 2 and "is active" in err and out == ""
    code, out, _ = _run(capsys, "remove", second)
    assert code == 0
    code, out, _ = _run(capsys, "list", "--json")
    assert [e["id"] for e in json.loads(out)] == [first]


def test_errors_are_one_line_with_exit_code_2(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "activate", "no-such-model")
    assert code == 2 and err.startswith("pneumoview models: error: no model 'no-such-model'")
    code, _, err = _run(capsys, "rollback")
    assert code == 2 and "no earlier model" in err
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, "add", str(tmp_path / "empty"))
    assert code == 2 and "manifest.json is missing" in err
    assert len(err.strip().splitlines()) == 1


def test_root_option_points_at_another_registry(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other-registry"
    _run(capsys, "--root", str(other), "add", str(make_bundle(tmp_path / "a", seed=1, model_id="x", metrics={})))
    assert len(list((other / "bundles").iterdir())) == 1
    assert not (home / "data" / "models").exists()


def test_activation_warns_when_settings_override_the_registry(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pneumoview.settings import Settings, save_settings

    bundle = make_bundle(tmp_path / "a", seed=1, model_id="x", metrics={})
    code, out, err = _run(capsys, "add", str(bundle), "--activate")
    assert code == 0 and err == ""
    save_settings(Settings(active_bundle=str(tmp_path / "explicit-bundle")))
    code, out, err = _run(capsys, "activate", out.split()[1])
    assert code == 0 and "explicit-bundle" in err and "instead of the registry" in err


def test_runs_as_a_real_command(tmp_path: Path) -> None:
    env = {**os.environ, paths.HOME_ENV: str(tmp_path / "home"), "PYTHONPATH": str(REPO_ROOT)}
    bundle = make_bundle(tmp_path / "a", seed=1, model_id="cli", metrics={})
    proc = subprocess.run(
        [sys.executable, "-m", "pneumoview", "models", "add", str(bundle), "--activate"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "pneumoview", "models", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("* ") and "cli" in proc.stdout


def test_add_refuses_tensors_of_the_wrong_shape_in_one_line(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    bundle = make_bundle(tmp_path / "a", seed=1, model_id="x", metrics={})
    tensors = load_file(str(bundle / "weights.safetensors"))
    tensors["head.fc.weight"] = tensors["head.fc.weight"][:, :32].contiguous()  # header valid, digest valid
    replace_tensors(bundle, tensors)
    code, out, err = _run(capsys, "add", str(bundle))
    assert code == 2 and out == ""
    assert err.startswith("pneumoview models: error: bundle tensors do not fit architecture 'pneumollm-tiny'")
    assert "head.fc.weight (2, 32) != (2, 64)" in err and len(err.strip().splitlines()) == 1
    assert not (home / "data" / "models" / "bundles").exists() or not any(
        (home / "data" / "models" / "bundles").iterdir()
    )


def test_import_reference_registers_a_bundle(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pneumoview.inference.bundle import load_bundle
    from pneumoview.inference.config import TINY_CONFIG, load_config
    from pneumoview.registry import ModelRegistry

    ref = reference_tensors(load_config(TINY_CONFIG), seed=5)
    checkpoint = save_reference_checkpoint(tmp_path / "checkpoint-best.pth", ref)
    code, out, err = _run(
        capsys,
        "import-reference",
        str(checkpoint),
        "--name",
        "paper model",
        "--architecture",
        TINY_CONFIG,
        "--activate",
    )
    assert code == 0, err
    new_id = out.split()[1]
    assert out.splitlines() == [f"imported {new_id}", f"active: {new_id}"]
    entry = ModelRegistry().active()
    assert entry is not None and entry.id == new_id and entry.name == "paper model"
    assert entry.source == "reference checkpoint checkpoint-best.pth"
    manifest, tensors = load_bundle(entry.path)
    assert manifest.training["epoch"] == 41
    assert (tensors["head.fc.weight"] == ref["adapter_output_cls.weight"]).all()
    assert [p.name for p in (home / "data" / "models" / "bundles").iterdir()] == [new_id]  # no work folder left


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


PWNED = Path("/tmp/pneumoview-test-pwned-marker")


def test_import_reference_refuses_code_in_plain_words(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    import torch

    from pneumoview.inference.config import TINY_CONFIG, load_config

    PWNED.unlink(missing_ok=True)
    evil = tmp_path / "evil.pth"
    torch.save(
        {"model": reference_tensors(load_config(TINY_CONFIG)), "args": argparse.Namespace(), "extra": _Payload()}, evil
    )
    code, out, err = _run(capsys, "import-reference", str(evil), "--architecture", TINY_CONFIG)
    assert code == 2 and out == ""
    assert err == f"pneumoview models: error: this file contains code, PneumoView will not load it ({evil})\n"
    assert "weights_only" not in err and not PWNED.exists()
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"PK\x03\x04 not a checkpoint")
    code, out, err = _run(capsys, "import-reference", str(junk))
    assert code == 2 and "not a readable torch checkpoint" in err and "weights_only" not in err


def test_use_demo_is_remembered_until_activation(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pneumoview.registry import ModelRegistry

    code, out, _ = _run(capsys, "use-demo")
    assert code == 0 and ModelRegistry().demo_chosen()
    code, out, _ = _run(capsys, "list")
    assert out.startswith("using the demo model")
    _, out, _ = _run(capsys, "add", str(make_bundle(tmp_path / "a", seed=1, model_id="x", metrics={})), "--activate")
    assert not ModelRegistry().demo_chosen()


@pytest.mark.parametrize("read_only", [False, True])
def test_a_full_or_read_only_disk_is_one_line_and_exit_2(
    tmp_path: Path, home: Path, read_only: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_bundle(tmp_path / "a", seed=1, model_id="x", metrics={})
    with small_filesystem(tmp_path / "disk", read_only=read_only) as disk:
        code, out, err = _run(capsys, "--root", str(disk / "models"), "add", str(bundle))
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        if read_only:
            assert err.startswith(f"pneumoview models: error: cannot write {disk / 'models'}")
        else:
            assert err.startswith(f"pneumoview models: error: disk full: {disk / 'models'}")
            assert list((disk / "models" / "bundles").iterdir()) == []  # no partial folder
