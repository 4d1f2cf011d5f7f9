"""PneumoLLM assembled: CLIP visual tower -> source tokens -> multi-token engine -> projection ->
LLaMA decoder layers under the information-emitter mask -> final norm -> mean pool -> 2-way head.

Shapes for the full model (batch B): pixels [B, 3, 224, 224] -> source tokens X [B, 6, 1024]
-> diagnosis tokens [B, 4, 1024] -> [B, 10, 1024] -> projection [B, 10, 4096] -> decoder
[B, 10, 4096] -> logits [B, 2] (index 0 = pneumoconiosis). See ``/work/shared/PNEUMOLLM-SPEC.md``.

Typical use with real base weights (no full-size random init is ever allocated)::

    model = build_model(load_config("pneumollm-vitl14-llama7b"), device="meta")
    load_base_weights(model, visual_state, decoder_state)     # assign=True: no extra copy
    materialize(model, "cuda", torch.float16)                  # trainables fp32, rotary rebuilt
    load_trainable_state_dict(model, bundle_tensors)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pneumoview.errors import BundleError, WeightsError
from pneumoview.inference.adapters import Adapter, attach_adapters, freeze, make_adapters
from pneumoview.inference.config import PneumoLLMConfig, tensor_fit_problems
from pneumoview.inference.heads import ClassifierHead, MultiTokenEngine, VisualProjection
from pneumoview.inference.towers import (
    build_decoder,
    build_vision_tower,
    class_tokens,
    decoder_norms,
    reset_rotary,
    vision_norms,
)

if TYPE_CHECKING:  # heavy imports, only for the annotations
    from open_clip.transformer import VisionTransformer
    from transformers import LlamaModel

#: Submodules of :class:`PneumoLLM` that are trained (and saved in a bundle); all float32.
TRAINABLE_MODULES = ("vision_adapters", "decoder_adapters", "engine", "projection", "head")
#: Keys a decoder state dict may carry that PneumoLLM does not use (ignored by load_base_weights).
IGNORED_DECODER_KEYS = ("embed_tokens.weight", "rotary_emb.inv_freq")


def emitter_mask(
    num_source: int,
    num_tokens: int,
    *,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Information-emitter additive mask [batch, 1, N, N]: 0 where key < num_source, -inf elsewhere.

    Not causal: source tokens see each other both ways; diagnosis tokens read only source tokens.
    A *float* 4D mask is passed to transformers as given (a bool 4D mask would be added as 0/1 by
    the eager attention, silently wrong).
    """
    mask = torch.zeros(num_tokens, num_tokens, dtype=dtype, device=device)
    mask[:, num_source:] = float("-inf")
    return mask.expand(batch, 1, num_tokens, num_tokens)


