"""PneumoLLM assembled: the structural checks that prove it is the reference's model.

Full size is only ever built on the meta device (no memory); behaviour is tested at tiny size
on the same code path.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from pneumoview.errors import BundleError, ConfigError, WeightsError
from pneumoview.inference.config import FULL_CONFIG, TINY_CONFIG, load_config
from pneumoview.inference.model import (
    TRAINABLE_MODULES,
    PneumoLLM,
    build_model,
    count_parameters,
    decoder_state_keys,
    emitter_mask,
    load_base_weights,
    load_trainable_state_dict,
    materialize,
    trainable_parameters,
    trainable_state_dict,
    visual_state_keys,
)
from pneumoview.inference.transforms import preprocess_tensor


def tiny(impl: str = "sdpa", *, seed: int = 0, use_engine: bool = True, **kwargs) -> PneumoLLM:
    torch.manual_seed(seed)
    config = load_config(TINY_CONFIG).with_attn_implementation(impl).replace(use_engine=use_engine)
    return build_model(config, **kwargs)


def randomise_trainables(model: PneumoLLM, seed: int = 1) -> None:
    """Give every trainable tensor (including the zero-initialised D) non-trivial values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in trainable_parameters(model):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    torch.manual_seed(123)
    return torch.randn(2, 3, 224, 224)


# --- full size on meta ---------------------------------------------------------------------------


def _vit_l14_visual_params() -> int:
    """ViT-L/14 visual tower from its definition (patch 14, width 1024, 24 blocks, 257 tokens, proj 768)."""
    w, layers, mlp, tokens, out = 1024, 24, 4096, (224 // 14) ** 2 + 1, 768
    block = 2 * w + (3 * w * w + 3 * w) + (w * w + w) + 2 * w + (w * mlp + mlp) + (mlp * w + w)
    return 3 * 14 * 14 * w + w + tokens * w + 2 * w + layers * block + 2 * w + w * out


def _llama7b_decoder_params() -> int:
    """32 LLaMA-7B layers (no embeddings, no LM head) + final norm."""
    h, inter, layers = 4096, 11008, 32
    return layers * (4 * h * h + 3 * h * inter + 2 * h) + h


def test_full_size_on_meta_counts_exactly_2_704_000_trainable() -> None:
    psutil = pytest.importorskip("psutil")
    build_model(load_config(TINY_CONFIG), device="meta")  # imports open_clip/transformers first
    rss_before = psutil.Process().memory_info().rss
    model = build_model(load_config(FULL_CONFIG), device="meta")
    rss_growth = psutil.Process().memory_info().rss - rss_before
    assert all(t.is_meta for t in model.state_dict().values())
    # real fp32 weights would be ~27 GB
    assert rss_growth < 200 * 2**20, f"meta build allocated {rss_growth / 2**20:.0f} MiB"

    counts = count_parameters(model)
    assert counts["trainable"] == 2_704_000
    # the spec's table, part by part
    assert counts["decoder_adapters"] == 1_704_192
    assert counts["vision_adapters"] == 319_680
    assert counts["projection"] == 659_584
    assert counts["head"] == 8_192
    assert counts["engine"] == 12_352
    assert counts["vision"] == _vit_l14_visual_params()
    assert counts["decoder"] == _llama7b_decoder_params()
    assert counts["frozen"] == counts["vision"] + counts["decoder"]
    assert counts["total"] == counts["trainable"] + counts["frozen"]
    assert model.decoder.embed_tokens is None

    simplified = build_model(load_config(FULL_CONFIG).replace(use_engine=False), device="meta")
    assert count_parameters(simplified)["trainable"] == 2_691_648
    assert simplified.engine is None


def test_full_size_state_keys_are_the_pretrained_ones() -> None:
    """Adapters hooked on the norms leave open_clip's and transformers' key names untouched."""
    import open_clip
    from transformers import LlamaConfig, LlamaModel

    model = build_model(load_config(FULL_CONFIG), device="meta")
    clip_cfg = open_clip.get_model_config("ViT-L-14-quickgelu")
    assert clip_cfg["quick_gelu"] is True
    with torch.device("meta"):
        clip = open_clip.model.CLIP(**clip_cfg)
        llama = LlamaModel(
            LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)
        )
    clip_visual = {k[len("visual.") :]: tuple(v.shape) for k, v in clip.state_dict().items() if k.startswith("visual.")}
    ours = {k: tuple(v.shape) for k, v in model.visual.state_dict().items()}
    assert ours == clip_visual
    assert visual_state_keys(model) == list(clip_visual)
    hf = {k: tuple(v.shape) for k, v in llama.state_dict().items() if not k.startswith("embed_tokens")}
    assert {k: tuple(v.shape) for k, v in model.decoder.state_dict().items()} == hf
    assert decoder_state_keys(model) == list(hf)
    assert not any("adapter" in k for k in visual_state_keys(model) + decoder_state_keys(model))


