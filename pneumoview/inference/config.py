"""PneumoLLM architecture as data: JSON files in ``configs/`` parsed into frozen dataclasses.

The full model is ``pneumollm-vitl14-llama7b`` (CLIP ViT-L/14 visual tower + the 32 decoder
layers of LLaMA-7B, see ``/work/shared/PNEUMOLLM-SPEC.md``); ``pneumollm-tiny`` runs the same
code path at toy size for tests and the demo. Only the numbers differ between them.
"""

from __future__ import annotations

import dataclasses
import json
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
    class_names: tuple[str, ...] = ("pneumoconiosis", "normal")
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
    if dataclasses.is_dataclass(annotation):
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
    if config.num_tokens > d.max_position_embeddings:
        problems.append("more tokens than decoder.max_position_embeddings")
    p = config.preprocessing
    if p.image_size != v.image_size:
        problems.append(f"preprocessing.image_size {p.image_size} != vision.image_size {v.image_size}")
    if any(s <= 0 for s in p.std):
        problems.append("preprocessing.std must be positive")
    for n in (v.width, v.layers, d.hidden_size, d.layers, d.intermediate_size, a.hidden,
              config.engine.hidden, config.engine.num_tokens, config.projection.hidden):
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