class PneumoLLM(nn.Module):
    """PneumoLLM: frozen ``visual`` (open_clip VisionTransformer) and ``decoder`` (HF LlamaModel
    without embed_tokens), trainable ``vision_adapters``, ``decoder_adapters``, ``engine``
    (None when ``config.use_engine`` is False), ``projection``, ``head``.
    """

    visual: VisionTransformer
    decoder: LlamaModel
    vision_adapters: nn.ModuleList
    decoder_adapters: nn.ModuleList
    engine: MultiTokenEngine | None
    projection: VisualProjection
    head: ClassifierHead

    def __init__(self, config: PneumoLLMConfig, visual: VisionTransformer, decoder: LlamaModel) -> None:
        super().__init__()
        self.config = config
        self.visual = freeze(visual)
        self.decoder = freeze(decoder)
        trainable = build_trainable_modules(config)
        for name in TRAINABLE_MODULES:
            setattr(self, name, trainable[name])
        # Forward hooks on the pre-attention norms (ln_1 / input_layernorm); backbone keys unchanged.
        attach_adapters(vision_norms(self.visual), self.vision_adapters)
        attach_adapters(decoder_norms(self.decoder), self.decoder_adapters)
        self.source_layers = config.vision.source_layers

    # --- the four stages -------------------------------------------------------------------
    def source_tokens(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] normalised -> raw residual class token after each source block [B, S, W], fp32."""
        dtype = self.visual.conv1.weight.dtype
        return class_tokens(self.visual, pixels.to(dtype), self.source_layers).float()

    def tokens(self, source: Tensor) -> Tensor:
        """Source tokens [B, S, W] -> [source; diagnosis] tokens [B, S+K, W] (just [B, S, W] without engine)."""
        if self.engine is None:
            return source
        return torch.cat([source, self.engine(source)], dim=1)

    def decode(self, inputs_embeds: Tensor) -> Tensor:
        """Projected tokens [B, N, H] -> decoder output after the final RMSNorm [B, N, H], fp32.

        Positions 0..N-1, the emitter mask in every layer, no cache.
        """
        batch, n, _ = inputs_embeds.shape
        dtype = self.decoder.norm.weight.dtype
        device = inputs_embeds.device
        mask = emitter_mask(self.config.num_source_tokens, n, batch=batch, dtype=dtype, device=device)
        positions = torch.arange(n, device=device).unsqueeze(0).expand(batch, n)
        out = self.decoder(
            inputs_embeds=inputs_embeds.to(dtype),
            attention_mask=mask,
            position_ids=positions,
            use_cache=False,
        )
        return out.last_hidden_state.float()

    def hidden_states(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] -> decoder output (final norm applied) [B, N, H], fp32."""
        return self.decode(self.projection(self.tokens(self.source_tokens(pixels))))

    def forward(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] normalised -> logits [B, num_classes] (index 0 = pneumoconiosis), fp32."""
        return self.head(self.hidden_states(pixels))

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        """Recompute the frozen blocks' activations in backward (less memory, ~30% more time).

        Non-reentrant checkpointing, so the adapter hooks (and their dropout RNG) replay exactly.
        """
        self.visual.set_grad_checkpointing(enable)
        decoder = self.decoder
        if hasattr(decoder, "activation_checkpointing_enable"):  # transformers >= 5.x name
            if enable:
                decoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                decoder.activation_checkpointing_disable()
        elif enable:
            decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            decoder.gradient_checkpointing_disable()

    # --- dtypes ----------------------------------------------------------------------------
    @property
    def base_dtype(self) -> torch.dtype:
        return self.decoder.norm.weight.dtype


def build_trainable_modules(config: PneumoLLMConfig) -> dict[str, nn.Module | None]:
    """Fresh trainable modules (float32, on the current default device), keyed by TRAINABLE_MODULES."""
    v, d, a = config.vision, config.decoder, config.adapter
    modules: dict[str, nn.Module | None] = {
        "vision_adapters": make_adapters(v.width, v.layers, hidden=a.hidden, groups=a.groups, dropout=a.dropout),
        "decoder_adapters": make_adapters(d.hidden_size, d.layers, hidden=a.hidden, groups=a.groups, dropout=a.dropout),
        "engine": (
            MultiTokenEngine(v.width, config.engine.hidden, config.engine.num_tokens) if config.use_engine else None
        ),
        "projection": VisualProjection(v.width, config.projection.hidden, d.hidden_size),
        "head": ClassifierHead(d.hidden_size, config.num_classes),
    }
    for module in modules.values():
        if module is not None:
            module.float()
            for param in module.parameters():
                param.requires_grad_(True)
    return modules


def expected_trainable_shapes(config: PneumoLLMConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the trainable tensors for ``config`` (built on meta: instant, no backbones)."""
    with torch.device("meta"):
        modules = build_trainable_modules(config)
    return {
        f"{prefix}.{key}": tuple(tensor.shape)
        for prefix, module in modules.items()
        if module is not None
        for key, tensor in module.state_dict().items()
    }