def test_quick_gelu_and_hf_settings() -> None:
    from open_clip.transformer import QuickGELU

    model = build_model(load_config(FULL_CONFIG), device="meta")
    assert all(isinstance(b.mlp.gelu, QuickGELU) for b in model.visual.transformer.resblocks)
    hf = model.decoder.config
    assert hf.rope_parameters["rope_theta"] == 10000.0 and hf.rms_norm_eps == 1e-6
    assert hf._attn_implementation == "sdpa"


# --- trainability -----------------------------------------------------------------------------------


def test_only_adapters_engine_projection_head_require_grad(pixels: torch.Tensor) -> None:
    model = tiny().train()
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith(TRAINABLE_MODULES), name
    for name in TRAINABLE_MODULES:
        assert all(p.dtype == torch.float32 for p in getattr(model, name).parameters())
    randomise_trainables(model)
    model(pixels[:1]).sum().backward()
    for name, param in model.named_parameters():
        if name.startswith(TRAINABLE_MODULES):
            assert param.grad is not None and torch.count_nonzero(param.grad) > 0, name
        else:
            assert param.grad is None, name
    assert sum(p.numel() for p in trainable_parameters(model)) == count_parameters(model)["trainable"]


# --- source tokens ----------------------------------------------------------------------------------


def _manual_class_tokens(visual: nn.Module, pixels: torch.Tensor, layers: tuple[int, ...]) -> torch.Tensor:
    """Class token of the residual stream after the given blocks, written out by hand (no ln_post/proj)."""
    x = visual.conv1(pixels).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.expand(x.shape[0], 1, -1)
    x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding)
    out = []
    for i, block in enumerate(visual.transformer.resblocks):
        x = block(x)
        if i in layers:
            out.append(x[:, 0])
    return torch.stack(out, dim=1)


def test_source_tokens_are_raw_class_tokens_and_fresh_adapters_are_identity(pixels: torch.Tensor) -> None:
    model = tiny()
    frozen_tower = copy.deepcopy(model.visual)
    for module in frozen_tower.modules():  # the same tower without any adapter hook
        module._forward_hooks.clear()
    with torch.no_grad():
        got = model.source_tokens(pixels)
        expected = _manual_class_tokens(frozen_tower, pixels, model.config.vision.source_layers)
        after_ln_post = frozen_tower.ln_post(expected)
    assert got.shape == (2, model.config.num_source_tokens, model.config.vision.width)
    assert torch.equal(got, expected)
    assert not torch.allclose(got, after_ln_post)


def test_vision_adapters_act_inside_forward_intermediates(pixels: torch.Tensor) -> None:
    model = tiny()
    with torch.no_grad():
        before = model.source_tokens(pixels)
        nn.init.normal_(model.vision_adapters[0].conv_D.weight, std=0.1)
        after = model.source_tokens(pixels)
        # the first block's adapter changes every later class token
        assert not torch.allclose(before, after)
        expected = _manual_class_tokens(model.visual, pixels, model.config.vision.source_layers)
    assert torch.equal(after, expected)  # the hook acts the same in plain block calls


def test_decoder_adapters_change_logits(pixels: torch.Tensor) -> None:
    model = tiny()
    with torch.no_grad():
        before = model(pixels)
        nn.init.normal_(model.decoder_adapters[-1].conv_D.weight, std=0.5)
        after = model(pixels)
    assert not torch.allclose(before, after)


# --- information emitter ------------------------------------------------------------------------------


