"""Training part of the GPU check: full size, random weights, batch 16, 504 synthetic images.

    python benchmarks/gpu_train_check.py                       # on the GPU machine (all three)
    python benchmarks/gpu_train_check.py --only train_bf16_gc  # one of them
    python benchmarks/gpu_train_check.py --tiny --device cpu --images 48   # smoke test, anywhere

``benchmarks/gpu_check.py`` (the engine's check) can run these too: ``CHECKS.update(checks())``.

Checks (the real ``training.loop.Trainer``: accelerate, AdamW, bf16 autocast, per-epoch
atomic checkpoints; frozen backbones random, bf16; trainable tensors fp32):

* ``train_bf16``     -- bf16 backbones, no gradient checkpointing;
* ``train_bf16_gc``  -- bf16 backbones with gradient checkpointing (target <= 12 GB peak);
* ``train_nf4``      -- LLaMA decoder linears 4-bit NF4 (bitsandbytes), checkpointing (target <= 8 GB).

Figures: seconds per epoch (the last of ``--epochs``; the first warms up), peak GPU memory
(``torch.cuda.max_memory_allocated`` after the model is built, so weights are included but the
build's transient copies are not). Target for speed: <= 60 s per epoch on an H100.

Note: the frozen LLaMA-7B decoder alone is 6.5 G parameters = 13 GB in bf16, so the 12 GB
target for plain bf16 + checkpointing cannot be met by any bf16 run; the figure is reported
against it anyway.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = {
    "train_bf16_gc": {"peak_gb": 12.0, "epoch_s": 60.0},
    "train_nf4": {"peak_gb": 8.0, "epoch_s": 60.0},
    "train_bf16": {"epoch_s": 60.0},
}


def _init_random_(module, std: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    """Random frozen weights in place: normal(0, std) for matrices, ones for norm weights, zeros for biases."""
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, std)
            elif "norm" in name or name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or "ln_" in name:
                p.fill_(1.0)
            else:
                p.zero_()
        for name, b in module.named_buffers():
            if b.is_floating_point() and "inv_freq" not in name:
                b.zero_()


def build_random_model(tiny: bool, device: str, *, decoder_4bit: bool):  # type: ignore[no-untyped-def]
    """PneumoLLM with random frozen bf16 backbones on ``device`` (decoder NF4 when asked), fp32 trainables."""
    import torch

    from pneumoview.inference.config import load_config
    from pneumoview.inference.model import build_model
    from pneumoview.inference.towers import reset_rotary

    config = load_config("pneumollm-tiny" if tiny else "pneumollm-vitl14-llama7b")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = build_model(config, device=device, base_dtype=dtype, empty_base=True)
    model.visual.to_empty(device=device)
    model.visual.to(dtype)
    _init_random_(model.visual)
    if decoder_4bit:
        from pneumoview.inference.plans import quantise_decoder_linears

        model.decoder.to_empty(device="cpu")
        model.decoder.to(dtype)
        _init_random_(model.decoder)
        quantise_decoder_linears(model.decoder, "nf4", device=device, compute_dtype=dtype)
        model.decoder.to(device)
    else:
        model.decoder.to_empty(device=device)
        model.decoder.to(dtype)
        _init_random_(model.decoder)
    reset_rotary(model.decoder, device)
    return model


def synthetic_dataset(n: int, size: int, folder: Path):  # type: ignore[no-untyped-def]
    """``n`` random crops as cached .npy files, alternating labels, one patient each."""
    import numpy as np

    from training.data import DataSummary, PreparedDataset, PreparedImage, Sample

    rng = np.random.default_rng(0)
    samples, images = [], []
    for i in range(n):
        crop = rng.random((size, size), dtype=np.float32)
        label = i % 2
        crop[size // 4 : 3 * size // 4] *= 0.6 + 0.4 * label  # a learnable difference
        path = folder / f"{i}.npy"
        np.save(path, crop)
        samples.append(Sample(path, label, f"P{i}", "csv"))
        images.append(PreparedImage(path, f"{i:064x}", f"{i:064x}", True, None, ""))
    summary = DataSummary(
        source=str(folder),
        n_files=n,
        n_used=n,
        class_names=("pneumoconiosis", "normal"),
        images_per_class=[n - n // 2, n // 2],
        patients_per_class=[n - n // 2, n // 2],
        n_patients=n,
        images_per_patient={"min": 1, "median": 1, "max": 1},
        patients_without_id=0,
    )
    return PreparedDataset(samples, images, summary)


def measure_training(
    *,
    device: str,
    tiny: bool,
    gradient_checkpointing: bool,
    decoder_4bit: bool,
    images: int = 504,
    batch: int = 16,
    grad_accum: int = 2,
    epochs: int = 2,
) -> dict:
    import gc

    import torch

    from training.loop import TrainConfig, Trainer

    cuda = device.startswith("cuda")
    if decoder_4bit:
        from pneumoview.inference.plans import bitsandbytes_available

        if not cuda:
            return {"skipped": "a 4-bit decoder needs a CUDA device"}
        if not bitsandbytes_available():
            return {"skipped": "bitsandbytes is not installed"}
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    t0 = time.perf_counter()
    model = build_random_model(tiny, device, decoder_4bit=decoder_4bit)
    build_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_dataset(images, model.config.preprocessing.image_size, Path(tmp))
        cfg = TrainConfig(
            epochs=epochs,
            folds=2,
            final_model=True,
            batch_size=batch,
            grad_accum=grad_accum,
            device="cuda" if cuda else "cpu",
            mixed_precision="bf16" if cuda else "no",
            gradient_checkpointing=gradient_checkpointing,
        )
        trainer = Trainer(cfg, data, model, Path(tmp) / "work")
        result = trainer.train_on_all(epochs)
        if cuda:
            torch.cuda.synchronize()
        seconds = trainer.epoch_seconds
    out = {
        "build_s": round(build_s, 1),
        "epoch_s": round(seconds[-1], 2),
        "all_epochs_s": [round(s, 2) for s in seconds],
        "images": images,
        "batch": batch,
        "grad_accum": grad_accum,
        "final_train_loss": round(result.history[-1]["train_loss"], 4),
    }
    if cuda:
        out["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    else:
        import resource

        out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2)
    del trainer, model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


def _args(args: argparse.Namespace) -> dict:
    return {
        "device": getattr(args, "device", "cuda"),
        "tiny": bool(getattr(args, "tiny", False)),
        "images": getattr(args, "images", 504),
        "epochs": getattr(args, "train_epochs", getattr(args, "epochs", 2)),
        "batch": getattr(args, "train_batch", 16),
    }


def check_train_bf16(args: argparse.Namespace) -> dict:
    """training, bf16 backbones, no gradient checkpointing"""
    return measure_training(**_args(args), gradient_checkpointing=False, decoder_4bit=False)


def check_train_bf16_gc(args: argparse.Namespace) -> dict:
    """training, bf16 backbones, gradient checkpointing"""
    return measure_training(**_args(args), gradient_checkpointing=True, decoder_4bit=False)


def check_train_nf4(args: argparse.Namespace) -> dict:
    """training, 4-bit NF4 decoder, gradient checkpointing"""
    return measure_training(**_args(args), gradient_checkpointing=True, decoder_4bit=True)


def checks() -> dict[str, Callable[[argparse.Namespace], dict]]:
    """The training checks, for ``benchmarks/gpu_check.py``'s CHECKS."""
    return {"train_bf16": check_train_bf16, "train_bf16_gc": check_train_bf16_gc, "train_nf4": check_train_nf4}


