"""``pneumoview train`` / ``python -m training``: retrain PneumoLLM's adapters, write a NEW bundle.

    pneumoview train DATA --base-clip ViT-L-14.pt --base-llama llama-7b/ --preset paper --out BUNDLE_DIR
    pneumoview train DATA --demo --preset quick --out /tmp/try            # tiny demo model, no weights
    accelerate launch --multi_gpu --num_processes 4 -m training DATA ... --out BUNDLE_DIR   # several GPUs
    torchrun --nproc_per_node 2 -m training DATA ... --device cpu --out BUNDLE_DIR       # 2 CPU processes

DATA is a folder with ``normal/`` and ``pneumoconiosis/`` sub-folders or a CSV (path,label,patient_id).
The data are checked first (summary printed; refusal for empty/too small classes). Progress goes
to the terminal as bars, or with ``--json-progress`` as one JSON object per line on stdout (the
in-app wizard reads these). SIGINT/SIGTERM cancel cleanly: the checkpoint of the last finished
epoch stays in the work folder and rerunning the same command resumes from it.

Every argument (recipe numbers, folders to write) is checked before any data is read or any model
loads; a file that cannot be read is listed and left out, never the end of the run; a disk or
folder problem is one line (``disk full: PATH`` / ``cannot write PATH: REASON``) and leaves no
partial bundle folder. A non-finite loss stops the run ("training diverged at epoch E step S;
last good checkpoint kept").

Exit codes: 0 done, 2 error (one line on stderr), 130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pneumoview.errors import CancelledError, ConfigError, PneumoViewError, storage_error
from pneumoview.precision import Precision, choices

if TYPE_CHECKING:
    from pneumoview.inference.config import PneumoLLMConfig
    from training.base import BaseModel, BaseSpec
    from training.datacheck import PreparedDataset
    from training.loop import RunResult, TrainConfig
    from training.privacy import PatientHasher

EXIT_CANCELLED = 130


def _precision_arg(text: str) -> str:
    """The one precision vocabulary (:class:`pneumoview.precision.Precision`); accelerate's "no" is fp32."""
    return Precision.parse("fp32" if text.strip().lower() == "no" else text).value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0] if __doc__ else None
    parser.add_argument("data", type=Path, help="folder with normal/ and pneumoconiosis/ sub-folders, or a CSV")
    _base_options(parser.add_argument_group("base weights (frozen)"))
    _recipe_options(parser.add_argument_group("recipe (defaults: the paper's)"))
    _hardware_options(parser.add_argument_group("device and precision"))
    _output_options(parser.add_argument_group("output"))
    _data_options(parser.add_argument_group("data"))
    parser.add_argument("--json-progress", action="store_true", help="one JSON object per line on stdout")
    parser.add_argument("--stop-after-epochs", type=int, default=None, help=argparse.SUPPRESS)


def _base_options(base: argparse._ArgumentGroup) -> None:
    base.add_argument("--base-clip", type=Path, help="CLIP ViT-L/14 weights (OpenAI .pt, open_clip .bin, .safetensors)")
    base.add_argument("--base-llama", type=Path, help="LLaMA-7B (Hugging Face folder or Meta consolidated folder)")
    base.add_argument(
        "--demo",
        action="store_true",
        help="tiny demo architecture with demo base weights (no downloads; NOT diagnostic)",
    )
    base.add_argument(
        "--random-base",
        type=int,
        metavar="SEED",
        default=None,
        help="random frozen backbones from SEED (tests, benchmarks)",
    )
    base.add_argument(
        "--architecture",
        default=None,
        help="architecture config (default: pneumollm-vitl14-llama7b, or pneumollm-tiny with --demo/--random-base)",
    )


def _recipe_options(rec: argparse._ArgumentGroup) -> None:
    rec.add_argument(
        "--preset",
        choices=("quick", "paper"),
        default="paper",
        help="quick: 3 epochs on 1 of 5 folds, no final model; paper: 100 epochs, 5 folds + final model",
    )
    rec.add_argument("--folds", type=int, default=None, help="k of the patient-level k-fold (default 5)")
    rec.add_argument("--run-folds", type=int, default=None, help="train only the first N folds")
    rec.add_argument("--epochs", type=int, default=None)
    rec.add_argument(
        "--final", dest="final_model", action="store_true", default=None, help="train a final model on all data"
    )
    rec.add_argument(
        "--no-final", dest="final_model", action="store_false", help="bundle = best model of the first fold"
    )
    rec.add_argument("--batch-size", type=int, default=None)
    rec.add_argument("--grad-accum", type=int, default=None)
    rec.add_argument("--lr", type=float, default=None)
    rec.add_argument("--weight-decay", type=float, default=None)
    rec.add_argument("--warmup-epochs", type=float, default=None)
    rec.add_argument("--seed", type=int, default=None)
    rec.add_argument("--split-seed", type=int, default=None)
    rec.add_argument(
        "--split-from",
        type=Path,
        default=None,
        metavar="BUNDLE",
        help="reuse the exact cross-validation split recorded in another bundle's manifest",
    )


