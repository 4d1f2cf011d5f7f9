"""Never contact a hub: a fresh interpreter with every socket entry point trapped runs the real
import -> demo generation -> weight loading (every format) -> predict -> analyze CLI path.

The environment given to it has no HF_*_OFFLINE variables (conftest sets them for this process),
so the test also proves that PneumoView sets them itself before transformers is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, os, socket, sys
    attempts = []
    def trap(*args, **kwargs):
        attempts.append(repr(args[1:2] or args[:1]))
        raise OSError("network disabled by test_offline")
    socket.socket.connect = trap
    socket.socket.connect_ex = trap
    socket.create_connection = trap
    socket.getaddrinfo = trap

    import numpy as np
    from pneumoview.inference.engine import InferenceEngine
    from pneumoview.inference.weights import read_clip_visual, read_llama_decoder
    from pneumoview.cli import main

    work = sys.argv[1]
    engine = InferenceEngine.load_demo(os.path.join(work, "demo"))
    preds = engine.predict(np.random.default_rng(0).random((2, 224, 224), dtype=np.float32))
    read_llama_decoder(sys.argv[2])  # Meta consolidated
    read_llama_decoder(sys.argv[3])  # Hugging Face folder
    read_clip_visual(sys.argv[4])    # open_clip .bin
    code = main(["analyze", sys.argv[5], "--demo", "--csv", os.path.join(work, "out.csv"), "--quiet"])
    import huggingface_hub.constants as hub
    seen = list(attempts)
    import urllib.request
    try:  # the trap itself must work, or this test proves nothing
        urllib.request.urlopen("http://example.com/", timeout=2)
    except OSError:
        pass
    print(json.dumps({"attempts": seen, "trap_works": len(attempts) > len(seen), "predictions": len(preds),
                      "hub_offline": bool(hub.HF_HUB_OFFLINE), "analyze_exit": code,
                      "env": [os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE")]}))
    """
)


def test_full_path_attempts_no_network_connection(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from test_weights import meta_state, tiny_clip, write_meta
    from transformers import LlamaConfig, LlamaForCausalLM

    meta = write_meta(tmp_path / "meta", meta_state())
    hf = tmp_path / "hf"
    LlamaForCausalLM(
        LlamaConfig(vocab_size=20, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    ).save_pretrained(hf)
    clip = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(tiny_clip().state_dict(), clip)
    folder = tmp_path / "study"
    folder.mkdir()
    from pydicom.data import get_testdata_file

    (folder / "ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    (folder / "notes.txt").write_text("not an image")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["PNEUMOVIEW_HOME"] = str(tmp_path / "home")
    env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty cache: nothing to find there either
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), str(meta), str(hf), str(clip), str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["trap_works"] is True
    assert result["attempts"] == []
    assert result["predictions"] == 2
    assert result["hub_offline"] is True and result["env"] == ["1", "1"]
    assert result["analyze_exit"] == 1  # notes.txt is unreadable as DICOM: reported, exit 1
    assert "not-analysed" in (tmp_path / "out.csv").read_text(encoding="utf-8")  # the CT: not a radiograph