def verdicts(results: dict[str, dict], tiny: bool) -> list[str]:
    lines = []
    for name, target in TARGETS.items():
        r = results.get(name, {})
        if "epoch_s" not in r:
            continue
        for key, limit in target.items():
            if key in r:
                ok = r[key] <= limit
                lines.append(
                    f"{name}: {key} {r[key]} (target <= {limit}){'' if tiny else (' OK' if ok else ' MISSED')}"
                    + (" [tiny: not comparable]" if tiny else "")
                )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated: " + ", ".join(checks()))
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=504)
    parser.add_argument("--epochs", dest="train_epochs", type=int, default=2)
    parser.add_argument("--batch", dest="train_batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in (args.only.split(",") if args.only else checks())]
    machine = torch.cuda.get_device_name(0) if args.device.startswith("cuda") and torch.cuda.is_available() else "CPU"
    print(f"machine: {machine}; tiny={args.tiny}", flush=True)
    results = {}
    for name in names:
        fn = checks()[name]
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {fn.__doc__.strip()}", flush=True)
        try:
            results[name] = fn(args)
        except Exception as exc:  # noqa: BLE001 - one failing check must not hide the others' figures
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print("  " + json.dumps(results[name]), flush=True)
    for line in verdicts(results, args.tiny):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "tiny": args.tiny, "results": results}, indent=2) + "\n")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
