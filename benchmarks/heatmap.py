"""CPU cost of the attention heatmap per image, against one plain prediction measured in the same run.

    python benchmarks/heatmap.py --size tiny
    nice python benchmarks/heatmap.py --size full      # ~15 GB RAM: run only with >= 17 GB available

Random weights (``InferenceEngine.random``, the engine's CPU plan), a random 224x224 crop. Each
size runs in its own child process so peak RSS (``ru_maxrss``) is its own. Printed per size:
seconds per heatmap (median), seconds per prediction at batch 1 (median; the baseline), their
ratio, peak RSS. The last line is ``size=... heatmap_s=... predict_s=... ratio=...``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys

CONFIGS = {"tiny": "pneumollm-tiny", "full": "pneumollm-vitl14-llama7b"}


def child(size: str, repeats: int) -> dict:
    import numpy as np
    import torch
    from engine import seconds_per_call  # benchmarks/engine.py: a script's own folder is on sys.path

    from pneumoview.inference.config import load_config
    from pneumoview.inference.engine import InferenceEngine
    from pneumoview.inference.heatmap import compute_heatmap
    from pneumoview.inference.plans import choose_plan

    config = load_config(CONFIGS[size])
    plan = choose_plan(config, device="cpu", precision="auto", quantisation="none", batch_size=1)
    engine = InferenceEngine.random(config, plan)
    crop = np.random.default_rng(0).random((224, 224), dtype=np.float32)
    engine.predict(crop[None], batch_size=1)  # warm-up
    compute_heatmap(engine, crop)  # warm-up (captum import, backward kernels)

    predict = seconds_per_call(lambda: engine.predict(crop[None], batch_size=1), repeats)
    heat = seconds_per_call(lambda: compute_heatmap(engine, crop), repeats)
    return {
        "size": size,
        "plan": plan.describe(),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "heatmap_s": statistics.median(heat),
        "predict_s": statistics.median(predict),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full", "both"), default="tiny")
    parser.add_argument("--repeats", type=int, default=None, help="default: 5 tiny, 2 full")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats or (5 if args.child == "tiny" else 2))))
        return 0
    sizes = ["tiny", "full"] if args.size == "both" else [args.size]
    results = []
    for size in sizes:
        command = [sys.executable, __file__, "--child", size] + (
            ["--repeats", str(args.repeats)] if args.repeats else []
        )
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return done.returncode
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    for r in results:
        print(f"{r['size']}: plan {r['plan']}; {r['threads']} threads")
        print(
            f"size={r['size']} heatmap_s={r['heatmap_s']:.3f} predict_s={r['predict_s']:.3f} "
            f"ratio={r['heatmap_s'] / r['predict_s']:.1f} peak_rss_gb={r['peak_rss_gb']:.2f}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
