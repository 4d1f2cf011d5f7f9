"""``pneumoview analyze FOLDER... (--model BUNDLE | --demo) --csv OUT.csv``: headless screening.

Scans the folders (DICOM headers), decides which images the model may judge (frontal chest
CR/DX), preprocesses those (lung crop), predicts in batches with a progress bar on stderr and
writes one CSV row per file: analysed images with the probability of pneumoconiosis and the
label at the threshold, every other file with the reason it was not analysed. The CSV (UTF-8,
Python's csv module) is written atomically: it appears complete or not at all.

Exit status: 0 when every readable image was handled (unsuitable ones are reported, not
errors); 1 when some files could not be read or analysed (their reasons are in the CSV);
2 with a one-line reason when nothing could run (missing weights or bundle, unreadable
folder, no such file). Base weights, device and threshold default to the app's settings.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pneumoview.errors import ConfigError, ExportError, PneumoViewError
from pneumoview.precision import Precision, Quantisation, choices
from pneumoview.report import guard_formula

#: CSV columns, in order.
COLUMNS = (
    "path", "status", "reason_code", "reason",
    "probability", "label", "positive", "threshold", "model_id", "model_name", "demo",
    "patient_id", "patient_name", "study_date", "study_uid", "series_uid", "sop_instance_uid",
    "modality", "view_position", "body_part", "lung_box", "lung_fallback", "notes",
)
#: ``status`` values.
ANALYSED, NOT_ANALYSED, FAILED, UNREADABLE = "analysed", "not-analysed", "failed", "unreadable"
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="folders or files (recursive)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", metavar="BUNDLE", help="model bundle folder (or a registered model's id); "
                       "default: the active model")
    which.add_argument("--demo", action="store_true",
                       help="use the demo model (random weights: every result is marked 'DEMO - not a diagnosis')")
    parser.add_argument("--csv", required=True, type=Path, metavar="OUT.csv", help="report to write")
    parser.add_argument("--clip", type=Path, help="CLIP ViT-L/14 weights file (default: from settings)")
    parser.add_argument("--llama", type=Path, help="LLaMA-7B weights folder (default: from settings)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu", "mps"), help="default: from settings (auto)")
    parser.add_argument("--precision", choices=choices(Precision), help="default: from settings")
    parser.add_argument("--quantisation", choices=choices(Quantisation),
                        help="LLaMA linears in 8/4 bit: int8 / int4 on the CPU, int8 / nf4 on a GPU (bitsandbytes); "
                        "auto: only when memory is short; default: from settings")
    parser.add_argument("--threshold", type=float, help="probability at or above which the label is "
                        "pneumoconiosis (default: from settings, 0.5)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--include-pictures", action="store_true",
                        help="also analyse PNG/JPEG/TIFF files (no DICOM header: suitability is not checked)")
    parser.add_argument("--include-names", action="store_true", help="write patient names (off by default)")
    parser.add_argument("--allow-unverified-clip", action="store_true",
                        help="accept a CLIP TorchScript archive whose SHA-256 is not OpenAI's")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument("--distributed", action="store_true", help="split the files across the processes of "
                        "`accelerate launch` / `torchrun`; rank 0 writes the one CSV (pneumoview/commands/distributed.py)")


def _check_inputs(folders: Iterable[Path], csv_path: Path) -> None:
    for folder in folders:
        if not folder.exists():
            raise PneumoViewError("no such file or folder", path=folder)
        if folder.is_dir() and not os.access(folder, os.R_OK | os.X_OK):
            raise PneumoViewError("folder is not readable (permission denied)", path=folder)
        if folder.is_file() and not os.access(folder, os.R_OK):
            raise PneumoViewError("file is not readable (permission denied)", path=folder)
    parent = csv_path.resolve().parent
    if not parent.is_dir():
        raise ExportError("the CSV's folder does not exist", path=parent)
    if not os.access(parent, os.W_OK):
        raise ExportError("cannot write in the CSV's folder (permission denied)", path=parent)


def _resolve_model(args: argparse.Namespace, settings: Any) -> Path:
    if args.model:
        candidate = Path(args.model)
        if candidate.is_dir():
            return candidate
        from pneumoview.registry import ModelRegistry

        try:
            return ModelRegistry().get(str(args.model)).path
        except PneumoViewError as exc:
            raise PneumoViewError(f"no model bundle {args.model!r} (not a folder, not a registered id)") from exc
    if settings.active_bundle:
        return Path(settings.active_bundle)
    from pneumoview.registry import ModelRegistry

    active = ModelRegistry().active()
    if active is None:
        raise ConfigError("no model chosen: pass --model BUNDLE, or --demo to try the demo model")
    return active.path


def load_engine(args: argparse.Namespace):  # -> InferenceEngine
    """The engine the arguments (and settings) ask for; PneumoViewError with the reason otherwise."""
    from pneumoview.settings import load_settings

    settings = load_settings()
    device = args.device or settings.device or "auto"
    from pneumoview.commands.distributed import device_for_rank

    device = device_for_rank(args, device)  # one GPU per process under accelerate launch / torchrun
    precision = args.precision or settings.precision or "auto"
    quantisation = args.quantisation or settings.quantisation or "auto"
    from pneumoview.inference.engine import InferenceEngine

    if args.demo:
        return InferenceEngine.demo(device=device, precision=precision,
                                    quantisation="none" if quantisation == "auto" else quantisation)
    bundle = _resolve_model(args, settings)
    clip = args.clip or (Path(settings.clip_path) if settings.clip_path else None)
    llama = args.llama or (Path(settings.llama_path) if settings.llama_path else None)
    def say(message: str) -> None:
        if not args.quiet:
            print(f"pneumoview analyze: {message}", file=sys.stderr, flush=True)

    return InferenceEngine.load(bundle, clip_path=clip, llama_path=llama, device=device, precision=precision,
                                quantisation=quantisation, batch_size=args.batch_size,
                                allow_unverified_clip=args.allow_unverified_clip, progress=say)


def _record_values(record: Any, include_names: bool) -> dict[str, Any]:
    return {
        "path": str(record.path),
        "patient_id": record.patient_id,
        "patient_name": record.patient_name if include_names else "",
        "study_date": record.study_date,
        "study_uid": record.study_uid,
        "series_uid": record.series_uid,
        "sop_instance_uid": record.sop_instance_uid,
        "modality": record.modality,
        "view_position": record.view_position,
        "body_part": record.body_part,
    }


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """All rows, UTF-8 with BOM (Excel), header first, atomically (temporary file + os.replace)."""
    from pneumoview.atomic import atomic_open

    try:
        with atomic_open(path, "w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="raise")
            writer.writeheader()
            for row in rows:
                writer.writerow({c: _cell(row.get(c, "")) for c in COLUMNS})
    except OSError as exc:
        raise ExportError(f"cannot write the CSV: {exc.strerror or exc}", path=path) from exc


def _kebab(name: str) -> str:
    """``PixelDecodeError`` -> ``pixel-decode-error`` (reason codes are kebab-case)."""
    import re

    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, str):
        return guard_formula(value)  # header text such as a patient name must never run as a formula
    return value


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pneumoview.dicom.scan import PROBLEM_UNREADABLE, scan
    from pneumoview.dicom.suitability import assess

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    _check_inputs(args.folders, args.csv)
    engine = load_engine(args)
    threshold = args.threshold
    if threshold is None:
        from pneumoview.settings import load_settings

        threshold = load_settings().threshold
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be within [0, 1], not {threshold}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings on odd-but-readable headers
        result = scan(args.folders)

    rows: list[dict[str, Any]] = []
    todo: list[tuple[dict[str, Any], Path]] = []  # (row, file) to preprocess and predict
    for record in result.images:
        row = _record_values(record, args.include_names)
        verdict = assess(record)
        rows.append(row)
        if verdict.diagnosable:
            row["notes"] = "; ".join(verdict.cautions)
            todo.append((row, record.path))
        else:
            row.update(status=NOT_ANALYSED, reason_code=verdict.code or "", reason=verdict.reason)
    for problem in result.problems:
        row = {"path": str(problem.path)}
        rows.append(row)
        if args.include_pictures and problem.path.suffix.lower() in PICTURE_SUFFIXES:
            row["notes"] = "not DICOM: suitability not checked"
            todo.append((row, problem.path))
        else:
            status = UNREADABLE if problem.code == PROBLEM_UNREADABLE else NOT_ANALYSED
            row.update(status=status, reason_code=problem.code, reason=problem.reason)

    from pneumoview.commands import distributed

    if not distributed.requested(args):
        _analyse(engine, todo, threshold, args.batch_size, tqdm, quiet=args.quiet)
    elif not distributed.analyse(engine, todo, threshold, args.batch_size, tqdm, quiet=args.quiet,
                                 analyse_share=_analyse):
        return 0  # rank 0 writes the CSV and reports
    rows.sort(key=lambda r: r["path"])
    write_csv(args.csv, rows)

    counts = {s: sum(r.get("status") == s for r in rows) for s in (ANALYSED, NOT_ANALYSED, FAILED, UNREADABLE)}
    demo = f" [{engine.model_name}: DEMO - not a diagnosis]" if engine.demo else ""
    print(f"analysed {counts[ANALYSED]} image(s), {counts[NOT_ANALYSED]} not analysed, {counts[FAILED]} failed, "
          f"{counts[UNREADABLE]} unreadable -> {args.csv}{demo}", file=sys.stderr)
    return 1 if counts[FAILED] or counts[UNREADABLE] else 0


def _analyse(engine: Any, todo: list[tuple[dict[str, Any], Path]], threshold: float, batch_size: int, tqdm: Any,
             *, quiet: bool) -> None:
    """Preprocess (the bundle's own crop settings) and predict ``todo`` in batches; per-file failures go in the row."""
    batch: list[tuple[dict[str, Any], Any]] = []

    def flush() -> None:
        if not batch:
            return
        predictions = engine.predict([model_input.crop for _, model_input in batch], threshold=threshold,
                                     batch_size=len(batch))
        for (row, model_input), pred in zip(batch, predictions):
            box = model_input.box
            notes = [n for n in (row.get("notes", ""), *model_input.notes) if n]
            row.update(status=ANALYSED, probability=pred.probability, label=pred.label, positive=pred.positive,
                       threshold=pred.threshold, model_id=pred.model_id, model_name=pred.model_name,
                       demo=pred.demo, lung_box=f"{box.x0} {box.y0} {box.x1} {box.y1}",
                       lung_fallback=box.fallback, notes="; ".join(notes))
            bar.update(1)
        batch.clear()

    with tqdm(total=len(todo), desc="analysing", unit="image", file=sys.stderr, disable=quiet) as bar:
        for row, path in todo:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model_input = engine.prepare(path)
            except PneumoViewError as exc:
                code = getattr(exc, "code", None) or _kebab(type(exc).__name__)
                row.update(status=FAILED, reason_code=code, reason=exc.reason)
                bar.update(1)
                continue
            batch.append((row, model_input))
            if len(batch) >= batch_size:
                flush()
        flush()


if __name__ == "__main__":  # `accelerate launch -m pneumoview.commands.analyze ...`
    from pneumoview.cli import main

    sys.exit(main(["analyze", *sys.argv[1:]]))
