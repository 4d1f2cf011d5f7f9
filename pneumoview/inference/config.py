"""PneumoLLM architecture as data: JSON files in ``configs/`` parsed into frozen dataclasses.

The full model is ``pneumollm-vitl14-llama7b`` (CLIP ViT-L/14 visual tower + the 32 decoder
layers of LLaMA-7B, as the PneumoLLM paper specifies); ``pneumollm-tiny`` runs the same
code path at toy size for tests and the demo. Only the numbers differ between them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumoview.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
FULL_CONFIG = "pneumollm-vitl14-llama7b"
TINY_CONFIG = "pneumollm-tiny"

#: The class order every PneumoLLM head uses: P(pneumoconiosis) = softmax(logits)[0].
CLASS_ORDER = ("pneumoconiosis", "normal")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


@dataclass(frozen=True)
class VisionConfig:
    """open_clip ``VisionTransformer`` (CLIP visual tower); ``heads = width // head_width``."""

    image_size: int = 224
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    head_width: int = 64
    mlp_ratio: float = 4.0
    output_dim: int = 768  # CLIP's visual projection; kept so OpenAI state dicts load strictly (unused)
    quick_gelu: bool = True  # OpenAI weights were trained with QuickGELU
    source_every: int = 4  # class token taken after blocks source_every, 2*source_every, ...

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    @property
    def source_layers(self) -> tuple[int, ...]:
        """0-based block indices whose output class token is a source token ((i+1) % every == 0)."""
        return tuple(i for i in range(self.layers) if (i + 1) % self.source_every == 0)

    @property
    def num_source_tokens(self) -> int:
        return len(self.source_layers)


@dataclass(frozen=True)
class DecoderConfig:
    """LLaMA decoder stack (transformers ``LlamaModel`` without token embeddings)."""

    hidden_size: int = 4096
    layers: int = 32
    heads: int = 32
    kv_heads: int = 32
    intermediate_size: int = 11008
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    attn_implementation: str = "sdpa"  # "eager" | "sdpa"


@dataclass(frozen=True)
class AdapterConfig:
    """adapter(h) = h + D(dropout(A(h))); A: d->hidden (1x1 conv), D: hidden->d (1x1 conv, groups)."""

    hidden: int = 8
    groups: int = 2
    dropout: float = 0.1


@dataclass(frozen=True)
class EngineConfig:
    """Contextual multi-token engine: Linear(W->hidden)-ReLU-Linear(hidden->num_tokens)."""

    hidden: int = 12
    num_tokens: int = 4


@dataclass(frozen=True)
class ProjectionConfig:
    """Visual neck: Linear(vision width -> hidden) - SiLU - Linear(hidden -> decoder hidden)."""

    hidden: int = 128


@dataclass(frozen=True)
class PreprocessingConfig:
    """What the model sees: a [size, size] grey lung crop in [0,1], replicated to 3 channels, normalised."""

    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    margin: float | None = None  # lung-box margin used by the crop (None = the localiser's default)

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std), "margin": self.margin}


