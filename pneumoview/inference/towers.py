"""The two frozen backbones: open_clip's CLIP ``VisionTransformer`` and transformers' ``LlamaModel``.

Both are the libraries' own modules, so pretrained state dicts load with their own key names:
the visual tower's keys are open_clip's ``visual.*`` keys without the prefix (``conv1.weight``,
``transformer.resblocks.0.ln_1.weight``, ..., ``ln_post.*``, ``proj``), the decoder's are HF
``LlamaModel`` keys (``layers.0.self_attn.q_proj.weight``, ..., ``norm.weight``) without
``embed_tokens`` (PneumoLLM feeds ``inputs_embeds``; no vocabulary is ever allocated).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pneumoview.inference.config import DecoderConfig, VisionConfig

if TYPE_CHECKING:  # heavy imports, only for the annotations
    from open_clip.transformer import VisionTransformer
    from transformers import LlamaConfig, LlamaModel


def build_vision_tower(cfg: VisionConfig) -> VisionTransformer:
    """open_clip ``VisionTransformer`` with QuickGELU when ``cfg.quick_gelu`` (OpenAI CLIP weights).

    open_clip's plain ``ViT-L-14`` config uses ``nn.GELU`` and silently gives different outputs
    with OpenAI weights; ``quick_gelu=True`` here matches ``ViT-L-14-quickgelu``. Built on the
    current default device (use ``with torch.device("meta")`` for an empty tower).
    """
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    vision_cfg = CLIPVisionCfg(
        layers=cfg.layers,
        width=cfg.width,
        head_width=cfg.head_width,
        mlp_ratio=cfg.mlp_ratio,
        patch_size=cfg.patch_size,
        image_size=cfg.image_size,
    )
    return _build_vision_tower(cfg.output_dim, vision_cfg, quick_gelu=cfg.quick_gelu, cast_dtype=None)


def llama_config(cfg: DecoderConfig) -> LlamaConfig:
    """transformers ``LlamaConfig`` for the decoder stack (vocab_size 1: the embedding is dropped)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=1,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        hidden_act="silu",
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
        attention_bias=False,
        attention_dropout=0.0,
        mlp_bias=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=False,
        use_cache=False,
        # PretrainedConfig takes it at run time; LlamaConfig's annotated signature does not list it.
        attn_implementation=cfg.attn_implementation,  # type: ignore[call-arg]
    )


def build_decoder(cfg: DecoderConfig) -> LlamaModel:
    """HF ``LlamaModel`` without ``embed_tokens`` (set to None), on the current default device."""
    from transformers import LlamaModel

    decoder = LlamaModel(llama_config(cfg))
    decoder.embed_tokens = None  # type: ignore[assignment]  # deliberately dropped: PneumoLLM feeds inputs_embeds
    return decoder


def reset_rotary(decoder: LlamaModel, device: torch.device | str) -> None:
    """Recompute the rotary ``inv_freq`` buffers (float32) on ``device``.

    They are non-persistent buffers: never in a state dict, garbage after ``to_empty()`` from the
    meta device, and rounded if the module is cast to bf16/fp16. Call after any of those.
    """
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    with torch.device(device):
        decoder.rotary_emb = LlamaRotaryEmbedding(config=decoder.config)


def vision_norms(visual: VisionTransformer) -> list[nn.Module]:
    """The pre-attention norm (``ln_1``) of each CLIP residual block."""
    return [block.ln_1 for block in visual.transformer.resblocks]


def decoder_norms(decoder: LlamaModel) -> list[nn.Module]:
    """The pre-attention norm (``input_layernorm``) of each LLaMA decoder layer."""
    norms = []
    for layer in decoder.layers:
        norm = layer.input_layernorm
        assert isinstance(norm, nn.Module)  # a LlamaRMSNorm in every LlamaDecoderLayer
        norms.append(norm)
    return norms


def class_tokens(visual: VisionTransformer, pixels: Tensor, layers: tuple[int, ...]) -> Tensor:
    """Raw residual-stream class token after each block in ``layers`` (0-based): [B, len(layers), W].

    Uses open_clip's ``forward_intermediates(..., output_extra_tokens=True, intermediates_only=True)``:
    the prefix (class) token of each selected block's output, with no ``ln_post`` and no projection.
    """
    out = visual.forward_intermediates(
        pixels,
        indices=list(layers),
        stop_early=True,
        normalize_intermediates=False,
        intermediates_only=True,
        output_fmt="NLC",
        output_extra_tokens=True,
    )
    prefix = out["image_intermediates_prefix"]  # list of [B, 1, W]
    return torch.cat(prefix, dim=1)