def build_model(
    config: PneumoLLMConfig,
    *,
    device: torch.device | str = "cpu",
    base_dtype: torch.dtype = torch.float32,
    empty_base: bool = False,
) -> PneumoLLM:
    """PneumoLLM with frozen, randomly initialised (or empty) backbones and fresh trainable parts.

    ``device="meta"``: nothing is allocated (counting, or ``load_base_weights`` + ``materialize``).
    ``empty_base=True``: backbones on meta, trainables real on ``device`` (then ``load_base_weights``).
    Backbones are cast to ``base_dtype``; adapters/engine/projection/head stay float32.
    """
    device = torch.device(device)
    base_device = torch.device("meta") if (empty_base or device.type == "meta") else device
    with torch.device(base_device):
        visual = build_vision_tower(config.vision).to(base_dtype)
        # transformers wraps PreTrainedModel.to with @wraps(nn.Module.to): mypy sees an unbound signature
        decoder = build_decoder(config.decoder).to(base_dtype)  # type: ignore[arg-type]
    if base_device.type != "meta":
        reset_rotary(decoder, base_device)  # float32 inv_freq whatever base_dtype
    with torch.device(device):
        model = PneumoLLM(config, visual, decoder)
    model.eval()
    return model


def _state_keys(module: nn.Module) -> list[str]:
    return list(module.state_dict().keys())


def visual_state_keys(model: PneumoLLM) -> list[str]:
    """Keys of the CLIP visual tower's state dict (open_clip names without ``visual.``)."""
    return _state_keys(model.visual)


def decoder_state_keys(model: PneumoLLM) -> list[str]:
    """Keys of the decoder's state dict (HF LlamaModel names without ``model.``; no embed_tokens)."""
    return _state_keys(model.decoder)


def _load_backbone(
    module: nn.Module, state: Mapping[str, Tensor], what: str, strict: bool, ignored: tuple[str, ...] = ()
) -> None:
    expected = module.state_dict()
    given = {k: v for k, v in state.items() if k not in ignored}
    shapes = {k: tuple(v.shape) for k, v in expected.items() if strict or k in given}
    problems = tensor_fit_problems({k: tuple(v.shape) for k, v in given.items() if strict or k in expected}, shapes)
    if problems:
        raise WeightsError(f"{what} weights do not fit the architecture: " + "; ".join(problems))
    not_float = [k for k, v in given.items() if not v.is_floating_point()]
    if not_float:
        raise WeightsError(f"{what} weights must be floating point: {', '.join(not_float[:3])}")
    module.load_state_dict({k: v for k, v in given.items() if k in expected}, strict=strict, assign=True)


def load_base_weights(
    model: PneumoLLM, visual_state: Mapping[str, Tensor], decoder_state: Mapping[str, Tensor], *, strict: bool = True
) -> None:
    """Put pretrained backbone tensors into ``model`` with ``assign=True`` (no copy, dtype kept).

    ``visual_state``: open_clip VisionTransformer keys without ``visual.``; ``decoder_state``: HF
    LlamaModel keys without ``model.`` (``embed_tokens.weight`` is ignored if present).
    The backbones stay frozen; the rotary buffers are rebuilt on the decoder's device.
    Raises :class:`WeightsError` on missing/unexpected keys or wrong shapes.
    """
    _load_backbone(model.visual, visual_state, "CLIP visual tower", strict)
    _load_backbone(model.decoder, decoder_state, "LLaMA decoder", strict, IGNORED_DECODER_KEYS)
    freeze(model.visual)
    freeze(model.decoder)
    norm = model.decoder.norm.weight
    if not norm.is_meta:
        reset_rotary(model.decoder, norm.device)


