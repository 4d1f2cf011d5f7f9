"""Command lines for the ``training`` CLI shared by the training tests."""

from __future__ import annotations

from pathlib import Path


def tiny_training_argv(csv: Path, cfg: Path, *extra: str, epochs: int = 1, final: bool = False) -> list[str]:
    """``training`` arguments for a quick run on a synthetic data set: random base weights, the tiny
    architecture ``cfg``, 2 folds, ``epochs`` epochs, one thread, no gradient accumulation, the final
    model trained only with ``final``; ``extra`` follows (a repeated option there wins)."""
    return [
        str(csv),
        "--random-base",
        "0",
        "--architecture",
        str(cfg),
        "--grad-accum",
        "1",
        "--folds",
        "2",
        "--epochs",
        str(epochs),
        "--final" if final else "--no-final",
        "--threads",
        "1",
        *extra,
    ]
