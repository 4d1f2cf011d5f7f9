"""``pneumoview analyze FOLDER... (--model BUNDLE | --demo) --csv OUT.csv``: headless screening.

Scans the folders (DICOM headers), decides which images the model may judge (frontal chest
CR/DX), preprocesses those (lung crop), predicts in batches with a progress bar on stderr and
writes one CSV row per file in the app's report schema (:data:`pneumoview.report.COLUMNS`):
analysed images with the probability of pneumoconiosis and the label at the threshold, every
other file with the reason it was not analysed. A per-file problem is a row, never an abort.
The CSV is written atomically: it appears complete or not at all.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pneumoview.errors import ConfigError, PneumoViewError
from pneumoview.labels import DEMO_MARK
from pneumoview.precision import Precision, Quantisation, choices
from pneumoview.report import ExportOptions, ReportRow, check_target, export_csv, header_text
from pneumoview.results import (
    ANALYSED,
    FAILED,
    NOT_ANALYSED,
    UNREADABLE,
    ImageIdentity,
    ImageResult,
    failed,
    identify,
)

if TYPE_CHECKING:
    from pneumoview.active_model import ActiveModel
    from pneumoview.dicom.quality import QualityThresholds
    from pneumoview.dicom.scan import ImageRecord
    from pneumoview.inference.engine import InferenceEngine
    from pneumoview.preprocess import ModelInput
    from pneumoview.settings import Settings

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Exit status: every file analysed (or reported as not analysable) / some files could not be / could not start.
EXIT_OK, EXIT_SOME_NOT_ANALYSED, EXIT_CANNOT_START = 0, 1, 2

EPILOG = """\
exit status:
  0  every readable image was analysed (images the model may not judge, e.g. CT or lateral
     views, are reported with their reason and are not errors)
  1  some files could not be read or analysed (each has its status and reason in the CSV)
  2  could not start (bad argument, missing weights or bundle, unreadable folder, CSV not
     writable): one line on stderr, no CSV written