def test_emitter_mask_values() -> None:
    mask = emitter_mask(6, 10, batch=3)
    assert mask.shape == (3, 1, 10, 10) and mask.dtype == torch.float32
    assert torch.all(mask[..., :6] == 0)
    assert torch.all(torch.isneginf(mask[..., 6:]))


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_emitter_source_outputs_ignore_diagnosis_tokens(impl: str) -> None:
    model = tiny(impl)
    assert model.decoder.config._attn_implementation == impl
    s, n, h = model.config.num_source_tokens, model.config.num_tokens, model.config.decoder.hidden_size
    generator = torch.Generator().manual_seed(7)
    y = torch.randn(3, n, h, generator=generator)
    y_other = y.clone()
    y_other[:, s:] = 5 * torch.randn(3, n - s, h, generator=generator)
    with torch.no_grad():
        a, b = model.decode(y), model.decode(y_other)
    assert torch.equal(a[:, :s], b[:, :s])  # exactly unchanged
    assert not torch.allclose(a[:, s:], b[:, s:])


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_emitter_is_not_causal_and_diagnosis_tokens_ignore_each_other(impl: str) -> None:
    model = tiny(impl)
    s, n, h = model.config.num_source_tokens, model.config.num_tokens, model.config.decoder.hidden_size
    y = torch.randn(1, n, h, generator=torch.Generator().manual_seed(8))
    later_source = y.clone()
    later_source[:, s - 1] += 1.0  # a later source token
    other_diag = y.clone()
    other_diag[:, n - 1] += 1.0  # the last diagnosis token
    with torch.no_grad():
        base, changed_source, changed_diag = model.decode(y), model.decode(later_source), model.decode(other_diag)
    # source position 0 reads source s-1 (a causal mask would forbid it)
    assert not torch.allclose(base[:, 0], changed_source[:, 0])
    # diagnosis token s reads only source tokens (and its own query), never another diagnosis token
    assert torch.equal(base[:, s : n - 1], changed_diag[:, s : n - 1])


def test_eager_and_sdpa_agree(pixels: torch.Tensor) -> None:
    eager, sdpa = tiny("eager"), tiny("sdpa")
    sdpa.load_state_dict(eager.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(eager(pixels), sdpa(pixels), rtol=1e-5, atol=1e-5)


def test_full_path_source_positions_ignore_the_engine(pixels: torch.Tensor) -> None:
    model = tiny()
    s = model.config.num_source_tokens
    with torch.no_grad():
        before = model.hidden_states(pixels)
        nn.init.normal_(model.engine.linear2.weight, std=3.0)
        after = model.hidden_states(pixels)
    assert torch.equal(before[:, :s], after[:, :s])
    assert not torch.allclose(before[:, s:], after[:, s:])


def test_forward_shapes_head_and_simplified_variant(pixels: torch.Tensor) -> None:
    model = tiny()
    randomise_trainables(model)
    with torch.no_grad():
        logits = model(pixels)
        hidden = model.hidden_states(pixels)
    assert logits.shape == (2, 2) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, hidden.mean(dim=1) @ model.head.fc.weight.T)
    assert hidden.shape == (2, model.config.num_tokens, model.config.decoder.hidden_size)

    simple = tiny(use_engine=False)
    with torch.no_grad():
        assert simple.hidden_states(pixels).shape[1] == simple.config.num_source_tokens
        assert simple(pixels).shape == (2, 2)


def test_batch_items_are_independent(pixels: torch.Tensor) -> None:
    model = tiny()
    randomise_trainables(model)
    with torch.no_grad():
        both = model(pixels)
        first = model(pixels[:1])
    torch.testing.assert_close(both[:1], first, rtol=1e-5, atol=1e-6)


# --- weights: base loading, materialising, trainables ----------------------------------------------------


def test_load_base_weights_into_an_empty_model_reproduces_logits(pixels: torch.Tensor) -> None:
    source = tiny(seed=3)
    randomise_trainables(source)
    visual_state = {k: v.clone() for k, v in source.visual.state_dict().items()}
    decoder_state = {k: v.clone() for k, v in source.decoder.state_dict().items()}
    decoder_state["embed_tokens.weight"] = torch.zeros(10, 64)  # real checkpoints have it: ignored

    empty = build_model(source.config, device="meta")
    load_base_weights(empty, visual_state, decoder_state)
    assert all(not p.requires_grad for p in empty.visual.parameters())
    materialize(empty, "cpu")
    assert torch.count_nonzero(empty.vision_adapters[0].conv_D.weight) == 0  # fresh init
    assert torch.count_nonzero(empty.vision_adapters[0].conv_A.weight) > 0
    load_trainable_state_dict(empty, trainable_state_dict(source))
    torch.testing.assert_close(empty.decoder.rotary_emb.inv_freq, source.decoder.rotary_emb.inv_freq, rtol=0, atol=0)
    with torch.no_grad():
        assert torch.equal(empty(pixels), source(pixels))


