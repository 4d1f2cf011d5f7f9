"""Decoder linear kernels on the CPU, interleaved: bf16 ``F.linear`` vs the int8 kernels.

    python benchmarks/int8_kernels.py [--rounds 7] [--tokens 10] [--layers 16] [--threads 2]

``layers`` distinct LLaMA-7B MLP-sized weights (11008 x 4096, random), each called once per round
in turn, as the decoder calls its layers: every weight comes from memory, not from the cache (one
weight called again and again partly stays in the processor's last-level cache and flatters the
kernels that read less). ``tokens`` bf16 input rows (10 = batch 1: the decoder tokens of one study;
80 = batch 8). Each round runs every kernel over all layers in turn, so other load on the machine
hits each alike; medians and ranges in ms per layer call. Kernels:

* ``bf16``: ``F.linear`` on the bf16 weight (the bf16 plan);
* ``own``: PneumoView's AVX512-BF16 kernel (``pneumoview/inference/_int8_cpu.c``; the int8 plan's
  kernel where it is built and the processor has the instructions);
* ``int8pack``: ``torch._weight_int8pack_mm`` (the int8 plan's kernel without the own one; per-row
  bf16 scales);
* ``dequant-B``: int8 rows dequantised to bf16 in blocks of B rows (a block stays in L2), each block
  one bf16 matmul -- an alternative tried;
* ``int_mm``: activations quantised per token to int8, then ``torch._int_mm`` (int8 x int8 -> int32,
  oneDNN on the CPU) and both scales -- an alternative tried.

Outputs of the first layer are compared with the exact product of its int8 weights and the bf16
input (float64, max |diff|), the largest output's size given beside them.
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
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=10)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=int, default=11008)
    parser.add_argument("--inp", type=int, default=4096)
    args = parser.parse_args(argv)
    import torch
    import torch.nn.functional as F

    from pneumoview.inference.quant_cpu import own_int8_matmul, own_kernel_available, quantise_int8

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    weights, quantised = [], []
    for _ in range(args.layers):
        weight = (torch.randn(args.out, args.inp, generator=g) * 0.02).to(torch.bfloat16)
        q, scale = quantise_int8(weight)
        weights.append(weight)
        quantised.append((q, scale.to(torch.bfloat16), q.t()))  # [K, N] view: torch._int_mm takes W transposed
    x = torch.randn(args.tokens, args.inp, generator=g).to(torch.bfloat16)

    def dequant(block: int):
        def run(i: int) -> torch.Tensor:
            q, scale, _ = quantised[i]
            out = torch.empty(x.shape[0], q.shape[0], dtype=torch.bfloat16)
            for begin in range(0, q.shape[0], block):
                w = q[begin : begin + block].to(torch.bfloat16).mul_(scale[begin : begin + block, None])
                torch.mm(x, w.t(), out=out[:, begin : begin + block])
            return out

        return run

    def int_mm(i: int) -> torch.Tensor:
        _, scale, qt = quantised[i]
        xs = (x.float().abs().amax(dim=1, keepdim=True) / 127.0).clamp_min(1e-12)
        xq = torch.round(x.float() / xs).to(torch.int8)
        return (torch._int_mm(xq, qt).float() * xs * scale.float()).to(torch.bfloat16)

    kernels = {
        "bf16": lambda i: F.linear(x, weights[i]),
        **({"own": lambda i: own_int8_matmul(x, *quantised[i][:2])} if own_kernel_available() else {}),
        "int8pack": lambda i: torch._weight_int8pack_mm(x, *quantised[i][:2]),
        "dequant-128": dequant(128),
        "dequant-512": dequant(512),
        "int_mm": int_mm,
    }
    q0, scale0, _ = quantised[0]
    exact = x.double() @ (q0.double() * scale0.double()[:, None]).t()
    diffs = {k: float((fn(0).double() - exact).abs().max()) for k, fn in kernels.items() if k != "bf16"}
    times: dict[str, list[float]] = {k: [] for k in kernels}
    loads = []
    for _ in range(args.rounds + 1):  # the first round warms up (kernel choice, pages)
        for name, fn in kernels.items():
            tick = time.perf_counter()
            for i in range(args.layers):
                fn(i)
            times[name].append((time.perf_counter() - tick) * 1000 / args.layers)
        loads.append(os.getloadavg()[0])
    result = {
        "layer": [args.out, args.inp],
        "tokens": args.tokens,
        "layers": args.layers,
        "threads": args.threads,
        "loadavg": [min(loads), max(loads)],
        "ms_median": {k: round(statistics.median(v[1:]), 2) for k, v in times.items()},
        "ms_range": {k: [round(min(v[1:]), 2), round(max(v[1:]), 2)] for k, v in times.items()},
        "max_abs_diff_vs_exact_int8": diffs,
        "max_abs_output": float(exact.abs().max()),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