The CSV has the same columns as the app's export (see pneumoview/report.py, COLUMNS).
Every analysed image first passes the image-quality gate at the settings' "quality" thresholds
(as in the app): its codes are in quality_codes, and below_quality_gate=yes marks a result on an
image below the gate (it is still analysed and written, never dropped).
--pseudonymise applies the app's rules: keyed hashes of patient ID, study UID and accession
(the key is created once and kept in the settings), no names, paths, UIDs or comments."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="folders or files (recursive)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--model", metavar="BUNDLE", help="model bundle folder (or a registered model's id); default: the active model"
    )
    which.add_argument(
        "--demo", action="store_true", help=f"use the demo model (random weights: every result is marked '{DEMO_MARK}')"
    )
    parser.add_argument("--csv", required=True, type=Path, metavar="OUT.csv", help="report to write")
    parser.add_argument("--clip", type=Path, help="CLIP ViT-L/14 weights file (default: from settings)")
    parser.add_argument("--llama", type=Path, help="LLaMA-7B weights folder (default: from settings)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu", "mps"), help="default: from settings (auto)")
    parser.add_argument("--precision", choices=choices(Precision), help="default: from settings")
    parser.add_argument(
        "--quantisation",
        choices=choices(Quantisation),
        help="LLaMA linears in 8/4 bit: int8 / int4 on the CPU, int8 / nf4 on a GPU (bitsandbytes); "
        "auto: only when memory is short; default: from settings",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="probability at or above which the label is pneumoconiosis, within [0, 1] (default: from settings, 0.5)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument(
        "--include-pictures",
        action="store_true",
        help="also analyse PNG/JPEG/TIFF files (no DICOM header: suitability is not checked)",
    )
    parser.add_argument("--include-names", action="store_true", help="write patient names (off by default)")
    parser.add_argument(
        "--pseudonymise",
        action="store_true",
        help="replace identifiers by keyed hashes and leave out names, paths and comments",
    )
    parser.add_argument(
        "--allow-unverified-clip",
        action="store_true",
        help="accept a CLIP TorchScript archive whose SHA-256 is not OpenAI's",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.add_argument(
        "--dicom-out",
        type=Path,
        metavar="DIR",
        help="also write a DICOM SR (TID 1500) and a Secondary Capture of the lung crop per image",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="split the files across the processes of "
        "`accelerate launch` / `torchrun`; rank 0 writes the one CSV (pneumoview/commands/distributed.py)",
    )


# --------------------------------------------------------------------------- checks before any work
def validate(args: argparse.Namespace, settings: Settings) -> float:
    """Every cheap check, before a model loads; returns the threshold. Raises PneumoViewError (exit 2)."""
    threshold = settings.threshold if args.threshold is None else args.threshold
    if not isinstance(threshold, float | int) or not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be a number within [0, 1], not {threshold}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, not {args.batch_size}")
    for folder in args.folders:
        if not folder.exists():
            raise PneumoViewError("no such file or folder", path=folder)
        if folder.is_dir() and not os.access(folder, os.R_OK | os.X_OK):
            raise PneumoViewError("folder is not readable (permission denied)", path=folder)
        if folder.is_file() and not os.access(folder, os.R_OK):
            raise PneumoViewError("file is not readable (permission denied)", path=folder)
    check_target(args.csv)
    for path, what in ((args.clip, "--clip"), (args.llama, "--llama")):
        if path is not None and not args.demo and not path.exists():
            raise ConfigError(f"{what}: no such file or folder", path=path)
    return float(threshold)


def export_options(args: argparse.Namespace, settings: Settings) -> ExportOptions:
    key = None
    if args.pseudonymise:
        from pneumoview.settings import ensure_pseudonymise_key

        key = ensure_pseudonymise_key(settings)
    return ExportOptions(pseudonymise=args.pseudonymise, key=key, include_names=args.include_names)


# --------------------------------------------------------------------------- model
def _resolve_model(args: argparse.Namespace, settings: Settings) -> ActiveModel:
    """``--model`` (a folder or a registered id), else what the app would run next
    (:func:`pneumoview.active_model.resolve_active_model`: demo choice, settings, registry)."""
    from pneumoview.active_model import model_for_bundle, resolve_active_model

    if args.model:
        candidate = Path(args.model)
        if not candidate.is_dir():
            from pneumoview.registry import ModelRegistry

            try:
                candidate = ModelRegistry().get(str(args.model)).path
            except PneumoViewError as exc:
                raise PneumoViewError(f"no model bundle {args.model!r} (not a folder, not a registered id)") from exc
        return model_for_bundle(candidate, settings)
    active = resolve_active_model(settings)
    if active is None:
        raise ConfigError("no model chosen: pass --model BUNDLE, or --demo to try the demo model")
    return active


def load_engine(args: argparse.Namespace, settings: Settings) -> InferenceEngine:
    """The engine the arguments (and settings) ask for; PneumoViewError with the reason otherwise."""
    from pneumoview.commands.distributed import device_for_rank
    from pneumoview.inference.engine import InferenceEngine

    device = device_for_rank(args, args.device or settings.device or "auto")  # one GPU per launched process
    precision = args.precision or settings.precision or "auto"
    quantisation = args.quantisation or settings.quantisation or "auto"
    demo_quantisation = "none" if quantisation == "auto" else quantisation  # the tiny model needs no saving
    if args.demo:
        return InferenceEngine.load_demo(device=device, precision=precision, quantisation=demo_quantisation)
    active = _resolve_model(args, settings)
    if active.demo:  # the demo model chosen in the app, or a bundle trained on the demo base weights
        return InferenceEngine.load_demo(
            bundle=active.bundle, device=device, precision=precision, quantisation=demo_quantisation
        )
    assert active.bundle is not None
    clip = args.clip or (Path(active.clip_path) if active.clip_path else None)
    llama = args.llama or (Path(active.llama_path) if active.llama_path else None)

    def say(message: str) -> None:
        if not args.quiet:
            print(f"pneumoview analyze: {message}", file=sys.stderr, flush=True)

    return InferenceEngine.load(
        active.bundle,
        clip_path=clip,
        llama_path=llama,
        device=device,
        precision=precision,
        quantisation=quantisation,
        batch_size=args.batch_size,
        allow_unverified_clip=args.allow_unverified_clip,
        progress=say,
    )


# --------------------------------------------------------------------------- rows
@dataclass
class _File:
    """One file found: its header record (None for a non-DICOM file), identity and outcome."""

    path: Path
    record: ImageRecord | None = None
    identity: ImageIdentity | None = None
    result: ImageResult | None = None
    status: str = ""  # without a result (nothing to identify): unreadable / not-analysed
    reason_code: str = ""
    reason: str = ""
    notes: tuple[str, ...] = ()


def _row(item: _File, duplicates: Sequence[str]) -> ReportRow:
    return ReportRow(
        path=os.fspath(item.path),
        result=item.result,
        status=item.status,
        reason_code=item.reason_code,
        reason=item.reason,
        **header_text(item.record),
        sop_instance_uid=str(item.record.sop_instance_uid or "") if item.record is not None else "",
        content_sha256=item.identity.content_sha256 if item.identity else "",
        duplicates=tuple(duplicates),
        notes=item.notes,
    )


def _duplicates(files: Sequence[_File]) -> dict[int, list[str]]:
    """For each file (by index): the other files of this run with the same SOP Instance UID."""
    by_uid: dict[str, list[int]] = {}
    for i, item in enumerate(files):
        if item.record is not None and item.record.sop_instance_uid:
            by_uid.setdefault(item.record.sop_instance_uid, []).append(i)
    return {
        i: [os.fspath(files[j].path) for j in group if j != i]
        for group in by_uid.values()
        if len(group) > 1
        for i in group
    }


def _status(item: _File) -> str:
    return item.result.status if item.result is not None else item.status


def _identify(item: _File, uid: str) -> bool:
    try:
        item.identity = identify(item.path, uid)
    except OSError as exc:
        item.status, item.reason_code, item.reason = UNREADABLE, "unreadable", f"cannot read: {exc.strerror or exc}"
        return False
    return True


def collect(folders: Sequence[Path], include_pictures: bool) -> tuple[list[_File], list[_File]]:
    """Scan -> (every file, the files to analyse). Files the model may not judge get their result here."""
    from pneumoview.dicom.scan import PROBLEM_UNREADABLE, scan
    from pneumoview.dicom.suitability import assess

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings on odd-but-readable headers
        found = scan(list(folders))
    files: list[_File] = []
    todo: list[_File] = []
    for record in found.images:
        item = _File(Path(record.path), record=record)
        files.append(item)
        if not _identify(item, record.sop_instance_uid):
            continue
        assert item.identity is not None
        verdict = assess(record)
        if verdict.diagnosable:
            item.notes = tuple(verdict.cautions)
            todo.append(item)
        else:
            item.result = failed(item.identity, verdict.code or "unsupported", verdict.reason, status=NOT_ANALYSED)
    for problem in found.problems:
        item = _File(Path(problem.path))
        files.append(item)
        if include_pictures and item.path.suffix.lower() in PICTURE_SUFFIXES:
            if _identify(item, ""):
                item.notes = ("not DICOM: suitability not checked",)
                todo.append(item)
        else:
            item.status = UNREADABLE if problem.code == PROBLEM_UNREADABLE else NOT_ANALYSED
            item.reason_code, item.reason = problem.code, problem.reason
    return files, todo


def analyse(
    engine: InferenceEngine,
    todo: Sequence[_File],
    threshold: float,
    batch_size: int,
    progress: Callable[[int], None],
    *,
    dicom_out: Path | None = None,
    operating_point_id: str = "",
    quality: QualityThresholds | None = None,
) -> None:
    """Preprocess (the bundle's own crop settings), grade (the image-quality gate at ``quality``'s
    thresholds, default the settings' ``quality``, as in the app) and predict ``todo`` in batches;
    each gets its result, marked when its image is below the gate.

    With ``dicom_out``, each analysed image also gets its DICOM results (:mod:`pneumoview.pacs.export`);
    a source that cannot carry them (no DICOM identity) is noted in its row.
    """
    from pneumoview.service.analysis_worker import (
        PREPARE_ERRORS,
        engine_provenance,
        predict_results,
        prepare_failure,
        quality_thresholds,
    )

    provenance = engine_provenance(engine, threshold, operating_point_id=operating_point_id)
    gate = quality if quality is not None else quality_thresholds(None)
    batch: list[tuple[_File, ModelInput]] = []

    def flush() -> None:
        results = predict_results(engine, [(item.identity, mi) for item, mi in batch], provenance, gate)
        for (item, model_input), result in zip(batch, results, strict=True):
            item.result = result
            if dicom_out is not None and result.is_analysed:
                _write_dicom(item, model_input, dicom_out)
        progress(len(batch))
        batch.clear()

    for item in todo:
        assert item.identity is not None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model_input = engine.prepare(item.path)
        except PREPARE_ERRORS as exc:
            item.result = prepare_failure(item.identity, exc, provenance, bool(engine.demo))
            progress(1)
            continue
        batch.append((item, model_input))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()


def operating_point(args: argparse.Namespace, engine: InferenceEngine, threshold: float) -> tuple[float, str]:
    """(threshold, operating-point id): ``--threshold`` when given; else the operating point saved for
    exactly this bundle (:mod:`pneumoview.operating_points`, bound to its weights' SHA-256); else the
    settings' threshold, with no id (the demo model never has an operating point)."""
    if args.threshold is not None or engine.demo:
        return threshold, ""
    from pneumoview.operating_points import OperatingPointStore

    point = OperatingPointStore().threshold_for(str(engine.manifest.weights_sha256 or "")).point
    if point is None:
        return threshold, ""
    return float(point.threshold), point.id


def _write_dicom(item: _File, model_input: ModelInput, out_dir: Path) -> None:
    """SR + Secondary Capture for one analysed file; a reason it could not get them goes into its notes."""
    from pneumoview.pacs.export import write_model_result
    from pneumoview.pacs.sr import ModelResult

    assert item.result is not None
    _, problem = write_model_result(item.path, out_dir, ModelResult.of(item.result), crop=model_input.crop)
    if problem:
        item.notes = (*item.notes, problem)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pneumoview.settings import load_settings

    settings = load_settings()
    threshold = validate(args, settings)
    options = export_options(args, settings)
    engine = load_engine(args, settings)
    threshold, operating_point_id = operating_point(args, engine, threshold)
    files, todo = collect(args.folders, args.include_pictures)
    from pneumoview.commands import distributed

    with tqdm(total=len(todo), desc="analysing", unit="image", file=sys.stderr, disable=args.quiet) as bar:
        if not distributed.requested(args):
            analyse(
                engine,
                todo,
                threshold,
                args.batch_size,
                bar.update,
                dicom_out=args.dicom_out,
                operating_point_id=operating_point_id,
            )
        elif not distributed.analyse(
            engine,
            todo,
            threshold,
            args.batch_size,
            bar.update,
            analyse_share=analyse,
            dicom_out=args.dicom_out,
            operating_point_id=operating_point_id,
        ):
            return EXIT_OK  # rank 0 writes the CSV and reports
    duplicates = _duplicates(files)
    order = sorted(range(len(files)), key=lambda i: os.fsencode(files[i].path))
    export_csv(args.csv, [_row(files[i], duplicates.get(i, ())) for i in order], options)

    counts = {s: sum(_status(f) == s for f in files) for s in (ANALYSED, NOT_ANALYSED, FAILED, UNREADABLE)}
    demo = f" [{engine.model_name}: {DEMO_MARK}]" if engine.demo else ""
    print(
        f"analysed {counts[ANALYSED]} image(s), {counts[NOT_ANALYSED]} not analysed, {counts[FAILED]} failed, "
        f"{counts[UNREADABLE]} unreadable -> {args.csv}{demo}",
        file=sys.stderr,
    )
    return EXIT_SOME_NOT_ANALYSED if counts[FAILED] or counts[UNREADABLE] else EXIT_OK
