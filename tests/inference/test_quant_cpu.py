"""CPU int8 / int4 decoder linears: accuracy bounds, batch independence, and the tiny model's labels."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from pneumoview.errors import ConfigError
from pneumoview.inference.quant_cpu import (
    SCALE_SUFFIX,
    CpuInt4Linear,
    CpuInt8Linear,
    install_quantised_linears,
    quantise_int4,
    quantise_int8,
    state_specs,
    state_transform,
)


def test_int8_round_trip_and_layer_match_the_float_layer():
    torch.manual_seed(0)
    w = torch.randn(64, 256) * 0.02
    q, scale = quantise_int8(w)
    assert q.dtype == torch.int8 and scale.shape == (64,)
    assert (q.float() * scale[:, None] - w).abs().max() <= scale.max() / 2 + 1e-7  # half a step at most
    x = torch.randn(3, 10, 256, dtype=torch.bfloat16)
    ref = torch.nn.functional.linear(x.float(), w)
    out = CpuInt8Linear(q, scale)(x)
    assert out.dtype == torch.bfloat16 and out.shape == (3, 10, 64)
    assert (out.float() - ref).abs().max() < 0.03 * ref.abs().max()


def test_int8_result_of_an_image_does_not_depend_on_its_batch_mates():
    torch.manual_seed(1)
    layer = CpuInt8Linear(*quantise_int8(torch.randn(32, 128)))
    a, b = torch.randn(1, 10, 128), 50 * torch.randn(1, 10, 128)  # b would change a per-tensor activation scale
    alone = layer(a)
    together = layer(torch.cat([a, b]))[:1]
    assert torch.equal(alone, together)


def test_int4_layer_matches_the_float_layer_within_4_bit_error():
    torch.manual_seed(2)
    w = torch.randn(32, 256) * 0.02
    packed, sz = quantise_int4(w, 128)
    assert packed.dtype == torch.uint8 and sz.shape == (2, 32, 2)
    x = torch.randn(5, 256)
    ref = torch.nn.functional.linear(x, w)
    out = CpuInt4Linear(packed, sz, 128)(x)
    err = (out.float() - ref).abs()
    assert err.max() < 0.25 * ref.abs().max() and err.mean() < 0.05 * ref.abs().mean() * 4


def test_transform_quantises_linear_weights_only_and_install_checks_shapes():
    t = state_transform("int8", torch.bfloat16)
    out = t("layers.0.mlp.up_proj.weight", torch.randn(16, 32))
    assert (
        out["layers.0.mlp.up_proj.weight"].dtype == torch.int8 and "layers.0.mlp.up_proj.weight" + SCALE_SUFFIX in out
    )
    assert (
        t("layers.0.input_layernorm.weight", torch.ones(32))["layers.0.input_layernorm.weight"].dtype == torch.bfloat16
    )
    parent = torch.nn.Module()
    parent.proj = torch.nn.Linear(32, 16, bias=False)
    with pytest.raises(ConfigError, match="lack"):
        install_quantised_linears(parent, {}, "int8")
    with pytest.raises(ConfigError, match="does not fit"):
        install_quantised_linears(
            parent,
            {"proj.weight": torch.zeros(8, 32, dtype=torch.int8), "proj.weight" + SCALE_SUFFIX: torch.ones(8)},
            "int8",
        )
    with pytest.raises(ConfigError, match="must be one of"):
        state_transform("int3", None)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_specs_announce_exactly_what_the_transform_makes(mode):
    """The streaming cache writer's header comes from ``state_specs``: it must match every entry."""
    specs, transform = state_specs(mode, torch.bfloat16), state_transform(mode, torch.bfloat16)
    cases = [
        ("layers.0.mlp.up_proj.weight", (32, 256)),  # int4 group 128
        ("layers.0.self_attn.q_proj.weight", (16, 96)),  # int4 group 32
        ("layers.1.mlp.down_proj.weight", (16, 40)),  # no int4 group divides 40: int8
        ("layers.1.self_attn.k_proj.weight", (24, 64)),  # 16 does not divide 24: int8
        ("layers.0.input_layernorm.weight", (64,)),
        ("norm.weight", (64,)),
    ]
    for name, shape in cases:
        made = transform(name, torch.randn(shape, dtype=torch.float32))
        assert specs(name, torch.float32, shape) == {k: (v.dtype, tuple(v.shape)) for k, v in made.items()}, name