def materialize(
    model: PneumoLLM, device: torch.device | str, dtype: torch.dtype | None = None, *, allow_uninitialised: bool = False
) -> PneumoLLM:
    """Move ``model`` to ``device``: backbones cast to ``dtype`` (if given), trainables float32.

    Trainable parts still on meta get fresh reference initialisation there. Backbone tensors still
    on meta (never loaded) raise :class:`WeightsError` unless ``allow_uninitialised`` (then they are
    allocated uninitialised). The rotary ``inv_freq`` is recomputed in float32 on ``device``.
    """
    device = torch.device(device)
    for name in ("visual", "decoder"):
        backbone = getattr(model, name)
        meta = [k for k, v in backbone.state_dict().items() if v.is_meta]
        if meta and not allow_uninitialised:
            raise WeightsError(f"{len(meta)} {name} tensors were never loaded (e.g. {', '.join(meta[:3])})")
        if meta:
            backbone.to_empty(device=device)
        backbone.to(device=device, dtype=dtype) if dtype is not None else backbone.to(device=device)
    for name in TRAINABLE_MODULES:
        module = getattr(model, name)
        if module is None:
            continue
        if any(p.is_meta for p in module.parameters()):
            module.to_empty(device=device)
            for unit in module if isinstance(module, nn.ModuleList) else [module]:
                assert isinstance(unit, (Adapter, MultiTokenEngine, VisualProjection, ClassifierHead))
                unit.reset_parameters()  # the reference initialisation of each part
        module.to(device=device, dtype=torch.float32)
    reset_rotary(model.decoder, device)
    return model


def trainable_state_dict(model: PneumoLLM) -> dict[str, Tensor]:
    """Copies (CPU, float32, contiguous) of the trainable tensors, keyed ``vision_adapters.0.conv_A.weight`` etc."""
    state: dict[str, Tensor] = {}
    for prefix in TRAINABLE_MODULES:
        module = getattr(model, prefix)
        if module is None:
            continue
        for key, tensor in module.state_dict().items():
            state[f"{prefix}.{key}"] = tensor.detach().to("cpu", copy=True).contiguous()
    return state


def load_trainable_state_dict(model: PneumoLLM, state: Mapping[str, Tensor]) -> None:
    """Copy trained tensors into the model (exact key set and shapes required; kept float32).

    Raises :class:`BundleError` when the tensors are for another architecture.
    """
    expected = {k: tuple(v.shape) for k, v in _trainable_tensors(model).items()}
    problems = tensor_fit_problems({k: tuple(v.shape) for k, v in state.items()}, expected)
    if problems:
        raise BundleError(f"trained tensors do not fit architecture {model.config.name!r}: " + "; ".join(problems))
    targets = _trainable_tensors(model)
    meta = [k for k, t in targets.items() if t.is_meta]
    if meta:
        raise BundleError(f"materialize() the model before loading trained tensors ({meta[0]} is on meta)")
    with torch.no_grad():
        for key, target in targets.items():
            target.copy_(state[key].to(device=target.device, dtype=target.dtype))


def _trainable_tensors(model: PneumoLLM) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for prefix in TRAINABLE_MODULES:
        module = getattr(model, prefix)
        if module is not None:
            for key, tensor in module.state_dict(keep_vars=True).items():
                out[f"{prefix}.{key}"] = tensor
    return out


def trainable_parameters(model: PneumoLLM) -> list[nn.Parameter]:
    """The parameters an optimiser should see (adapters, engine, projection, head)."""
    return [
        p
        for prefix in TRAINABLE_MODULES
        if getattr(model, prefix) is not None
        for p in getattr(model, prefix).parameters()
    ]


def count_parameters(model: PneumoLLM) -> dict[str, int]:
    """Parameter counts: ``trainable`` (requires_grad), ``vision`` / ``decoder`` (frozen towers, no
    adapters), each trainable part, ``total``. Works on the meta device."""

    def n(module: nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    counts = {name: n(getattr(model, name)) for name in TRAINABLE_MODULES}
    counts["vision"] = n(model.visual)
    counts["decoder"] = n(model.decoder)
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counts["frozen"] = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    counts["total"] = n(model)
    return counts