def test_empty_base_then_load(pixels: torch.Tensor) -> None:
    source = tiny(seed=4)
    model = build_model(source.config, empty_base=True)
    assert model.decoder.norm.weight.is_meta and not model.head.fc.weight.is_meta
    load_base_weights(model, source.visual.state_dict(), source.decoder.state_dict())
    load_trainable_state_dict(model, trainable_state_dict(source))
    with torch.no_grad():
        assert torch.equal(model(pixels), source(pixels))


def test_materialize_refuses_unloaded_backbones() -> None:
    model = build_model(load_config(TINY_CONFIG), device="meta")
    with pytest.raises(WeightsError, match="never loaded"):
        materialize(model, "cpu")


def test_load_base_weights_reports_missing_unexpected_and_wrong_shapes() -> None:
    source = tiny()
    visual = dict(source.visual.state_dict())
    decoder = dict(source.decoder.state_dict())
    model = build_model(source.config, device="meta")
    broken = dict(visual)
    broken.pop("conv1.weight")
    with pytest.raises(WeightsError, match="missing.*conv1.weight"):
        load_base_weights(model, broken, decoder)
    with pytest.raises(WeightsError, match="unexpected.*text_projection"):
        load_base_weights(model, {**visual, "text_projection": torch.zeros(2)}, decoder)
    wrong = {**decoder, "norm.weight": torch.ones(65)}
    with pytest.raises(WeightsError, match="wrong shapes.*norm.weight"):
        load_base_weights(model, visual, wrong)


def test_low_precision_backbone_keeps_trainables_float32(pixels: torch.Tensor) -> None:
    model = tiny(base_dtype=torch.bfloat16)
    assert model.visual.conv1.weight.dtype == torch.bfloat16 and model.base_dtype == torch.bfloat16
    assert model.decoder.rotary_emb.inv_freq.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in trainable_parameters(model))
    reference = tiny()
    with torch.no_grad():
        logits = model(pixels)
        assert logits.dtype == torch.float32
        torch.testing.assert_close(logits, reference(pixels), atol=0.1, rtol=0.05)


def test_trainable_state_round_trip_and_mismatch() -> None:
    source = tiny(seed=5)
    randomise_trainables(source, seed=9)
    state = trainable_state_dict(source)
    assert all(k.startswith(TRAINABLE_MODULES) for k in state)
    assert sum(v.numel() for v in state.values()) == count_parameters(source)["trainable"]
    target = tiny(seed=6)
    load_trainable_state_dict(target, state)
    assert all(torch.equal(a, b) for a, b in zip(trainable_state_dict(target).values(), state.values()))
    state["head.fc.weight"] = torch.zeros(3, 64)
    with pytest.raises(BundleError, match="wrong shapes"):
        load_trainable_state_dict(target, state)
    with pytest.raises(BundleError, match="unexpected"):
        load_trainable_state_dict(tiny(use_engine=False), trainable_state_dict(source))


# --- preprocessing --------------------------------------------------------------------------------------------


def test_preprocess_tensor_replicates_grey_and_normalises() -> None:
    preprocessing = load_config(FULL_CONFIG).preprocessing
    crops = np.random.default_rng(0).random((2, 224, 224), dtype=np.float32)
    x = preprocess_tensor(crops, preprocessing)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    for c, (m, s) in enumerate(zip(preprocessing.mean, preprocessing.std)):
        torch.testing.assert_close(x[:, c], (torch.from_numpy(crops) - m) / s)
    same = preprocess_tensor(crops[0], preprocessing.to_dict())  # one crop, manifest-style dict
    torch.testing.assert_close(same, x[:1])
    with pytest.raises(ValueError, match="shape"):
        preprocess_tensor(np.zeros((1, 200, 224), np.float32), preprocessing)
    with pytest.raises(ValueError, match="float"):
        preprocess_tensor(np.zeros((1, 224, 224), np.uint8), preprocessing)
    with pytest.raises(ConfigError):
        preprocess_tensor(crops, {"image_size": 224, "mean": [0.5], "std": [0.2, 0.2, 0.2]})


# --- adapters sit exactly where the spec puts them ------------------------------------------------------------