@pytest.mark.slow
def test_int8_tiny_model_gives_the_bf16_labels_on_cxr_labelled(tmp_path, monkeypatch, shared_data):
    from pneumoview.inference.demo import ensure_demo_model
    from pneumoview.inference.engine import InferenceEngine

    folder = shared_data / "cxr-labelled"
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path))
    demo = ensure_demo_model(tmp_path / "demo")
    with open(folder / "labels.csv", newline="", encoding="utf-8") as f:
        files = [folder / row["file"] for row in csv.DictReader(f)]
    assert len(files) >= 32
    engines = {
        q: InferenceEngine.load(
            demo.bundle, clip_path=demo.clip, llama_path=demo.llama, device="cpu", precision="bf16", quantisation=q
        )
        for q in ("none", "int8")
    }
    assert engines["int8"].plan.quantisation == "int8"
    crops = np.stack([engines["none"].prepare(p).crop for p in files])
    probs = {q: e.probabilities(crops) for q, e in engines.items()}
    delta = np.abs(probs["int8"] - probs["none"])
    assert np.median(delta) < 1e-3 and delta.max() < 5e-3, (np.median(delta), delta.max())
    # The app's threshold, and the bf16 median (half the set on each side: the demo model's random
    # weights put every probability within 0.57-0.63, so 0.5 alone would make this test trivial).
    for threshold in (0.5, float(np.median(probs["none"]))):
        bf16 = [p.class_name for p in engines["none"].predict(crops, threshold=threshold)]
        int8 = [p.class_name for p in engines["int8"].predict(crops, threshold=threshold)]
        clear = np.abs(probs["none"] - threshold) > 1e-3  # farther from the threshold than int8's error bound
        assert clear.sum() >= 90
        assert [a for a, c in zip(bf16, clear) if c] == [b for b, c in zip(int8, clear) if c]
    assert 40 <= sum(c == "pneumoconiosis" for c in bf16) <= 60  # the median threshold splits the set


def test_int8_quantised_while_streaming_equals_quantising_the_materialised_decoder(tmp_path, monkeypatch):
    """The reader quantises each tensor as it is mapped (the bf16 decoder never exists whole); the
    result is exactly the materialised bf16 decoder quantised afterwards, weights and probabilities."""
    from pneumoview.inference.bundle import load_bundle
    from pneumoview.inference.demo import ensure_demo_model
    from pneumoview.inference.engine import InferenceEngine, _assemble
    from pneumoview.inference.weights import read_clip_visual, read_llama_decoder

    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    demo = ensure_demo_model(tmp_path / "demo")
    streamed = InferenceEngine.load(
        demo.bundle,
        clip_path=demo.clip,
        llama_path=demo.llama,
        device="cpu",
        precision="bf16",
        quantisation="int8",
        prepared_cache=False,
    )
    whole = read_llama_decoder(demo.llama).state  # every tensor in memory first, as stored (quantised from that)
    transform = state_transform("int8", torch.bfloat16)
    quantised: dict[str, torch.Tensor] = {}
    for name, tensor in whole.items():
        quantised.update(transform(name, tensor))
    layers = {n: m for n, m in streamed.model.decoder.named_modules() if isinstance(m, CpuInt8Linear)}
    assert len(layers) == 7 * streamed.config.decoder.layers
    for name, layer in layers.items():
        assert torch.equal(layer.qweight[:, : layer.in_features], quantised[f"{name}.weight"])
        assert torch.equal(layer.scale, quantised[f"{name}.weight{SCALE_SUFFIX}"])
    visual = read_clip_visual(demo.clip, dtype=torch.bfloat16).state
    _manifest, trained = load_bundle(demo.bundle)
    materialised = _assemble(streamed.config, streamed.plan, visual, quantised, trained)
    pixels = streamed._prepare(np.random.default_rng(5).random((3, 224, 224), dtype=np.float32))
    with torch.inference_mode():
        assert torch.equal(streamed.model(pixels), materialised(pixels))


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantised_layers_give_the_input_gradient_of_their_dequantised_weight(mode):
    """Gradient x activation maps backpropagate through the frozen quantised layers (the kernels
    themselves have no derivative): dL/dx must be dL/dy times the weight the kernel applies."""
    torch.manual_seed(4)
    w = torch.randn(32, 256) * 0.02
    layer = CpuInt8Linear(*quantise_int8(w)) if mode == "int8" else CpuInt4Linear(*quantise_int4(w, 128), 128)
    dense = layer.matmul(torch.eye(256, dtype=torch.bfloat16)).t().float()  # [N, K]: the weight as applied
    assert (dense - w).abs().max() < (0.02 if mode == "int8" else 0.15) * w.abs().max()  # it is w, quantised
    torch.testing.assert_close(layer.dequantised().float(), dense, rtol=2**-7, atol=0)  # within a bf16 step
    x = torch.randn(2, 5, 256, requires_grad=True)
    grad_out = torch.randn(2, 5, 32)
    layer(x).backward(grad_out)
    want = (grad_out.reshape(-1, 32) @ dense).reshape(2, 5, 256)
    torch.testing.assert_close(x.grad, want, rtol=2e-2, atol=2e-2 * want.abs().max().item())
    with torch.inference_mode():  # the inference path is untouched by the autograd wrapper
        assert torch.equal(
            layer(x.detach()), layer.matmul(x.detach().reshape(-1, 256).bfloat16()).reshape(2, 5, 32).float()
        )
