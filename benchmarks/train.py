"""Training throughput on CPU at tiny size: seconds per epoch, peak RSS, scaling with the data size.

    python benchmarks/train.py                          # 100, 250, 500 images, 2 epochs each
    python benchmarks/train.py --sizes 100,500 --threads 1 --json benchmarks/out/train.json

What it does:

1. writes 500 synthetic chest-like PNGs (training.synthetic) and runs the data check over them
   twice: the first pass decodes, localises the lungs and caches the crops; the second must
   only read the cache (both times are printed);
2. for each size N, in a fresh child process (so peak RSS is per run): the tiny architecture
   with random frozen backbones, the real ``Trainer`` (accelerate, AdamW, per-epoch atomic
   checkpoints) training on N images; seconds of the last epoch (the first one warms up), peak
   RSS of the child;
3. baseline, measured in the same child on the same crops: a bare PyTorch loop (same model,
   loss and optimizer; no accelerate, no checkpoints, data already in one tensor) -- the
   overhead of the real loop is the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from training.base import BaseSpec, build_base_model
    from training.data import CropCache, PreparedDataset, validate
    from training.loop import TrainConfig, Trainer, bce_one_hot_loss, param_groups

    cache = CropCache(args.cache, size=args.image_size)
    full = validate(args.csv, folds=2, cache=cache)
    data = PreparedDataset(full.samples[: args.child], full.images[: args.child], full.summary)
    arch = args.architecture
    base = build_base_model(
        BaseSpec(architecture=arch, random_seed=0), device=torch.device("cpu"), base_dtype=torch.float32
    )
    cfg = TrainConfig(epochs=args.epochs, folds=2, final_model=True, device="cpu", batch_size=args.batch, grad_accum=1)
    with tempfile.TemporaryDirectory() as work:
        trainer = Trainer(cfg, data, base.model, work)
        t0 = time.perf_counter()
        trainer.train_on_all(args.epochs)
        total = time.perf_counter() - t0
        epoch_s = trainer.epoch_seconds
    rss = _rss_mb()

    # Baseline: bare loop over an in-memory tensor, same model / loss / optimizer.
    import numpy as np

    from pneumoview.inference.transforms import preprocess_tensor

    crops = np.stack([img.load_crop() for img in data.images])
    pixels = preprocess_tensor(crops, base.model.config.preprocessing)
    labels = torch.tensor(data.labels)
    model = base.model
    opt = torch.optim.AdamW(param_groups(model, 0.02), lr=3e-4, betas=(0.9, 0.95))
    model.train()
    t0 = time.perf_counter()
    for i in range(0, len(labels), args.batch):
        loss = bce_one_hot_loss(model(pixels[i : i + args.batch]), labels[i : i + args.batch])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    baseline = time.perf_counter() - t0
    return {
        "images": len(data),
        "epoch_seconds": epoch_s,
        "last_epoch_s": epoch_s[-1],
        "run_s": total,
        "peak_rss_mb": rss,
        "baseline_epoch_s": baseline,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,250,500")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--architecture", default="pneumollm-tiny")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0

    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads or 'default'}",
        "architecture": args.architecture,
        "epochs": args.epochs,
        "batch": args.batch,
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        from training.data import CropCache, validate
        from training.synthetic import make_synthetic_dataset

        t0 = time.perf_counter()
        csv = make_synthetic_dataset(Path(tmp) / "data", n_patients=max(sizes) // 2, images_per_patient=2, seed=0)
        results["generate_s"] = time.perf_counter() - t0
        cache_dir = Path(tmp) / "cache"
        for label in ("first_check_s", "cached_check_s"):
            cache = CropCache(cache_dir, size=args.image_size)
            t0 = time.perf_counter()
            data = validate(csv, folds=2, cache=cache)
            results[label] = time.perf_counter() - t0
            results[label.replace("_s", "_misses")] = cache.misses
        print(
            f"data check of {len(data)} images: first {results['first_check_s']:.1f} s "
            f"(decode + lung localiser + crop), cached {results['cached_check_s']:.2f} s "
            f"({results['cached_check_misses']} decoded again)",
            flush=True,
        )
        for n in sizes:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(n),
                "--csv",
                str(csv),
                "--cache",
                str(cache_dir),
                "--epochs",
                str(args.epochs),
                "--batch",
                str(args.batch),
                "--image-size",
                str(args.image_size),
                "--architecture",
                args.architecture,
            ]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            run = json.loads(out.stdout.strip().splitlines()[-1])
            results["runs"].append(run)
            print(
                f"{n:4d} images: {run['last_epoch_s']:.1f} s/epoch ({run['last_epoch_s'] / n * 1000:.0f} ms/image), "
                f"peak RSS {run['peak_rss_mb']:.0f} MB; baseline bare loop {run['baseline_epoch_s']:.1f} s/epoch",
                flush=True,
            )
    runs = results["runs"]
    if len(runs) > 1:
        a, b = runs[0], runs[-1]
        results["scaling"] = (b["last_epoch_s"] / a["last_epoch_s"]) / (b["images"] / a["images"])
        print(
            f"scaling {a['images']} -> {b['images']} images: x{b['last_epoch_s'] / a['last_epoch_s']:.2f} time for "
            f"x{b['images'] / a['images']:.1f} data (1.0 = linear: {results['scaling']:.2f})"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
