"""Model-card figures survive degenerate and non-finite metrics (a diverged or one-class fold)."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

from training.report import save_figures


def test_figures_are_drawn_from_nan_and_missing_metrics(tmp_path: Path) -> None:
    nan = math.nan
    card = {
        "folds": [
            {
                "fold": 0,
                "metrics": {"auc": None, "tp": 1, "fn": None, "fp": 0, "tn": 2},
                "val_scores": [nan, 0.5, None],
                "val_labels": [0, 1, 1],
                "history": [{"epoch": 1, "train_loss": nan, "auc": None}, {"epoch": 2, "train_loss": None}],
            },
            {
                "fold": 1,
                "metrics": {"auc": nan, "tp": 0, "fn": 0, "fp": 0, "tn": 0},
                "val_scores": [0.2, 0.9],
                "val_labels": [1, 1],
                "history": [],
            },
            {
                "fold": 2,
                "metrics": None,
                "val_scores": [],
                "val_labels": [],
                "history": [{"epoch": 1, "train_loss": 0.7}],
            },
        ],
        "summary": {"auc": {"mean": nan, "sd": None}},
    }
    written = save_figures(card, tmp_path)
    assert [p.name for p in written] == ["roc.png", "confusion.png", "curves.png"]
    for path in written:
        with Image.open(path) as image:
            assert image.size[0] > 100


def test_figures_of_a_card_without_any_metrics(tmp_path: Path) -> None:
    assert len(save_figures({"folds": [], "summary": {}}, tmp_path)) == 3