def _hardware_options(hw: argparse._ArgumentGroup) -> None:
    hw.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    hw.add_argument(
        "--mixed-precision",
        type=_precision_arg,
        choices=choices(Precision),
        default=None,
        help="compute precision of the training step (fp32: none; 'no' and torch's names are accepted too)",
    )
    hw.add_argument(
        "--base-dtype",
        type=_precision_arg,
        choices=choices(Precision),
        default=None,
        help="dtype of the frozen backbones (auto: bf16 on a GPU, fp32 on the CPU)",
    )
    hw.add_argument("--gradient-checkpointing", action="store_true", default=None)
    hw.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def _output_options(out: argparse._ArgumentGroup) -> None:
    out.add_argument("--out", type=Path, help="new bundle folder (must not exist)")
    out.add_argument("--work-dir", type=Path, default=None, help="checkpoints for resuming (default: OUT.run)")
    out.add_argument("--restart", action="store_true", help="discard an earlier unfinished run in the work folder")
    out.add_argument("--keep-work-dir", action="store_true", help="keep checkpoints after success")
    out.add_argument(
        "--no-register", dest="register", action="store_false", help="do not add the bundle to the model registry"
    )
    out.add_argument("--activate", action="store_true", help="make the new bundle the active model")
    out.add_argument(
        "--compare",
        choices=("active", "none"),
        default="active",
        help="also evaluate the active model on the same folds (when it fits the same base weights)",
    )
    out.add_argument("--name", default="", help="display name of the new model")


def _data_options(data: argparse._ArgumentGroup) -> None:
    data.add_argument("--cache-dir", type=Path, default=None, help="crop cache (default: user cache folder)")
    data.add_argument("--include-flagged", action="store_true", help="keep images flagged as not a frontal chest")
    data.add_argument(
        "--allow-outside",
        action="store_true",
        help="accept CSV rows that point outside the CSV's folder (refused by default)",
    )
    data.add_argument(
        "--validate-only", action="store_true", help="check the data, print the summary and an estimate, stop"
    )


class _Progress:
    """Events -> JSON lines or tqdm bars."""

    def __init__(self, json_lines: bool) -> None:
        self.json_lines = json_lines
        self._bar: Any = None
        self._bar_key: Any = None
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        if os.environ.get("RANK", "0") != "0":  # several processes (accelerate launch / torchrun): main one reports
            return
        with self._lock:
            if self.json_lines:
                from pneumoview.service.training import encode_event

                sys.stdout.write(encode_event(event) + "\n")  # the wizard's typed protocol, checked here
                sys.stdout.flush()
                return
            self._human(event)

    def _human(self, event: dict[str, Any]) -> None:
        from tqdm import tqdm

        kind = event.get("event")
        if kind == "validate":
            self._bar_for(("validate",), event["total"], "checking data")
            self._bar.n = event["done"]
            self._bar.refresh()
        elif kind == "step":
            key = (event["fold"], event["epoch"])
            fold = "final" if event["fold"] < 0 else f"fold {event['fold'] + 1}"
            self._bar_for(key, event["batches"], f"{fold} epoch {event['epoch']}")
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{event['loss']:.4f}")
        elif kind == "epoch":
            self._close()
            val = f" val AUC {100 * event['auc']:.1f} AVG {100 * event['avg']:.1f}" if "auc" in event else ""
            tqdm.write(
                f"  epoch {event['epoch']}/{event['epochs']}: loss {event['train_loss'] or math.nan:.4f}{val} "
                f"({event['seconds']:.1f} s, ETA {event['eta_s'] / 60:.1f} min)"
            )
        elif kind in {"data_summary"}:
            self._close()
            print(event["text"], flush=True)
        elif kind == "estimate":
            e = event["estimate"]
            print(f"Estimate: ~{e['memory_gb']} GB memory, ~{e['seconds'] / 60:.1f} min ({e['notes']})", flush=True)
        elif kind in {"message", "fold_skipped", "resumed", "cancelled", "error"}:
            self._close()
            print(event.get("message") or json.dumps(event, default=_json_default), flush=True)
        elif kind == "fold_done":
            m = event.get("metrics") or {}
            if m:
                print(
                    f"fold {event['fold'] + 1}: best epoch {event['best_epoch']}, AUC {100 * m['auc']:.1f}, AVG {100 * m['avg']:.1f}",
                    flush=True,
                )
        elif kind == "done":
            self._close()
            print(event["text"], flush=True)

    def _bar_for(self, key: Any, total: int, desc: str) -> None:
        from tqdm import tqdm

        if self._bar_key != key:
            self._close()
            self._bar = tqdm(total=total, desc=desc, leave=False, file=sys.stderr)
            self._bar_key = key

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar, self._bar_key = None, None


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