@dataclass(frozen=True)
class PneumoLLMConfig:
    """One PneumoLLM architecture. ``class_names[0]`` is the positive class (pneumoconiosis)."""

    name: str
    vision: VisionConfig = field(default_factory=VisionConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    use_engine: bool = True  # False = the paper's "simplified PneumoLLM" (no diagnosis tokens)
    num_classes: int = 2
    class_names: tuple[str, ...] = CLASS_ORDER
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)
    description: str = ""

    @property
    def num_source_tokens(self) -> int:
        return self.vision.num_source_tokens

    @property
    def num_diagnosis_tokens(self) -> int:
        return self.engine.num_tokens if self.use_engine else 0

    @property
    def num_tokens(self) -> int:
        """Sequence length the decoder sees: source tokens then diagnosis tokens."""
        return self.num_source_tokens + self.num_diagnosis_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``config_from_dict(c.to_dict()) == c``."""
        return _to_jsonable(dataclasses.asdict(self))

    def replace(self, **changes: Any) -> PneumoLLMConfig:
        """Copy with top-level fields changed, e.g. ``cfg.replace(use_engine=False)``."""
        return dataclasses.replace(self, **changes)

    def with_attn_implementation(self, impl: str) -> PneumoLLMConfig:
        if impl not in ATTN_IMPLEMENTATIONS:
            raise ConfigError(f"attention implementation must be one of {ATTN_IMPLEMENTATIONS}, not {impl!r}")
        return dataclasses.replace(self, decoder=dataclasses.replace(self.decoder, attn_implementation=impl))


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a (resolved) type annotation; tuples from lists, ints as floats."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{where} must not be null")
        non_none = [a for a in options if a is not type(None)]
        return _coerce(value, non_none[0], where)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be an object, not {type(value).__name__}")
        return _dataclass_from_dict(annotation, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, not {type(value).__name__}")
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where} must have {len(args)} items, not {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, not {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {annotation!r}")  # pragma: no cover - programming error


def _dataclass_from_dict(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}")
    kwargs = {key: _coerce(value, hints[key], f"{where}.{key}" if where else key) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def trainable_shapes(config: PneumoLLMConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the trainable tensors of ``config`` (adapters, engine, projection, head),
    computed from the numbers alone (no torch): what a bundle's ``weights.safetensors`` must hold.

    Adapters (1x1 convs, ``adapters.py``): ``conv_A`` [hidden, d, 1] + [hidden], ``conv_D``
    [d, hidden/groups, 1] + [d], one per block; engine: Linear(W->hidden), Linear(hidden->tokens);
    projection: Linear(W->hidden), Linear(hidden->D); head: Linear(D->classes) without bias.
    ``inference.model.expected_trainable_shapes`` builds the modules on meta and must agree (tested).
    """
    v, d, a = config.vision, config.decoder, config.adapter
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, dim, layers in (("vision_adapters", v.width, v.layers), ("decoder_adapters", d.hidden_size, d.layers)):
        for i in range(layers):
            shapes[f"{prefix}.{i}.conv_A.weight"] = (a.hidden, dim, 1)
            shapes[f"{prefix}.{i}.conv_A.bias"] = (a.hidden,)
            shapes[f"{prefix}.{i}.conv_D.weight"] = (dim, a.hidden // a.groups, 1)
            shapes[f"{prefix}.{i}.conv_D.bias"] = (dim,)
    if config.use_engine:
        e = config.engine
        shapes.update(
            {
                "engine.linear1.weight": (e.hidden, v.width),
                "engine.linear1.bias": (e.hidden,),
                "engine.linear2.weight": (e.num_tokens, e.hidden),
                "engine.linear2.bias": (e.num_tokens,),
            }
        )
    p = config.projection.hidden
    shapes.update(
        {
            "projection.linear1.weight": (p, v.width),
            "projection.linear1.bias": (p,),
            "projection.linear2.weight": (d.hidden_size, p),
            "projection.linear2.bias": (d.hidden_size,),
            "head.fc.weight": (config.num_classes, d.hidden_size),
        }
    )
    return shapes


def hf_llama_config(decoder: DecoderConfig, *, torch_dtype: str) -> dict[str, Any]:
    """The Hugging Face ``config.json`` of a LLaMA decoder folder with ``decoder``'s shape (no
    embeddings: ``vocab_size`` 1), as the demo model and the benchmarks write one."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": decoder.hidden_size,
        "intermediate_size": decoder.intermediate_size,
        "num_hidden_layers": decoder.layers,
        "num_attention_heads": decoder.heads,
        "num_key_value_heads": decoder.kv_heads,
        "rms_norm_eps": decoder.rms_norm_eps,
        "rope_theta": decoder.rope_theta,
        "max_position_embeddings": decoder.max_position_embeddings,
        "vocab_size": 1,
        "hidden_act": "silu",
        "torch_dtype": torch_dtype,
    }


def tensor_fit_problems(given: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]) -> list[str]:
    """What keeps tensors named/shaped ``given`` from filling ``expected`` (empty list = they fit).

    The one wording of "N missing (e.g. ...)", "N unexpected (e.g. ...)" and "wrong shapes: ...",
    used for bundles, reference checkpoints, trained tensors and base weights alike.
    """
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    wrong = [
        f"{k} {tuple(given[k])} != {tuple(shape)}"
        for k, shape in expected.items()
        if k in given and tuple(given[k]) != tuple(shape)
    ]
    if wrong:
        problems.append(f"{len(wrong)} wrong shapes: " + "; ".join(wrong[:3]))
    return problems


#: Bounds of a bundle's preprocessing values (the crop is grey in [0, 1], normalised per channel).
MAX_MARGIN = 0.5
MAX_STD = 10.0


def check_preprocessing(preprocessing: Mapping[str, Any], config: PneumoLLMConfig) -> None:
    """Raise :class:`ConfigError` unless a bundle's ``preprocessing`` is usable with ``config``.

    ``image_size``: an integer equal to the vision tower's input size (so a huge value never
    reaches an allocation); ``mean``: 3 finite numbers in [0, 1]; ``std``: 3 finite numbers in
    (0, MAX_STD]; ``margin``: null or a finite number in [0, MAX_MARGIN] (fraction of the lung box).
    """
    size = preprocessing.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or size != config.vision.image_size:
        raise ConfigError(
            f"preprocessing image_size must be {config.vision.image_size} (the vision tower's input size), not {size!r}"
        )
    for key, low, high, low_open in (("mean", 0.0, 1.0, False), ("std", 0.0, MAX_STD, True)):
        values = preprocessing.get(key)
        ok = (
            isinstance(values, (list, tuple))
            and len(values) == 3
            and all(
                isinstance(x, (int, float))
                and not isinstance(x, bool)
                and math.isfinite(x)
                and (low < x if low_open else low <= x)
                and x <= high
                for x in values
            )
        )
        if not ok:
            bounds = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
            raise ConfigError(f"preprocessing {key} must be 3 finite numbers in {bounds}, not {values!r}")
    margin = preprocessing.get("margin")
    if margin is not None and not (
        isinstance(margin, (int, float))
        and not isinstance(margin, bool)
        and math.isfinite(margin)
        and 0.0 <= margin <= MAX_MARGIN
    ):
        raise ConfigError(f"preprocessing margin must be empty or a number in [0, {MAX_MARGIN:g}], not {margin!r}")


def validate_config(config: PneumoLLMConfig) -> PneumoLLMConfig:
    """Raise :class:`ConfigError` where the numbers cannot make a working model."""
    v, d, a = config.vision, config.decoder, config.adapter
    problems = []
    if v.width % v.head_width:
        problems.append(f"vision.width {v.width} is not a multiple of head_width {v.head_width}")
    if v.image_size % v.patch_size:
        problems.append(f"vision.image_size {v.image_size} is not a multiple of patch_size {v.patch_size}")
    if v.source_every < 1 or v.num_source_tokens == 0:
        problems.append(f"vision.source_every {v.source_every} gives no source tokens from {v.layers} blocks")
    if d.hidden_size % d.heads:
        problems.append(f"decoder.hidden_size {d.hidden_size} is not a multiple of heads {d.heads}")
    if d.kv_heads < 1 or d.heads % d.kv_heads:
        problems.append(f"decoder.heads {d.heads} is not a multiple of kv_heads {d.kv_heads}")
    if (d.hidden_size // max(d.heads, 1)) % 2:
        problems.append("decoder head dimension must be even (rotary embedding)")
    if d.attn_implementation not in ATTN_IMPLEMENTATIONS:
        problems.append(f"decoder.attn_implementation must be one of {ATTN_IMPLEMENTATIONS}")
    if a.hidden % a.groups:
        problems.append(f"adapter.hidden {a.hidden} is not a multiple of groups {a.groups}")
    for dim, what in ((v.width, "vision.width"), (d.hidden_size, "decoder.hidden_size")):
        if dim % a.groups:
            problems.append(f"{what} {dim} is not a multiple of adapter.groups {a.groups}")
    if not 0.0 <= a.dropout < 1.0:
        problems.append("adapter.dropout must be in [0, 1)")
    if config.num_classes != len(config.class_names):
        problems.append(f"num_classes {config.num_classes} != {len(config.class_names)} class_names")
    if tuple(config.class_names) != CLASS_ORDER:
        problems.append(
            f"class_names must be {list(CLASS_ORDER)} in this order (index 0 is the positive class), "
            f"not {list(config.class_names)}"
        )
    if config.num_tokens > d.max_position_embeddings:
        problems.append("more tokens than decoder.max_position_embeddings")
    p = config.preprocessing
    if p.image_size != v.image_size:
        problems.append(f"preprocessing.image_size {p.image_size} != vision.image_size {v.image_size}")
    if any(s <= 0 for s in p.std):
        problems.append("preprocessing.std must be positive")
    for n in (
        v.width,
        v.layers,
        d.hidden_size,
        d.layers,
        d.intermediate_size,
        a.hidden,
        config.engine.hidden,
        config.engine.num_tokens,
        config.projection.hidden,
    ):
        if n < 1:
            problems.append("all sizes must be positive")
            break
    if problems:
        raise ConfigError(f"architecture {config.name!r} is inconsistent: " + "; ".join(problems))
    return config


def config_from_dict(data: Mapping[str, Any]) -> PneumoLLMConfig:
    """Parse and validate a config dict (the JSON file's content, or a bundle manifest's ``config``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"an architecture config must be a JSON object, not {type(data).__name__}")
    return validate_config(_dataclass_from_dict(PneumoLLMConfig, data, ""))


def available_configs() -> list[str]:
    """Names of the architecture files shipped in ``pneumoview/inference/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | Path) -> PneumoLLMConfig:
    """A shipped config by name (``"pneumollm-tiny"``) or any JSON file by path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" or candidate.is_file():
        path = candidate
    else:
        path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise ConfigError(
                f"no architecture named {str(name_or_path)!r}; available: {', '.join(available_configs())}"
            )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError("architecture file not found", path=path) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read architecture file: {exc}", path=path) from exc
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(exc.reason, path=path) from exc
