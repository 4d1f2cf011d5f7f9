"""The own int8 CPU kernel (``pneumoview/inference/_int8_cpu.c``) against exact products, and its dispatch."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest
import torch

from pneumoview.errors import ConfigError
from pneumoview.inference import quant_cpu
from pneumoview.inference.config import load_config
from pneumoview.inference.plans import choose_plan
from pneumoview.inference.quant_cpu import (
    CpuInt8Linear,
    int8_kernel_description,
    own_int8_matmul,
    own_kernel_available,
    quantise_int8,
)


def _cpu_has_avx512_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return all(f in flags.split() for f in ("avx512f", "avx512bw", "avx512_bf16"))


BUILDS_HERE = sys.platform.startswith("linux") and platform.machine() == "x86_64"
needs_kernel = pytest.mark.skipif(
    not (BUILDS_HERE and _cpu_has_avx512_bf16()), reason="the kernel needs Linux x86-64 with AVX512-BF16"
)


def _raw(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, threads: int) -> torch.Tensor:
    """The C function itself: fp32 [M, N], no bf16 rounding of the result."""
    assert quant_cpu._int8_cpu is not None
    out = torch.empty(x.shape[0], q.shape[0], dtype=torch.float32)
    quant_cpu._int8_cpu.linear(
        x.data_ptr(), q.data_ptr(), scale.data_ptr(), out.data_ptr(), *x.shape, q.shape[0], threads
    )
    return out


def _case(m: int, n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, scale = quantise_int8(torch.randn(n, k, generator=g) * 0.02)
    x = (torch.randn(m, k, generator=g) * torch.logspace(-3, 2, k)[torch.randperm(k, generator=g)]).to(torch.bfloat16)
    return x, q, scale.to(torch.bfloat16)


def _int8_cpu_plan_summary() -> str:
    config = load_config("pneumollm-tiny")
    return choose_plan(config, device="cpu", cuda=False, free_bytes=64 * 1024**3, quantisation="int8").summary()


@needs_kernel
def test_the_kernel_is_built_and_chosen_on_this_machine():
    assert own_kernel_available(), "setup.py should have built pneumoview.inference._int8_cpu here"
    assert int8_kernel_description().startswith("int8 kernel: PneumoView AVX512-BF16 (")
    assert _int8_cpu_plan_summary().endswith("LLaMA 8-bit (bf16 compute, PneumoView AVX512-BF16 kernel)")  # provenance


@needs_kernel
@pytest.mark.parametrize("m", [1, 2, 7, 8, 12, 13, 25, 80])
@pytest.mark.parametrize(("n", "k"), [(1, 32), (3, 96), (130, 64), (64, 4096)])
def test_the_kernel_equals_the_exact_dequantised_product(m, n, k):
    x, q, scale = _case(m, n, k)
    exact = x.double() @ (q.double() * scale.double()[:, None]).t()
    bound = x.double().abs() @ (q.double().abs() * scale.double()[:, None]).t()  # sum of |products|
    out = _raw(x, q, scale, threads=2)
    # products exact, fp32 accumulation: error within K fp32 roundings of the sum of |products|
    assert ((out.double() - exact).abs() <= k * 2.0**-24 * bound + 1e-30).all()


@needs_kernel
def test_each_output_is_the_same_whatever_the_batch_and_thread_count():
    x, q, scale = _case(29, 77, 256, seed=3)
    batch = _raw(x, q, scale, threads=2)
    for threads in (1, 3, 8):
        assert torch.equal(_raw(x, q, scale, threads), batch)
    few_rows = q[:3].contiguous(), scale[:3].contiguous()  # more threads than output rows: capped
    assert torch.equal(_raw(x, *few_rows, threads=8), batch[:, :3])
    for row in (0, 11, 12, 28):  # first / last of a 12-row block, the tail
        assert torch.equal(_raw(x[row : row + 1].contiguous(), q, scale, 2)[0], batch[row])


@needs_kernel
def test_the_layer_runs_the_kernel_whatever_the_row_count():
    x, q, scale = _case(13, 48, 128, seed=4)
    layer = CpuInt8Linear(q, scale)
    assert layer.own_kernel
    for rows in (1, 7, 13):
        part = x[:rows].contiguous()
        assert torch.equal(layer.matmul(part), _raw(part, q, scale, torch.get_num_threads()).to(torch.bfloat16))
    odd = CpuInt8Linear(*quantise_int8(torch.randn(48, 80)))  # 80 + 0 pad: not a multiple of 32
    assert not odd.own_kernel
    few = torch.randn(3, 80).to(torch.bfloat16)
    assert torch.equal(odd.matmul(few), torch._weight_int8pack_mm(few, odd.qweight, odd.scale))


@needs_kernel
def test_the_wrapper_refuses_what_the_kernel_cannot_take():
    x, q, scale = _case(8, 16, 64)
    with pytest.raises(ConfigError):
        own_int8_matmul(x.float(), q, scale)
    with pytest.raises(ConfigError):
        own_int8_matmul(x, q, scale.float())
    with pytest.raises(ConfigError):
        own_int8_matmul(x[:, :48], q[:, :48], scale)  # K = 48
    with pytest.raises(ConfigError):
        own_int8_matmul(x, q[:8], scale)  # scales for 16 rows, W has 8
    with pytest.raises(ValueError):  # the C function's own guard
        assert quant_cpu._int8_cpu is not None
        quant_cpu._int8_cpu.linear(0, 0, 0, 0, 8, 48, 16, 2)


def test_without_the_kernel_the_layer_runs_pytorchs(monkeypatch):
    monkeypatch.setattr(quant_cpu, "_int8_cpu", None)
    x, q, scale = _case(12, 16, 64)
    layer = CpuInt8Linear(q, scale)
    assert not layer.own_kernel and not own_kernel_available()
    assert torch.equal(layer.matmul(x), torch._weight_int8pack_mm(x, q, scale))
    assert "torch._weight_int8pack_mm (the PneumoView AVX512-BF16 kernel: not built" in int8_kernel_description()
    assert _int8_cpu_plan_summary().endswith("(bf16 compute, torch._weight_int8pack_mm)")
