"""Smoke tests of the training benchmark scripts (tiny, CPU): they run and report their figures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


@pytest.mark.slow
def test_gpu_train_check_runs_tiny_on_cpu() -> None:
    import torch

    from benchmarks.gpu_train_check import measure_training

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gc_on = measure_training(
            device="cpu",
            tiny=True,
            gradient_checkpointing=True,
            decoder_4bit=False,
            images=8,
            batch=4,
            grad_accum=1,
            epochs=2,
        )
        nf4 = measure_training(device="cpu", tiny=True, gradient_checkpointing=True, decoder_4bit=True, images=8)
    finally:
        torch.set_num_threads(threads)
    assert gc_on["images"] == 8 and len(gc_on["all_epochs_s"]) == 2 and gc_on["epoch_s"] > 0
    assert gc_on["peak_rss_gb"] > 0 and gc_on["final_train_loss"] > 0
    assert "skipped" in nf4
