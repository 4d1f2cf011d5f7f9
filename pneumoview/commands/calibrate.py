"""``pneumoview calibrate (DATA | --from-store [--database DB]) (--model BUNDLE | --demo)
(--target-sensitivity S | --target-specificity S) [--prevalence P] --json OUT [--plot OUT.png] [--save]``:
choose a site's operating point.

DATA is the training data format (a folder with ``normal/`` and ``pneumoconiosis/`` or a CSV
``path,label,patient_id``), read by :func:`pneumoview.labelled_data.discover` as training reads it.
:func:`score_data` runs every image through the engine's own preprocessing and model. ``--from-store``
instead takes the results database's final readings and the stored results of exactly this bundle,
one pair per study (:func:`pneumoview.reading.store_calibration.pairs_from_store`; no model is loaded,
only the bundle's manifest is read for its fingerprint). :func:`finish` does everything after scoring
(figures, JSON with the data summary naming the source, plot, saving the operating point bound to the
bundle fingerprint).

Exit status: 0 done, 2 with one line on stderr when it cannot run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pneumoview.errors import ExportError, PneumoViewError, TrainingDataError
from pneumoview.precision import Precision, Quantisation, choices

if TYPE_CHECKING:
    from pneumoview.calibration import Calibration
    from pneumoview.inference.engine import InferenceEngine
    from pneumoview.inference.manifest import Manifest
    from pneumoview.operating_points import OperatingPoint


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data", type=Path, nargs="?", help="folder with normal/ and pneumoconiosis/ sub-folders, or a CSV"
    )
    parser.add_argument(
        "--from-store",
        action="store_true",
        help="instead of DATA: the final ILO readings in the results database and this model's stored results "
        "(one pair per study)",
    )
    parser.add_argument(
        "--database", type=Path, metavar="DB", help="with --from-store: the results database (default: the app's)"
    )
    parser.add_argument(
        "--rule", type=Path, metavar="RULE.json", help="with --from-store: the final-determination rule (JSON)"
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="BUNDLE", help="model bundle folder or a registered model's id")
    which.add_argument("--demo", action="store_true", help="the demo model (random weights: figures mean nothing)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-sensitivity", type=float, metavar="S", help="e.g. 0.90")
    target.add_argument("--target-specificity", type=float, metavar="S", help="e.g. 0.80")
    parser.add_argument(
        "--prevalence",
        type=float,
        metavar="P",
        help="expected prevalence among screened workers (default: the data's own)",
    )
    parser.add_argument("--json", required=True, type=Path, metavar="OUT", help="figures and the full table")
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="ROC plot with the chosen point")
    parser.add_argument(
        "--save", action="store_true", help="save the threshold as this bundle's current operating point (audited)"
    )
    parser.add_argument("--who", default="", help="name recorded with a saved operating point (default: settings)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap replicates for the AUC CI")
    parser.add_argument("--seed", type=int, default=20240229, help="bootstrap seed")
    parser.add_argument("--clip", type=Path, help="CLIP ViT-L/14 weights file (default: from settings)")
    parser.add_argument("--llama", type=Path, help="LLaMA-7B weights folder (default: from settings)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu", "mps"), help="default: from settings (auto)")
    parser.add_argument("--precision", choices=choices(Precision), help="default: from settings")
    parser.add_argument("--quantisation", choices=choices(Quantisation), help="default: from settings")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--allow-unverified-clip", action="store_true")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def check_source(args: argparse.Namespace) -> None:
    """Exactly one source: DATA or ``--from-store`` (``--database`` / ``--rule`` only with the latter)."""
    from pneumoview.errors import ConfigError

    if (args.data is None) == (not args.from_store):
        raise ConfigError("give either DATA (a labelled folder or CSV) or --from-store, not both or neither")
    if not args.from_store and (args.database is not None or args.rule is not None):
        raise ConfigError("--database and --rule go with --from-store")
    if args.database is not None and not args.database.is_file():
        raise ConfigError("no such results database", path=args.database)


def check_outputs(args: argparse.Namespace) -> None:
    """Fail before any scoring when an output cannot be written."""
    for out in (args.json, args.plot):
        if out is not None and not out.resolve().parent.is_dir():
            raise ExportError("the output's folder does not exist", path=out.resolve().parent)


@dataclass
class ScoredData:
    """Scores of the usable images of a labelled data set, and what it was (no patient data)."""

    scores: np.ndarray  # P(pneumoconiosis), float64 [n]
    positive: np.ndarray  # bool [n], True = pneumoconiosis
    summary: dict[str, Any] = field(default_factory=dict)
    groups: list[str] | None = None  # patient IDs for the bootstrap (kept in memory, never written)


def finish(args: argparse.Namespace, data: ScoredData, manifest: Manifest, *, demo: bool) -> dict[str, Any]:
    """Figures -> JSON (and plot); with ``--save`` the operating point is stored and audited."""
    from pneumoview.calibration import calibrate, save_roc_plot

    result = calibrate(
        data.scores,
        data.positive,
        target_sensitivity=args.target_sensitivity,
        target_specificity=args.target_specificity,
        prevalence=args.prevalence,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        groups=data.groups if data.groups and len(set(data.groups)) < len(data.groups) else None,
    )
    out: dict[str, Any] = {
        **result.to_dict(),
        "bundle_fingerprint": manifest.weights_sha256,
        "bundle_id": manifest.model_id,
        "demo": bool(demo),
        "data_summary": data.summary,
        "operating_point_id": None,
        # the scores themselves (no identifiers), so the app's calibration dialog can re-choose
        "scores": [float(v) for v in data.scores],
        "positive": [bool(v) for v in data.positive],
    }
    if args.save:
        out["operating_point_id"] = save_point(args, result, manifest, data.summary).id
    try:
        from pneumoview.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
        if args.plot is not None:
            name = (manifest.name or manifest.model_id)[:60]
            save_roc_plot(result, args.plot, title=f"DEMO - not a diagnosis\n{name}" if demo else name)
    except OSError as exc:
        raise ExportError(f"cannot write the output: {exc.strerror or exc}", path=args.json) from exc
    if not args.quiet:
        c = result.chosen
        print(
            f"threshold {c.threshold:.4f}: sensitivity {c.sensitivity:.3f} "
            f"({c.sensitivity_ci[0]:.3f}-{c.sensitivity_ci[1]:.3f}), specificity {c.specificity:.3f} "
            f"({c.specificity_ci[0]:.3f}-{c.specificity_ci[1]:.3f}), AUC {result.auc:.3f} "
            f"({result.auc_ci[0]:.3f}-{result.auc_ci[1]:.3f}), n={result.n}",
            file=sys.stderr,
        )
    return out


def save_point(
    args: argparse.Namespace, result: Calibration, manifest: Manifest, summary: dict[str, Any]
) -> OperatingPoint:
    from pneumoview.operating_points import OperatingPoint, OperatingPointStore
    from pneumoview.settings import load_settings
    from pneumoview.store import ResultStore

    who = args.who or load_settings().reviewer_name
    point = OperatingPoint.new(
        bundle_fingerprint=manifest.weights_sha256,
        bundle_id=manifest.model_id,
        threshold=result.threshold,
        created_by=who,
        data_summary=summary,
        figures=result.figures(),
    )
    OperatingPointStore().save(point)
    with ResultStore() as store:
        store.audit(
            "operating-point-changed",
            actor=who,
            detail={
                "operating_point_id": point.id,
                "bundle_fingerprint": point.bundle_fingerprint,
                "bundle_id": point.bundle_id,
                "threshold": point.threshold,
                "kind": point.kind,
                "source": "pneumoview calibrate",
            },
        )
    return point


def score_data(source: Path, engine: InferenceEngine, *, batch_size: int = 8, quiet: bool = True) -> ScoredData:
    """Every labelled image of ``source`` through the engine's own preprocessing and model.

    Files that cannot be read or cropped are skipped and counted (their reasons go to stderr
    unless ``quiet``). The summary holds counts, the folder's name and a hash of the file list.
    """
    from pneumoview.labelled_data import CLASS_NAMES, discover

    samples, problems = discover(source)
    crops, positive, used = [], [], []
    skipped = 0
    for sample in samples:
        try:
            crops.append(engine.prepare(sample.path).crop)
        except PneumoViewError as exc:  # one unreadable file is counted, never the end of the run
            skipped += 1
            if not quiet:
                print(f"pneumoview calibrate: skipped {sample.path.name}: {exc.reason}", file=sys.stderr)
            continue
        positive.append(sample.label == CLASS_NAMES.index("pneumoconiosis"))
        used.append(sample)
    if not crops:
        raise TrainingDataError("no image of the data set could be read", path=source)
    scores = np.concatenate(
        [engine.probabilities(np.stack(crops[i : i + batch_size])) for i in range(0, len(crops), batch_size)]
    )
    root = source if source.is_dir() else source.parent
    listing = hashlib.sha256()
    for sample in sorted(used, key=lambda s: str(s.path)):
        rel = (
            sample.path.resolve().relative_to(root.resolve())
            if sample.path.resolve().is_relative_to(root.resolve())
            else Path(sample.path.name)
        )
        listing.update(f"{rel.as_posix()}\t{sample.label}\n".encode())
    pos = np.asarray(positive, dtype=bool)
    summary = {
        "source": "labelled-folder",
        "source_name": source.name,
        "n": int(pos.size),
        "n_positive": int(pos.sum()),
        "n_negative": int((~pos).sum()),
        "n_patients": len({s.patient_id for s in used}),
        "skipped_unreadable": skipped,
        "unlabelled": len(problems),
        "file_list_sha256": listing.hexdigest(),
    }
    return ScoredData(np.asarray(scores, dtype=np.float64), pos, summary, groups=[s.patient_id for s in used])


def store_data(args: argparse.Namespace, manifest: Manifest) -> ScoredData:
    """The pairs of ``--from-store`` for the bundle of ``manifest`` (:mod:`pneumoview.reading.store_calibration`)."""
    from pneumoview.reading.rules import load_final_rule
    from pneumoview.reading.store_calibration import pairs_from_store
    from pneumoview.store import ResultStore

    rule = load_final_rule(args.rule) if args.rule is not None else None
    with ResultStore(args.database) as store:
        pairs = pairs_from_store(store, str(manifest.weights_sha256 or ""), rule=rule)
    summary = {**pairs.summary, "source_name": args.database.name if args.database else "results database"}
    return ScoredData(pairs.scores, pairs.positive, summary, groups=pairs.groups)


def bundle_manifest(args: argparse.Namespace) -> tuple[Manifest, bool]:
    """(manifest, demo) of the bundle ``--model`` / ``--demo`` name, without loading any weights."""
    from pneumoview.commands.analyze import _resolve_model
    from pneumoview.inference.demo import ensure_demo_model
    from pneumoview.inference.manifest import read_manifest
    from pneumoview.settings import load_settings

    active = None if args.demo else _resolve_model(args, load_settings())
    if active is None or (active.demo and active.bundle is None):
        return read_manifest(ensure_demo_model().bundle), True
    assert active.bundle is not None
    return read_manifest(active.bundle), bool(active.demo)


def run(args: argparse.Namespace) -> int:
    from pneumoview.commands.analyze import load_engine
    from pneumoview.settings import load_settings

    check_source(args)
    check_outputs(args)
    if args.from_store:
        manifest, demo = bundle_manifest(args)
        finish(args, store_data(args, manifest), manifest, demo=demo)
        return 0
    engine = load_engine(args, load_settings())
    data = score_data(args.data, engine, batch_size=max(1, args.batch_size), quiet=args.quiet)
    finish(args, data, engine.manifest, demo=engine.demo)
    return 0