class CancelFlag:
    """Set by SIGINT/SIGTERM (first signal: finish cleanly; a second SIGINT: stop at once)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.event.is_set()

    def _handler(self, signum: int, frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _train_config(args: argparse.Namespace) -> TrainConfig:
    from training.loop import TrainConfig

    return TrainConfig.from_preset(
        args.preset,
        folds=args.folds,
        run_folds=args.run_folds,
        epochs=args.epochs,
        final_model=args.final_model,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs,
        seed=args.seed,
        split_seed=args.split_seed,
        device=args.device,
        mixed_precision=args.mixed_precision,
        base_dtype=args.base_dtype,
        gradient_checkpointing=args.gradient_checkpointing,
    )


def _base_spec(args: argparse.Namespace) -> BaseSpec:
    from training.base import BaseSpec

    tiny = args.demo or (args.random_base is not None and args.base_clip is None)
    architecture = args.architecture or ("pneumollm-tiny" if tiny else "pneumollm-vitl14-llama7b")
    if not (args.demo or args.random_base is not None or (args.base_clip and args.base_llama)):
        raise ConfigError("base weights needed: --base-clip and --base-llama (or --demo, or --random-base SEED)")
    return BaseSpec(
        architecture=architecture,
        clip_path=args.base_clip,
        llama_path=args.base_llama,
        demo=args.demo,
        random_seed=args.random_base if not args.base_clip else None,
    )


def run(args: argparse.Namespace) -> int:
    progress = _Progress(args.json_progress)
    cancel = CancelFlag()
    cancel.install()
    from safetensors import SafetensorError

    try:
        try:
            return _run(args, progress, cancel)
        except (OSError, SafetensorError) as exc:  # a disk or folder problem at the edge: one clear line
            raise storage_error(exc) from exc
    except CancelledError as exc:
        progress({"event": "cancelled", "message": f"cancelled: {exc.reason}"})
        return EXIT_CANCELLED
    except PneumoViewError as exc:
        if args.json_progress:
            progress({"event": "error", "message": exc.message, "type": type(exc).__name__})
        raise
    finally:
        cancel.restore()


def check_arguments(args: argparse.Namespace) -> TrainConfig:
    """Every cheap check, before any data is read or any model loads; returns the ``TrainConfig``.

    Raises ``ConfigError`` for a bad number or option, ``StorageError`` for a folder that cannot be written.
    """
    from pneumoview.paths import check_writable_dir

    config = _train_config(args)
    _base_spec(args)
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, not {args.threads}")
    if not args.data.exists():
        raise ConfigError("the training data folder or CSV does not exist", path=args.data)
    if args.split_from is not None and not args.split_from.is_dir():
        raise ConfigError("--split-from needs a bundle folder", path=args.split_from)
    if not args.validate_only and args.out is None:
        raise ConfigError("--out BUNDLE_DIR is required (a new folder for the trained bundle)")
    if args.out is not None and args.out.exists():
        raise ConfigError("the output folder exists already: a training run never overwrites a bundle", path=args.out)
    from training.crops import default_cache_dir

    check_writable_dir(args.cache_dir or default_cache_dir())
    if not args.validate_only:
        check_writable_dir(args.out.parent)
        check_writable_dir(args.work_dir or args.out.parent)
        if args.register:
            from pneumoview.paths import registry_dir

            check_writable_dir(registry_dir())
    return config


def _uses_cpu(config: TrainConfig) -> bool:
    import torch

    return bool(config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()))


def _patient_hasher(config: TrainConfig) -> PatientHasher:
    """Keyed patient hashes; the key is created (once) by the main process before the others read it."""
    from accelerate import PartialState

    from training.privacy import load_patient_key, patient_hasher

    state = PartialState(cpu=_uses_cpu(config))
    with state.main_process_first():
        key = load_patient_key()
    return patient_hasher(key)


def _run(args: argparse.Namespace, progress: _Progress, cancel: CancelFlag) -> int:
    """Check the arguments, check the data, estimate, train, write and register the bundle."""
    import torch

    config = check_arguments(args)
    spec = _base_spec(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    hasher = _patient_hasher(config)
    dataset, public_summary, model_config = _check_data(args, config, spec, hasher, progress, cancel)
    device = _estimate(model_config, config, len(dataset), progress)
    from training.datacheck import require_ok

    require_ok(dataset.summary)
    if args.validate_only:
        return 0
    return _train_and_publish(args, config, spec, dataset, public_summary, device, hasher, progress, cancel)


def _check_data(
    args: argparse.Namespace,
    config: TrainConfig,
    spec: BaseSpec,
    hasher: PatientHasher,
    progress: _Progress,
    cancel: CancelFlag,
) -> tuple[PreparedDataset, dict[str, Any], PneumoLLMConfig]:
    """``(PreparedDataset, its public summary, architecture config)``; reports progress and the summary."""
    from pneumoview.inference.config import load_config
    from training.crops import CropCache, remove_stale_temp_files
    from training.datacheck import validate

    model_config = load_config(spec.architecture if not spec.demo else _demo_architecture(spec))
    pre = model_config.preprocessing
    cache = CropCache(args.cache_dir, size=pre.image_size, margin=pre.margin)
    remove_stale_temp_files(cache.directory)  # left by killed runs (hidden, at least an hour old)
    last = [0.0]

    def on_validate(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 0.2:
            last[0] = now
            progress({"event": "validate", "done": done, "total": total})

    dataset = validate(
        args.data,
        folds=config.folds,
        cache=cache,
        include_flagged=args.include_flagged,
        allow_outside=args.allow_outside,
        progress=on_validate,
        cancel=cancel,
    )
    public_summary = dataset.summary.public_dict(hasher)
    # ``text`` names problem files for the user at this machine; ``summary`` (and every file) holds no path or ID.
    progress({"event": "data_summary", "summary": public_summary, "text": dataset.summary.format_text()})
    return dataset, public_summary, model_config


def _estimate(model_config: PneumoLLMConfig, config: TrainConfig, n_images: int, progress: _Progress) -> str:
    """Report time/memory estimates for every usable device and the machine's memory; returns the device."""
    import torch

    from training.base import resolve_dtype
    from training.estimate import estimate_run

    device = "cuda" if (config.device in {"auto", "cuda"} and torch.cuda.is_available()) else "cpu"
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    estimates = {
        dev: estimate_run(
            model_config,
            n_images=max(n_images, 1),
            epochs=config.epochs,
            folds_run=config.run_folds or config.folds,
            of_folds=config.folds,
            final_model=config.final_model,
            device=dev,
            batch_size=config.batch_size,
            base_dtype_bytes=resolve_dtype(config.base_dtype, torch.device(dev)).itemsize,
            gradient_checkpointing=config.gradient_checkpointing,
        )
        for dev in devices
    }
    progress(
        {
            "event": "estimate",
            "estimate": estimates[device],
            "estimates": estimates,
            "machine_memory_gb": _machine_memory_gb(),
            "device": device,
            "cuda_available": torch.cuda.is_available(),
            "devices": devices,
        }
    )
    return device


