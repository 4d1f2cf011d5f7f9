"""benchmarks/gpu_check.py must keep working where it cannot be timed: a tiny run on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_tiny_on_cpu_and_reports_each_check(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--tiny",
            "--device",
            "cpu",
            "--only",
            "bf16,int8,nf4,reference",
            "--batch",
            "4,8",
            "--repeats",
            "2",
            "--iters",
            "1",
            "--warmup",
            "1",
            "--json",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    results = data["results"]
    assert results["nf4"] == {"skipped": "needs a CUDA device"}
    assert results["bf16"]["images_per_s_b4"] > 0 and results["bf16"]["images_per_s_b8"] > 0
    assert results["bf16"]["images_per_s_b1"] > 0 and results["bf16"]["batch1_ms"] > 0
    assert "8-bit" in results["int8"]["plan"] and results["int8"]["images_per_s_b8"] > 0  # the CPU's int8 path
    assert results["reference"]["attn"] == "eager" and "fp16" in results["reference"]["plan"]
    assert "bf16 batch-1 latency <= 15 ms" in proc.stdout
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "nonsense"], check=False, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown check" in bad.stderr