def test_vision_block_is_x_plus_attn_of_adapted_norm() -> None:
    model = tiny()
    block, adapter = model.visual.transformer.resblocks[2], model.vision_adapters[2]
    nn.init.normal_(adapter.conv_D.weight, std=0.2)
    x = torch.randn(2, 5, model.config.vision.width)
    with torch.no_grad():
        h = adapter(nn.functional.layer_norm(x, (x.shape[-1],), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps))
        y = x + block.attn(h, h, h, need_weights=False)[0]
        y = y + block.mlp(block.ln_2(y))
        torch.testing.assert_close(block(x), y)


def test_decoder_layer_is_residual_plus_attn_of_adapted_norm() -> None:
    model = tiny()
    layer, adapter = model.decoder.layers[1], model.decoder_adapters[1]
    nn.init.normal_(adapter.conv_D.weight, std=0.2)
    n, hidden = model.config.num_tokens, model.config.decoder.hidden_size
    x = torch.randn(2, n, hidden)
    positions = torch.arange(n).unsqueeze(0).expand(2, n)
    mask = emitter_mask(model.config.num_source_tokens, n, batch=2)
    with torch.no_grad():
        cos_sin = model.decoder.rotary_emb(x, positions)
        norm = layer.input_layernorm
        variance = x.pow(2).mean(-1, keepdim=True)
        h = adapter(norm.weight * (x * torch.rsqrt(variance + norm.variance_epsilon)))
        attn = layer.self_attn(hidden_states=h, attention_mask=mask, position_embeddings=cos_sin)[0]
        y = x + attn
        y = y + layer.mlp(layer.post_attention_layernorm(y))
        got = layer(x, attention_mask=mask, position_ids=positions, position_embeddings=cos_sin)
    torch.testing.assert_close(got, y)


def test_deepcopy_keeps_its_own_adapters(pixels: torch.Tensor) -> None:
    model = tiny()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        before = model(pixels)
        nn.init.normal_(twin.decoder_adapters[0].conv_D.weight, std=0.5)
        assert torch.equal(model(pixels), before)  # the original's hooks use the original's adapters
        assert not torch.allclose(twin(pixels), before)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_emitter_holds_in_bfloat16(impl: str) -> None:
    model = tiny(impl, base_dtype=torch.bfloat16)
    s, n, h = model.config.num_source_tokens, model.config.num_tokens, model.config.decoder.hidden_size
    y = torch.randn(2, n, h, generator=torch.Generator().manual_seed(11))
    y_other = y.clone()
    y_other[:, s:] = -y_other[:, s:] * 3
    with torch.no_grad():
        assert torch.equal(model.decode(y)[:, :s], model.decode(y_other)[:, :s])


def test_gradient_checkpointing_gives_the_same_gradients(pixels: torch.Tensor) -> None:
    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = tiny(seed=12)
        randomise_trainables(model, seed=13)
        model.set_gradient_checkpointing(checkpointing)
        assert model.visual.transformer.grad_checkpointing is checkpointing
        assert all(layer.gradient_checkpointing is checkpointing for layer in model.decoder.layers)
        model.train()
        torch.manual_seed(14)  # same adapter-dropout masks in both runs
        model(pixels[:1]).logsumexp(dim=-1).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)


# --- against independent implementations ----------------------------------------------------------------------