def _train_and_publish(
    args: argparse.Namespace,
    config: TrainConfig,
    spec: BaseSpec,
    dataset: PreparedDataset,
    public_summary: dict[str, Any],
    device: str,
    hasher: PatientHasher,
    progress: _Progress,
    cancel: CancelFlag,
) -> int:
    import torch

    from training.base import build_base_model, resolve_dtype
    from training.loop import Trainer

    work_dir = args.work_dir or args.out.with_name(args.out.name + ".run")
    if args.restart and work_dir.exists():
        shutil.rmtree(work_dir)
    torch_device = torch.device(device)
    torch.manual_seed(config.seed)
    base = build_base_model(
        spec, device=torch_device, base_dtype=resolve_dtype(config.base_dtype, torch_device), trainable_seed=config.seed
    )
    for note in base.notes:
        progress({"event": "message", "message": note})
    compare = _active_to_compare(args, base) if args.compare == "active" else None
    split_record = _split_from(args.split_from, config.folds) if args.split_from else None
    trainer = Trainer(
        config,
        dataset,
        base.model,
        work_dir,
        run_identity={
            "data_file_list_sha256": dataset.summary.file_list_sha256,
            "base_fingerprints": base.fingerprints,
            "architecture": base.config.name,
            "split_from": split_record,
        },
        split_record=split_record,
        patient_hasher=hasher,
        on_event=progress,
        cancel=cancel,
        stop_after_epochs=args.stop_after_epochs,
        compare_trainable=compare[1] if compare else None,
    )
    result = trainer.run()
    if not trainer.is_main:
        return 0
    _publish(args, config, spec, base, result, public_summary, compare, progress)
    if not args.keep_work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


