"""Data-parallel training on 2 CPU processes (gloo) matches one process.

``torchrun --nproc_per_node 2 -m training`` (as ``accelerate launch --multi_gpu --num_processes 2``)
starts two processes; ``accelerate launch --cpu --num_processes 2`` would start only one, which is
why the documented CPU command is torchrun's. Two processes with ``--batch-size 4`` each see, per
step, the same 8 images as one process with ``--batch-size 8``; gradients are averaged over the
processes, so the validation results agree up to float summation order.

Stated tolerance: per fold, validation loss within 2e-3 and AUC / accuracy within 0.05 (measured:
loss differences ~5e-5, AUC and accuracy identical). Per-epoch training loss is not compared: each
process records the mean over its own share of the batches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from training_support import tiny_training_argv

from training.synthetic import make_synthetic_dataset, small_config_file

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list[str], env: dict[str, str], timeout: int = 400) -> list[dict]:
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_two_gloo_processes_train_like_one(tmp_path: Path) -> None:
    csv = make_synthetic_dataset(tmp_path / "syn", n_patients=16, images_per_patient=1, seed=1)
    cfg = small_config_file(tmp_path / "tiny64.json")
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PNEUMOVIEW_HOME": str(tmp_path / "home"), "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    common = tiny_training_argv(
        csv,
        cfg,
        "--lr",
        "2e-3",
        "--warmup-epochs",
        "0",
        "--device",
        "cpu",
        "--no-register",
        "--compare",
        "none",
        "--json-progress",
        "--cache-dir",
        str(tmp_path / "cache"),
        epochs=2,
    )
    two = _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "-m",
            "training",
            *common,
            "--batch-size",
            "4",
            "--out",
            str(tmp_path / "two"),
        ],
        env,
    )
    one = _run([sys.executable, "-m", "training", *common, "--batch-size", "8", "--out", str(tmp_path / "one")], env)
    start_two = [e for e in two if e["event"] == "start"]
    assert len(start_two) == 1 and start_two[0]["world_size"] == 2  # two processes, one reporter (rank 0)
    assert next(e for e in one if e["event"] == "start")["world_size"] == 1
    card_two = json.loads((tmp_path / "two" / "model_card.json").read_text())
    card_one = json.loads((tmp_path / "one" / "model_card.json").read_text())
    assert card_two["world_size"] == 2 and card_one["world_size"] == 1
    assert card_two["split"] == card_one["split"]
    for f2, f1 in zip(card_two["folds"], card_one["folds"], strict=True):
        assert f2["history"][-1]["val_loss"] == pytest.approx(f1["history"][-1]["val_loss"], abs=2e-3)
        for metric in ("auc", "accuracy"):
            assert f2["metrics"][metric] == pytest.approx(f1["metrics"][metric], abs=0.05)
        assert len(f2["val_scores"]) == len(f1["val_scores"])  # every validation image once (gather_for_metrics)
