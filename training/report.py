"""The model card of a training run (JSON + PNG figures) and the new bundle that carries it.

A bundle made by training holds, beside ``manifest.json`` and ``weights.safetensors``:

* ``model_card.json``: data summary (counts, file-list hash, problems), the training config,
  the split (seed + validation patients per fold), per-fold metrics and their mean +/- sd,
  per-epoch history, the comparison with the previously active model on the same folds,
  library versions, base-weight fingerprints, device and precision;
* ``roc.png`` (one ROC curve per fold), ``confusion.png`` (pooled over the folds, argmax),
  ``curves.png`` (training loss and validation AUC per epoch).

The manifest's ``training`` section repeats the headline numbers (``metrics``: mean of each metric,
plus ``<metric>_sd``) so the registry can list and compare models without reading the card.

Bundles travel between clinics, so neither file holds a path, a name or a raw patient ID: the data
summary is :meth:`training.datacheck.DataSummary.public_dict` (counts, reason codes, keyed patient
hashes), the split lists keyed hashes (:mod:`training.privacy`), base weights are named by file
name and fingerprint only. Figures carry no text but metrics. Missing or non-finite metrics (a
degenerate fold) are drawn as "n/a", never a crash.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pneumoview.atomic import atomic_dir, clean_stale
from pneumoview.errors import BundleError, storage_error
from training.metrics import METRIC_NAMES, roc_curve

if TYPE_CHECKING:
    from pneumoview.inference.config import PneumoLLMConfig
    from training.loop import RunResult

MODEL_CARD_FILE = "model_card.json"
FIGURES = ("roc.png", "confusion.png", "curves.png")


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in (
        "pneumoview",
        "torch",
        "accelerate",
        "transformers",
        "open_clip_torch",
        "numpy",
        "safetensors",
        "pydicom",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def _finite(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def headline_metrics(summary: Mapping[str, Mapping[str, float]]) -> dict[str, float | None]:
    """``{"auc": mean, "auc_sd": sd, ...}`` for the manifest (what the registry compares)."""
    out: dict[str, float | None] = {}
    for name in METRIC_NAMES:
        if name in summary:
            out[name] = _finite(summary[name]["mean"])
            out[f"{name}_sd"] = _finite(summary[name]["sd"])
    return out


def build_model_card(
    result: RunResult,
    *,
    data_summary: Mapping[str, Any],
    base: Mapping[str, Any],
    fingerprints: Mapping[str, str],
    architecture: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """JSON-able model card of a :class:`training.loop.RunResult`."""
    return {
        "kind": "pneumoview-training-run",
        "architecture": architecture,
        "data": dict(data_summary),
        "config": result.config.to_dict(),
        "split": result.split,
        "folds": [
            {
                "fold": r.fold,
                "best_epoch": r.best_epoch,
                "metrics": r.metrics,
                "history": r.history,
                "val_patients": r.val_patients,
                "val_scores": r.val_scores,
                "val_labels": r.val_labels,
                "seconds": r.seconds,
            }
            for r in result.folds
        ],
        "summary": result.summary,
        "final_model": None
        if result.final is None
        else {"epochs": result.final.best_epoch, "history": result.final.history},
        "weights_from": result.trainable_source,
        "comparison_with_active": result.comparison,
        "base_weights": dict(base),
        "base_fingerprints": dict(fingerprints),
        "device": result.device,
        "mixed_precision": result.mixed_precision,
        "base_dtype": result.base_dtype,
        "seconds": result.seconds,
        "library_versions": library_versions(),
        "platform": {"system": platform.system(), "machine": platform.machine()},
        "world_size": getattr(result, "world_size", 1),
        "figures": list(FIGURES),
        **(dict(extra) if extra else {}),
    }


def save_figures(card: Mapping[str, Any], directory: Path) -> list[Path]:
    """ROC curves, pooled confusion matrix and training curves as PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    written = []
    for name, draw in (("roc.png", _draw_roc), ("confusion.png", _draw_confusion), ("curves.png", _draw_curves)):
        fig = draw(Figure, card)
        fig.tight_layout()
        written.append(directory / name)
        fig.savefig(written[-1])
    return written