def test_last_source_token_through_ln_post_and_proj_is_clips_image_embedding(pixels: torch.Tensor) -> None:
    """Our tower is open_clip's OpenAI-style CLIP tower: same weights -> same image embedding."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    model = tiny()
    v = model.config.vision
    assert v.source_layers[-1] == v.layers - 1

    def clip_model(quick_gelu: bool) -> nn.Module:
        return CLIP(
            embed_dim=v.output_dim,
            quick_gelu=quick_gelu,
            vision_cfg=CLIPVisionCfg(
                layers=v.layers,
                width=v.width,
                head_width=v.head_width,
                patch_size=v.patch_size,
                image_size=v.image_size,
            ),
            text_cfg=CLIPTextCfg(context_length=8, vocab_size=10, width=32, heads=2, layers=1),
        ).eval()

    torch.manual_seed(21)
    clip = clip_model(quick_gelu=True)
    gelu_clip = clip_model(quick_gelu=False)  # open_clip's plain config: nn.GELU
    gelu_clip.load_state_dict(clip.state_dict())
    load_base_weights(
        model,
        {k[len("visual.") :]: t for k, t in clip.state_dict().items() if k.startswith("visual.")},
        model.decoder.state_dict(),
    )
    with torch.no_grad():
        ours = model.visual.ln_post(model.source_tokens(pixels)[:, -1]) @ model.visual.proj
        theirs = clip.encode_image(pixels)
        with_gelu = gelu_clip.encode_image(pixels)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, with_gelu, rtol=1e-3, atol=1e-3)  # the activation matters


def _meta_llama_forward(model: PneumoLLM, y: torch.Tensor) -> torch.Tensor:
    """The reference's LLM part written the way Meta's llama/model.py writes it (complex rotary,
    un-permuted wq/wk, additive mask), with the reference adapter on attention_norm's output."""
    cfg = model.config.decoder
    n_heads, dim = cfg.heads, cfg.hidden_size
    head_dim = dim // n_heads
    bsz, seqlen, _ = y.shape

    def unpermute(w: torch.Tensor) -> torch.Tensor:  # inverse of HF's convert_llama_weights_to_hf permute
        return w.view(n_heads, 2, dim // n_heads // 2, dim).transpose(1, 2).reshape(dim, dim)

    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps) * weight

    freqs = 1.0 / (cfg.rope_theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    freqs_cis = torch.polar(torch.ones(seqlen, head_dim // 2), torch.outer(torch.arange(seqlen).float(), freqs))
    freqs_cis = freqs_cis.view(1, seqlen, 1, head_dim // 2)

    def rotary(x: torch.Tensor) -> torch.Tensor:
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs_cis).flatten(3)

    mask = torch.zeros(seqlen, seqlen)
    mask[:, model.config.num_source_tokens :] = float("-inf")
    h = y
    for layer, adapter in zip(model.decoder.layers, model.decoder_adapters):
        attn = layer.self_attn
        x = adapter(rms(h, layer.input_layernorm.weight))
        xq = (x @ unpermute(attn.q_proj.weight).T).view(bsz, seqlen, n_heads, head_dim)
        xk = (x @ unpermute(attn.k_proj.weight).T).view(bsz, seqlen, n_heads, head_dim)
        xv = (x @ attn.v_proj.weight.T).view(bsz, seqlen, n_heads, head_dim)
        xq, xk = rotary(xq), rotary(xk)
        q, k, v = xq.transpose(1, 2), xk.transpose(1, 2), xv.transpose(1, 2)
        scores = (q @ k.transpose(2, 3)) / head_dim**0.5 + mask
        out = (scores.float().softmax(dim=-1) @ v).transpose(1, 2).reshape(bsz, seqlen, dim)
        h = h + out @ attn.o_proj.weight.T
        m = layer.mlp
        f = rms(h, layer.post_attention_layernorm.weight)
        h = h + (nn.functional.silu(f @ m.gate_proj.weight.T) * (f @ m.up_proj.weight.T)) @ m.down_proj.weight.T
    return rms(h, model.decoder.norm.weight)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_decoder_matches_a_meta_style_llama_with_reference_adapters(impl: str) -> None:
    model = tiny(impl, seed=30)
    randomise_trainables(model, seed=31)
    y = torch.randn(
        2, model.config.num_tokens, model.config.decoder.hidden_size, generator=torch.Generator().manual_seed(32)
    )
    with torch.no_grad():
        ours = model.decode(y)
        reference = _meta_llama_forward(model, y)
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            model.head(ours), reference.mean(dim=1) @ model.head.fc.weight.T, rtol=1e-4, atol=1e-5
        )


def test_engine_and_projection_follow_the_spec() -> None:
    model = tiny()
    randomise_trainables(model, seed=40)
    x = torch.randn(
        2, model.config.num_source_tokens, model.config.vision.width, generator=torch.Generator().manual_seed(41)
    )
    e, p = model.engine, model.projection
    with torch.no_grad():
        scores = torch.relu(x @ e.linear1.weight.T + e.linear1.bias) @ e.linear2.weight.T + e.linear2.bias  # [B,S,K]
        weights = torch.softmax(scores.transpose(1, 2), dim=-1)  # softmax over the S source tokens
        expected_tokens = torch.cat([x, weights @ x], dim=1)
        torch.testing.assert_close(model.tokens(x), expected_tokens)
        z = expected_tokens @ p.linear1.weight.T + p.linear1.bias
        torch.testing.assert_close(
            model.projection(expected_tokens), nn.functional.silu(z) @ p.linear2.weight.T + p.linear2.bias
        )
    assert model.tokens(x).shape[1] == model.config.num_tokens