def _publish(
    args: argparse.Namespace,
    config: TrainConfig,
    spec: BaseSpec,
    base: BaseModel,
    result: RunResult,
    public_summary: dict[str, Any],
    compare: tuple[dict[str, Any], dict[str, Any]] | None,
    progress: _Progress,
) -> None:
    """Write the bundle (model card, figures), register (and activate) it, report ``done``."""
    from training.metrics import format_summary
    from training.report import build_model_card, write_bundle

    card = build_model_card(
        result,
        data_summary=public_summary,
        base=spec.describe(),
        fingerprints=base.fingerprints,
        architecture=base.config.name,
        extra={"compared_with": compare[0] if compare else None, "notes": base.notes},
    )
    bundle = write_bundle(
        args.out,
        result=result,
        config=base.config,
        fingerprints=base.fingerprints,
        card=card,
        demo=spec.demo,
        name=args.name,
    )
    registry_id = None
    if args.register:
        from pneumoview.registry import ModelRegistry

        registry = ModelRegistry()
        entry = registry.add(bundle, source=f"training run (data {public_summary['file_list_sha256'][:12]})")
        registry_id = entry.id
        if args.activate:
            registry.activate(entry.id)
    text = (
        f"Cross-validation ({len(result.folds)} of {config.folds} folds, {config.epochs} epochs): "
        f"{format_summary(result.summary)}\nNew bundle: {bundle}"
    )
    if registry_id:
        text += f"\nRegistered as {registry_id}" + (" (active)" if args.activate else " (not active)")
    progress(
        {
            "event": "done",
            "bundle": str(bundle),
            "registry_id": registry_id,
            "summary": result.summary,
            "comparison": result.comparison,
            "compared_with": compare[0] if compare else None,
            "activated": bool(args.activate and registry_id),
            "seconds": result.seconds,
            "text": text,
        }
    )


def _machine_memory_gb() -> dict[str, float]:
    """Total RAM and (when there is one) the first GPU's memory, in GB."""
    import psutil
    import torch

    out = {"cpu": round(psutil.virtual_memory().total / 1e9, 2)}
    if torch.cuda.is_available():
        out["cuda"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 2)
    return out


def _split_from(bundle: Path, folds: int) -> dict[str, Any]:
    """The split record of a bundle's manifest (``training.split``)."""
    from pneumoview.inference.manifest import read_manifest

    record = read_manifest(bundle).training.get("split")
    if not isinstance(record, dict) or "val_patients" not in record:
        raise ConfigError("this bundle records no cross-validation split", path=bundle)
    if int(record.get("n_folds", 0)) != folds:
        raise ConfigError(
            f"the bundle's split has {record.get('n_folds')} folds; use --folds {record.get('n_folds')}", path=bundle
        )
    return record


def _demo_architecture(spec: BaseSpec) -> str:
    """Architecture of the demo base weights (D's demo module decides; tiny by default)."""
    try:
        from pneumoview.inference import demo
    except ImportError:
        return spec.architecture
    return getattr(demo, "DEMO_ARCHITECTURE", None) or getattr(demo, "DEMO_CONFIG", None) or spec.architecture


def _active_to_compare(args: argparse.Namespace, base: BaseModel) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(description, trainable tensors)`` of the active registry bundle when it fits these base weights."""
    from pneumoview.inference.bundle import load_bundle
    from pneumoview.registry import ModelRegistry

    try:
        entry = ModelRegistry().active()
    except PneumoViewError:
        return None
    if entry is None:
        return None
    from pneumoview.errors import FingerprintMismatchError
    from pneumoview.inference.manifest import Manifest, check_fingerprints

    manifest = entry.manifest
    if manifest.get("architecture") != base.config.name or not manifest.get("base_fingerprints"):
        return None
    try:  # the one fingerprint rule: the active bundle was trained on these very base weights
        check_fingerprints(Manifest.from_dict(manifest), base.fingerprints)
    except (FingerprintMismatchError, ConfigError, KeyError, TypeError, ValueError):
        return None
    try:
        _, tensors = load_bundle(entry.path)
    except PneumoViewError:
        return None
    return {"id": entry.id, "model_id": entry.model_id, "metrics": entry.metrics}, tensors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training")
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return int(run(args) or 0)
    except PneumoViewError as exc:
        print(f"training: error: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:  # raised outside run() (e.g. while printing): still one line
        print(f"training: error: {storage_error(exc).message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("training: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
