"""One short GPU check of the inference engine (full size, random weights), with a reference-style
baseline measured in the same run.

    python benchmarks/gpu_check.py                         # on the GPU machine, full size
    python benchmarks/gpu_check.py --only bf16,reference   # some checks only
    python benchmarks/gpu_check.py --tiny --device cpu     # smoke test of this script, anywhere

Checks (each a function registered in ``CHECKS``; other scripts may register more, e.g. training):

* ``bf16``      -- the engine's GPU plan: both towers bf16, SDPA attention.
* ``int8``      -- LLaMA decoder linears 8-bit: bitsandbytes LLM.int8 on CUDA, PyTorch's x86 int8
  linear on the CPU (:mod:`pneumoview.inference.quant_cpu`).
* ``nf4``       -- LLaMA decoder linears 4-bit NF4 through bitsandbytes (vision bf16; CUDA only).
* ``reference`` -- the reference implementation's style: fp16, eager attention, batch 1.
* ``train_bf16_gc`` -- one training run's step memory and epoch time (``benchmarks/gpu_train_check.py``).

For each: build seconds, batch-1 latency (median), images/s at batch 1 and at each ``--batch``
(default 32 and 128), peak GPU memory (``torch.cuda.max_memory_allocated`` from before the build,
so weights included; on the CPU the process's peak RSS). All of it goes into one JSON (``--json``).
Targets: >= 1,000 images/s, batch-1 <= 15 ms, peak <= 16 GB in bf16, <= 6 GB with a 4-bit decoder.

The GPU machine has torch, transformers and accelerate but not open_clip (nor pydicom, which
this script does not need). Bring wheels, e.g. on a machine with internet::

    pip download --no-deps -d wheels open_clip_torch ftfy wcwidth bitsandbytes
    # on the GPU machine, from the repository root:
    pip install --no-index --no-deps wheels/*.whl && python benchmarks/gpu_check.py --json out.json

(``regex``, ``huggingface_hub``, ``safetensors`` and ``tqdm`` come with transformers. open_clip
also imports ``torchvision`` at import time: if ``python -c "import torchvision"`` fails there,
add the torchvision wheel built for that machine's torch version. ``timm`` is optional.) The
repository root is put on ``sys.path``, so PneumoView itself need not be installed; this script
imports neither pydicom nor Qt.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = {"images_per_s_b64": 1000.0, "batch1_ms": 15.0, "peak_gb_bf16": 16.0, "peak_gb_nf4": 6.0}
CHECKS: dict[str, Callable[[argparse.Namespace], dict]] = {}
DEFAULT_CHECKS = ("bf16", "int8", "nf4", "reference", "train_bf16_gc")


def register(name: str) -> Callable:
    """Add a check: ``fn(args) -> dict`` of figures (or ``{"skipped": reason}``)."""

    def wrap(fn: Callable[[argparse.Namespace], dict]) -> Callable[[argparse.Namespace], dict]:
        CHECKS[name] = fn
        return fn

    return wrap


# ----------------------------------------------------------------------------------------------
# helpers


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float:
    import resource

    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # CPU smoke test: process RSS


def _config(args: argparse.Namespace, attn: str | None = None):
    from pneumoview.inference.config import load_config

    config = load_config("pneumollm-tiny" if args.tiny else "pneumollm-vitl14-llama7b")
    return config.with_attn_implementation(attn) if attn else config


def _crops(n: int):
    import numpy as np

    return np.random.default_rng(n).random((n, 224, 224), dtype=np.float32)


def measure(
    args: argparse.Namespace, *, precision: str, quantisation: str, attn: str | None = None, batch: int | None = None
) -> dict:
    """Build a random-weight engine with the given plan and time it."""
    import torch

    from pneumoview.inference.engine import InferenceEngine
    from pneumoview.inference.plans import choose_plan

    config = _config(args, attn)
    batches = [batch] if batch else _batches(args)
    plan = choose_plan(
        config, device=args.device, precision=precision, quantisation=quantisation, batch_size=max(batches)
    )
    _reset_peak(plan.device)
    start = time.perf_counter()
    engine = InferenceEngine.random(config, plan)
    _sync(plan.device)
    build_s = time.perf_counter() - start
    weights_gb = _peak_gb(plan.device)

    one = _crops(1)
    for _ in range(args.warmup):
        engine.probabilities(one)
    _sync(plan.device)
    lat = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        engine.probabilities(one)  # ends with .cpu(): synchronises
        lat.append(time.perf_counter() - t)

    result = {
        "plan": plan.describe(),
        "attn": config.decoder.attn_implementation,
        "build_s": round(build_s, 2),
        "batch1_ms": statistics.median(lat) * 1e3,
        "batch1_ms_min": min(lat) * 1e3,
        "weights_gb": weights_gb,
    }
    result["images_per_s_b1"] = 1e3 / result["batch1_ms"]
    for size in (b for b in batches if b > 1):
        many = _crops(size)
        engine.probabilities(many)
        _sync(plan.device)
        t = time.perf_counter()
        for _ in range(args.iters):
            engine.probabilities(many)
        elapsed = time.perf_counter() - t
        result[f"images_per_s_b{size}"] = size * args.iters / elapsed
    result["peak_gb"] = _peak_gb(plan.device)
    result["torch"] = torch.__version__
    del engine
    _reset_peak(plan.device)
    return result


def _batches(args: argparse.Namespace) -> list[int]:
    return [int(b) for b in str(args.batch).split(",") if b.strip()]


def _needs_cuda_bnb(args: argparse.Namespace) -> str | None:
    from pneumoview.inference.plans import bitsandbytes_available

    if not args.device.startswith("cuda"):
        return "needs a CUDA device"
    if not bitsandbytes_available():
        return "bitsandbytes is not installed"
    return None


# ----------------------------------------------------------------------------------------------
# the checks


@register("bf16")
def check_bf16(args: argparse.Namespace) -> dict:
    """The engine's full-precision GPU plan: bf16 towers, SDPA."""
    return measure(args, precision="bf16", quantisation="none")


