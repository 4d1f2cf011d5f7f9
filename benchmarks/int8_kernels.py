"""Batch-1 decoder linear kernels on the CPU, interleaved: bf16 ``F.linear`` vs int8 kernels.

    python benchmarks/int8_kernels.py [--rounds 11] [--tokens 10] [--threads 2]

One LLaMA-7B MLP-sized layer (11008 x 4096, random weights), ``tokens`` bf16 input rows (batch 1:
the visual tokens the decoder sees). Each round runs every kernel once in turn, so other load on the
machine hits each alike; medians and ranges in ms. Kernels:

* ``bf16``: ``F.linear`` on the bf16 weight (the bf16 plan);
* ``int8pack``: ``torch._weight_int8pack_mm`` (the int8 plan's kernel, per-row bf16 scales);
* ``dequant-B``: int8 rows dequantised to bf16 in blocks of B rows (a block stays in L2), each block
  one bf16 matmul -- the alternative tried;
* ``int_mm``: activations quantised per token to int8, then ``torch._int_mm`` (int8 x int8 -> int32,
  oneDNN on the CPU) and both scales. Outputs are compared with ``int8pack``'s (max |diff|).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--tokens", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=int, default=11008)
    parser.add_argument("--inp", type=int, default=4096)
    args = parser.parse_args(argv)
    import torch
    import torch.nn.functional as F

    from pneumoview.inference.quant_cpu import quantise_int8

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    weight = (torch.randn(args.out, args.inp, generator=g) * 0.02).to(torch.bfloat16)
    q, scale = quantise_int8(weight)
    scale = scale.to(torch.bfloat16)
    x = torch.randn(args.tokens, args.inp, generator=g).to(torch.bfloat16)

    def dequant(block: int):
        def run() -> torch.Tensor:
            out = torch.empty(x.shape[0], q.shape[0], dtype=torch.bfloat16)
            for begin in range(0, q.shape[0], block):
                w = q[begin : begin + block].to(torch.bfloat16).mul_(scale[begin : begin + block, None])
                torch.mm(x, w.t(), out=out[:, begin : begin + block])
            return out

        return run

    qt = q.t()  # [K, N] view: torch._int_mm takes the weight transposed

    def int_mm() -> torch.Tensor:
        xs = (x.float().abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
        xq = torch.round(x.float() / xs).to(torch.int8)
        return (torch._int_mm(xq, qt).float() * xs * scale.float()).to(torch.bfloat16)

    kernels = {
        "bf16": lambda: F.linear(x, weight),
        "int8pack": lambda: torch._weight_int8pack_mm(x, q, scale),
        "dequant-128": dequant(128),
        "dequant-512": dequant(512),
        "int_mm": int_mm,
    }
    reference = kernels["int8pack"]()
    diffs = {k: float((fn().float() - reference.float()).abs().max()) for k, fn in kernels.items()}
    times: dict[str, list[float]] = {k: [] for k in kernels}
    for _ in range(args.rounds):
        for name, fn in kernels.items():
            tick = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - tick) * 1000)
    result = {
        "layer": [args.out, args.inp],
        "tokens": args.tokens,
        "threads": args.threads,
        "loadavg": os.getloadavg(),
        "ms_median": {k: round(statistics.median(v[1:]), 2) for k, v in times.items()},
        "ms_range": {k: [round(min(v[1:]), 2), round(max(v[1:]), 2)] for k, v in times.items()},
        "max_abs_diff_vs_int8pack": diffs,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
