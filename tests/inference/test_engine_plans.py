"""The device / precision / quantisation pre-flight, with the probes given explicitly (no GPU here)."""

from __future__ import annotations

import pytest
import torch

from pneumoview.errors import ConfigError, InsufficientMemoryError
from pneumoview.inference.config import load_config
from pneumoview.inference.plans import choose_plan, estimate_bytes, parameter_split, quantise_decoder_linears

GB = 1024**3


@pytest.fixture(scope="module")
def full():
    return load_config("pneumollm-vitl14-llama7b")


def cuda_plan(config, free_gb: float, **kw):
    kw = {"cuda": True, "cuda_bf16": True, "bnb": True, "batch_size": 8} | kw
    return choose_plan(config, device="auto", free_bytes=int(free_gb * GB), **kw)


def test_parameter_split_of_the_full_model_matches_the_spec(full):
    split = parameter_split(full)
    assert split["trainable"] == 2_704_000  # PNEUMOLLM-SPEC's structural check
    assert 300e6 < split["vision"] < 310e6  # CLIP ViT-L/14 visual tower
    assert 6.4e9 < split["decoder_linear"] < 6.5e9  # 32 LLaMA-7B layers, no embeddings / LM head


def test_memory_estimates_are_in_the_right_range(full):
    bf16 = estimate_bytes(
        full, vision_dtype=torch.bfloat16, decoder_dtype=torch.bfloat16, quantisation=None, batch_size=1
    )
    nf4 = estimate_bytes(
        full, vision_dtype=torch.bfloat16, decoder_dtype=torch.bfloat16, quantisation="nf4", batch_size=1
    )
    int8 = estimate_bytes(
        full, vision_dtype=torch.bfloat16, decoder_dtype=torch.bfloat16, quantisation="int8", batch_size=1
    )
    assert 12.5 * GB < bf16 < 14 * GB
    assert 6 * GB < int8 < 7.5 * GB
    assert 3 * GB < nf4 < 4.5 * GB
    big = estimate_bytes(
        full, vision_dtype=torch.bfloat16, decoder_dtype=torch.bfloat16, quantisation=None, batch_size=64
    )
    assert big > bf16  # activations grow with the batch


def test_cuda_picks_full_bf16_then_8bit_then_4bit_as_memory_shrinks(full):
    assert cuda_plan(full, 80).quantisation is None and cuda_plan(full, 80).vision_dtype == torch.bfloat16
    assert cuda_plan(full, 11).quantisation == "int8"
    assert cuda_plan(full, 6).quantisation == "nf4"
    assert cuda_plan(full, 6).decoder_dtype == torch.bfloat16
    assert "bitsandbytes" in cuda_plan(full, 6).reason
    with pytest.raises(InsufficientMemoryError, match=r"3\.0 GB free"):
        cuda_plan(full, 3)


def test_cuda_without_bitsandbytes_or_bf16(full):
    with pytest.raises(InsufficientMemoryError, match="bitsandbytes"):
        cuda_plan(full, 10, bnb=False)
    old_gpu = cuda_plan(full, 40, cuda_bf16=False)
    assert old_gpu.vision_dtype == old_gpu.decoder_dtype == torch.float16
    with pytest.raises(ConfigError, match="bf16"):
        cuda_plan(full, 40, cuda_bf16=False, precision="bf16")
    with pytest.raises(ConfigError, match="bitsandbytes"):
        cuda_plan(full, 40, bnb=False, quantisation="nf4")
    assert cuda_plan(full, 40, quantisation="nf4").quantisation == "nf4"  # asked for explicitly
    with pytest.raises(InsufficientMemoryError):
        cuda_plan(full, 10, quantisation="none")


def test_cpu_plan_and_impossible_requests(full):
    cpu = choose_plan(full, device="auto", cuda=False, mps=False, free_bytes=64 * GB, cpu_bf16=False)
    assert (cpu.device, cpu.vision_dtype, cpu.decoder_dtype, cpu.quantisation) == (
        "cpu",
        torch.float32,
        torch.bfloat16,
        None,
    )
    fast = choose_plan(full, device="cpu", cuda=False, free_bytes=64 * GB, cpu_bf16=True)
    assert fast.vision_dtype == fast.decoder_dtype == torch.bfloat16 and "AVX512-BF16" in fast.reason
    assert "warning" not in cpu.reason
    # Short of RAM: 8-bit LLaMA linears (then 4-bit), chosen automatically; below that it warns.
    tight = choose_plan(full, device="cpu", cuda=False, free_bytes=8 * GB)
    assert tight.quantisation == "int8" and "8.0 GB of RAM free" in tight.reason and "warning" not in tight.reason
    assert choose_plan(full, device="cpu", cuda=False, free_bytes=5 * GB).quantisation == "int4"
    assert "warning" in choose_plan(full, device="cpu", cuda=False, free_bytes=2 * GB).reason  # runs, says so
    assert choose_plan(full, device="cpu", quantisation="none", cuda=False, free_bytes=8 * GB).quantisation is None
    asked = choose_plan(full, device="cpu", quantisation="int8", cuda=False, free_bytes=64 * GB)
    assert asked.quantisation == "int8" and "as asked" in asked.reason and "8-bit" in asked.describe()
    assert (
        choose_plan(full, device="cpu", precision="fp32", cuda=False, free_bytes=64 * GB).decoder_dtype == torch.float32
    )
    nf4 = choose_plan(full, device="cpu", quantisation="nf4", cuda=False, free_bytes=64 * GB)
    assert nf4.quantisation == "int4" and "NF4 needs a CUDA GPU" in nf4.reason  # 4-bit, the CPU's kernel
    with pytest.raises(ConfigError, match="Apple"):
        choose_plan(full, device="mps", quantisation="int8", mps=True, free_bytes=64 * GB)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        choose_plan(full, device="cuda", cuda=False)
    with pytest.raises(ConfigError, match="device"):
        choose_plan(full, device="tpu")
    with pytest.raises(ConfigError, match="precision"):
        choose_plan(full, precision="fp8")
    mps = choose_plan(full, device="auto", cuda=False, mps=True, free_bytes=64 * GB)
    assert mps.device == "mps" and mps.vision_dtype == torch.float16


def test_plan_describe_is_one_readable_line(full):
    line = cuda_plan(full, 11).describe()
    assert "\n" not in line and "8-bit" in line and "11.0 GB free" in line


def test_quantisation_is_refused_off_cuda():
    layer = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ConfigError, match="CUDA"):
        quantise_decoder_linears(layer, "nf4", device="cpu", compute_dtype=torch.bfloat16)