@register("nf4")
def check_nf4(args: argparse.Namespace) -> dict:
    """LLaMA linears in 4-bit NF4 (bitsandbytes), vision bf16."""
    reason = _needs_cuda_bnb(args)
    return {"skipped": reason} if reason else measure(args, precision="bf16", quantisation="nf4")


@register("int8")
def check_int8(args: argparse.Namespace) -> dict:
    """LLaMA linears in 8-bit (bitsandbytes LLM.int8 on CUDA, x86 int8 on the CPU), vision bf16."""
    reason = _needs_cuda_bnb(args) if args.device.startswith("cuda") else None
    return {"skipped": reason} if reason else measure(args, precision="bf16", quantisation="int8")


@register("reference")
def check_reference(args: argparse.Namespace) -> dict:
    """Reference-style baseline: fp16, eager attention, one image at a time."""
    return measure(args, precision="fp16", quantisation="none", attn="eager", batch=1)


# ----------------------------------------------------------------------------------------------


# Training checks (benchmarks/gpu_train_check.py): full size, random weights, batch 16, 504 synthetic
# images, seconds/epoch and peak memory; train_bf16_gc runs by default, the others with --only
from benchmarks.gpu_train_check import checks as _training_checks

CHECKS.update(_training_checks())


def machine(device: str) -> str:
    import torch

    parts = [platform.node() or "?", platform.processor() or platform.machine(), f"torch {torch.__version__}"]
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        parts.insert(0, f"{props.name} ({props.total_memory / 2**30:.0f} GiB)")
    else:
        parts.insert(0, "CPU only")
    return ", ".join(parts)


def verdicts(results: dict[str, dict], tiny: bool) -> list[str]:
    lines = []
    bf16, nf4, ref = results.get("bf16", {}), results.get("nf4", {}), results.get("reference", {})
    big = max((int(k.rsplit("_b", 1)[1]) for k in bf16 if k.startswith("images_per_s_b")), default=1)
    if tiny:
        lines.append("tiny model: targets apply to the full size only")
    checks = [
        (
            f"bf16 images/s at batch {big} >= 1000",
            bf16.get(f"images_per_s_b{big}"),
            lambda v: v >= TARGETS["images_per_s_b64"],
        ),
        ("bf16 batch-1 latency <= 15 ms", bf16.get("batch1_ms"), lambda v: v <= TARGETS["batch1_ms"]),
        ("bf16 peak memory <= 16 GB", bf16.get("peak_gb"), lambda v: v <= TARGETS["peak_gb_bf16"]),
        ("nf4 peak memory <= 6 GB", nf4.get("peak_gb"), lambda v: v <= TARGETS["peak_gb_nf4"]),
    ]
    for text, value, ok in checks:
        if value is not None:
            lines.append(f"  {text}: {value:.2f} {'PASS' if ok(value) else 'FAIL'}{' (tiny)' if tiny else ''}")
    if ref.get("batch1_ms") and bf16.get("batch1_ms"):
        lines.append(f"  batch-1 speed-up over the reference style: x{ref['batch1_ms'] / bf16['batch1_ms']:.2f}")
    if ref.get("images_per_s_b1") and bf16.get(f"images_per_s_b{big}"):
        lines.append(
            f"  throughput over the reference style (batch {big} vs 1): "
            f"x{bf16[f'images_per_s_b{big}'] / ref['images_per_s_b1']:.1f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", help=f"comma-separated checks out of {', '.join(CHECKS)} (default: {','.join(DEFAULT_CHECKS)})"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny architecture (smoke test)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument(
        "--batch",
        default="32,128",
        help="throughput batch sizes, comma-separated (default 32,128; batch 1 is always measured)",
    )
    parser.add_argument("--repeats", type=int, default=20, help="batch-1 repetitions (default 20)")
    parser.add_argument("--iters", type=int, default=10, help="throughput iterations (default 10)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in (args.only.split(",") if args.only else DEFAULT_CHECKS) if n.strip()]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")

    print(f"machine: {machine(args.device)}", flush=True)
    results: dict[str, dict] = {}
    for name in names:
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {CHECKS[name].__doc__.strip().splitlines()[0]}", flush=True)
        try:
            results[name] = CHECKS[name](args)
        except Exception as exc:  # noqa: BLE001 - one failing check must not hide the others' figures
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print("  " + json.dumps(results[name], default=str), flush=True)
    for line in verdicts(results, args.tiny):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"machine": machine(args.device), "tiny": args.tiny, "results": results}, indent=2, default=str)
            + "\n"
        )
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