def _scored_folds(card: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [f for f in card["folds"] if f.get("metrics")]


def _draw_roc(figure: Any, card: Mapping[str, Any]) -> Any:
    fig = figure(figsize=(5, 5), dpi=100)
    ax = fig.add_subplot()
    for f in _scored_folds(card):
        scores = np.asarray([np.nan if v is None else v for v in f.get("val_scores") or []], dtype=float)
        pos = np.asarray(f.get("val_labels") or [], dtype=int) == 0
        if scores.size == 0 or scores.size != pos.size or not np.isfinite(scores).all() or pos.all() or not pos.any():
            continue  # no curve can be drawn for this fold
        fpr, tpr, _ = roc_curve(scores, pos)
        ax.plot(fpr, tpr, label=f"fold {f['fold'] + 1} (AUC {_pct(f['metrics'].get('auc'))})")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    auc = (card.get("summary") or {}).get("auc") or {}
    ax.set_title(f"ROC, pneumoconiosis vs normal (AUC {_pct(auc.get('mean'))} +/- {_pct(auc.get('sd'))})", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    return fig


def _draw_confusion(figure: Any, card: Mapping[str, Any]) -> Any:
    folds = _scored_folds(card)
    tp, fn, fp, tn = (sum(int(f["metrics"].get(k) or 0) for f in folds) for k in ("tp", "fn", "fp", "tn"))
    matrix = np.array([[tp, fn], [fp, tn]])
    fig = figure(figsize=(4, 3.6), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="black" if v < matrix.max() * 0.6 else "white")
    ax.set_xticks([0, 1], ["pneumoconiosis", "normal"])
    ax.set_yticks([0, 1], ["pneumoconiosis", "normal"])
    ax.set_xlabel("predicted (argmax)")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix, validation folds pooled", fontsize=9)
    return fig


def _draw_curves(figure: Any, card: Mapping[str, Any]) -> Any:
    fig = figure(figsize=(7, 3.2), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    for f in card["folds"]:
        epochs = [h["epoch"] for h in f["history"]]
        ax1.plot(epochs, [_num(h.get("train_loss")) for h in f["history"]], label=f"fold {f['fold'] + 1}")
        if f.get("metrics"):
            ax2.plot(epochs, [_num(h.get("auc")) for h in f["history"]], label=f"fold {f['fold'] + 1}")
    ax1.set_title("training loss", fontsize=9)
    ax1.set_xlabel("epoch")
    ax2.set_title("validation AUC", fontsize=9)
    ax2.set_xlabel("epoch")
    ax2.set_ylim(0, 1)
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=7)
    return fig


def _num(value: Any) -> float:
    """A plottable float: None and non-numbers become NaN (a gap in the line)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _pct(value: Any) -> str:
    """``12.3`` for 0.123; ``n/a`` for None or a non-finite value."""
    number = _num(value)
    return f"{100 * number:.1f}" if np.isfinite(number) else "n/a"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item())
    return value


def write_bundle(
    out_dir: str | os.PathLike[str],
    *,
    result: RunResult,
    config: PneumoLLMConfig,
    fingerprints: Mapping[str, str],
    card: Mapping[str, Any],
    demo: bool,
    name: str = "",
) -> Path:
    """A NEW bundle at ``out_dir`` (refuses an existing path): tensors + manifest + model card + figures.

    Written in a hidden sibling folder and renamed into place, so it appears complete or not at all.
    """
    from pneumoview.inference.bundle import Manifest, save_bundle

    target = Path(out_dir)
    if target.exists():
        raise BundleError("output folder exists; a training run never overwrites a bundle", path=target)
    if target.parent.is_dir():
        clean_stale(target.parent)  # half-built folders of killed runs
    card = _jsonable(dict(card))
    training = {
        "metrics": headline_metrics(result.summary),
        "cv": {
            "folds": result.config.folds,
            "run_folds": len(result.folds),
            "epochs": result.config.epochs,
            "split_seed": result.split["seed"],
        },
        "data_file_list_sha256": card["data"].get("file_list_sha256"),
        "data_counts": {
            "images_per_class": card["data"].get("images_per_class"),
            "patients_per_class": card["data"].get("patients_per_class"),
        },
        "weights_from": result.trainable_source,
        "model_card": MODEL_CARD_FILE,
        "config": result.config.to_dict(),
        "split": result.split,
    }
    manifest = Manifest.create(
        config, base_fingerprints=fingerprints, training=_jsonable(training), name=name, demo=demo
    )
    from safetensors import SafetensorError

    try:
        with atomic_dir(target) as staging:  # build then rename: no partial output folder, ever
            save_bundle(staging.path, result.trainable, manifest, overwrite=True)  # into the empty staging folder
            card = {**card, "model_id": manifest.model_id}
            text = json.dumps(card, indent=1, ensure_ascii=False) + "\n"
            (staging.path / MODEL_CARD_FILE).write_text(text, encoding="utf-8")
            save_figures(card, staging.path)
    except (OSError, SafetensorError) as exc:
        raise storage_error(exc, target) from exc
    except BundleError as exc:  # save_bundle wraps write errors: still one clear line, disk full said so
        cause = exc.__cause__
        if isinstance(cause, (OSError, SafetensorError)):
            raise storage_error(cause, target) from exc
        raise
    return target


def read_model_card(bundle_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The bundle's ``model_card.json`` or None when it has none (e.g. an imported bundle)."""
    path = Path(bundle_dir) / MODEL_CARD_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"unreadable model card: {exc}", path=path) from exc
