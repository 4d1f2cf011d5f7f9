"""``pneumoview calibrate``: score a labelled data set (training's discovery) and choose an operating point.

The options and everything after scoring live in :mod:`pneumoview.commands.calibrate` (the app
side, which never imports ``training``); this module adds what only ``training`` knows: finding the
labelled images (:func:`training.data.discover`, the training data format).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

from pneumoview.commands.calibrate import ScoredData, check_outputs, finish
from pneumoview.commands.calibrate import configure as _configure
from pneumoview.errors import TrainingDataError
from training.data import CLASS_NAMES, FILE_ERRORS, discover


def configure(parser: argparse.ArgumentParser) -> None:
    _configure(parser)


def score_data(source: Path, engine, *, batch_size: int = 8, quiet: bool = True) -> ScoredData:  # engine: InferenceEngine
    """Every labelled image of ``source`` through the engine's own preprocessing and model.

    Files that cannot be read or cropped are skipped and counted (their reasons go to stderr
    unless ``quiet``). The summary holds counts, the folder's name and a hash of the file list.
    """
    samples, problems = discover(source)
    crops, positive, used = [], [], []
    skipped = 0
    for sample in samples:
        try:
            crops.append(engine.prepare(sample.path).crop)
        except FILE_ERRORS as exc:
            skipped += 1
            if not quiet:
                print(f"pneumoview calibrate: skipped {sample.path.name}: {exc.reason}", file=sys.stderr)
            continue
        positive.append(sample.label == CLASS_NAMES.index("pneumoconiosis"))
        used.append(sample)
    if not crops:
        raise TrainingDataError("no image of the data set could be read", path=source)
    scores = np.concatenate([engine.probabilities(np.stack(crops[i:i + batch_size]))
                             for i in range(0, len(crops), batch_size)])
    root = source if source.is_dir() else source.parent
    listing = hashlib.sha256()
    for sample in sorted(used, key=lambda s: str(s.path)):
        rel = sample.path.resolve().relative_to(root.resolve()) if sample.path.resolve().is_relative_to(root.resolve()) \
            else Path(sample.path.name)
        listing.update(f"{rel.as_posix()}\t{sample.label}\n".encode())
    pos = np.asarray(positive, dtype=bool)
    summary = {
        "source_name": source.name, "n": int(pos.size), "n_positive": int(pos.sum()),
        "n_negative": int((~pos).sum()), "n_patients": len({s.patient_id for s in used}),
        "skipped_unreadable": skipped, "unlabelled": len(problems), "file_list_sha256": listing.hexdigest(),
    }
    return ScoredData(np.asarray(scores, dtype=np.float64), pos, summary, groups=[s.patient_id for s in used])


def run(args: argparse.Namespace) -> int:
    from pneumoview.commands.analyze import load_engine

    check_outputs(args)
    engine = load_engine(args)
    data = score_data(args.data, engine, batch_size=max(1, args.batch_size), quiet=args.quiet)
    finish(args, data, engine.manifest, demo=engine.demo)
    return 0
