"""The model to train: architecture + frozen base weights (real, demo, or seeded random).

* real: CLIP visual tower and LLaMA decoder read offline by ``pneumoview.inference.weights``
  (``read_clip_visual`` / ``read_llama_decoder``), put in with ``load_base_weights`` (no copy);
* ``demo``: the deterministic tiny random base weights of ``pneumoview.inference.demo``;
* ``random``: backbones randomly initialised from a seed (benchmarks, CI, "does the pipeline
  learn" checks); their fingerprints are recorded like real ones.

Backbones are frozen in ``base_dtype`` (half precision on a GPU), trainable parts stay float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pneumoview.errors import ConfigError, WeightsError

if TYPE_CHECKING:
    from pneumoview.inference.config import PneumoLLMConfig
    from pneumoview.inference.model import PneumoLLM

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class BaseSpec:
    """Where the frozen base weights come from."""

    architecture: str = "pneumollm-tiny"
    clip_path: Path | None = None
    llama_path: Path | None = None
    demo: bool = False
    random_seed: int | None = None  # random backbones (no files); None with no paths and no demo = error
    demo_dir: Path | None = None

    def describe(self) -> dict[str, Any]:
        if self.demo:
            kind = "demo"
        elif self.clip_path is not None:
            kind = "files"
        else:
            kind = "random"
        return {
            "kind": kind,
            "architecture": self.architecture,
            # File names only: a full path can name a person or a clinic (bundles are shared).
            "clip_file": self.clip_path.name if self.clip_path else None,
            "llama_file": self.llama_path.name if self.llama_path else None,
            "random_seed": self.random_seed,
        }


@dataclass
class BaseModel:
    model: PneumoLLM
    config: PneumoLLMConfig
    fingerprints: dict[str, str]
    notes: list[str] = field(default_factory=list)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on a GPU that supports it (else float16), float32 on CPU."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return DTYPES[name]
    except KeyError as exc:
        raise ConfigError(f"unknown dtype {name!r} (use auto, float32, bfloat16 or float16)") from exc


def build_base_model(
    spec: BaseSpec, *, device: torch.device, base_dtype: torch.dtype, trainable_seed: int = 0
) -> BaseModel:
    """PneumoLLM on ``device`` with frozen backbones in ``base_dtype`` and fresh float32 trainables.

    The trainable parts are initialised from ``trainable_seed`` alone (whatever random numbers
    loading or generating the base weights used), so the same seed gives the same start.
    """
    from pneumoview.inference.config import load_config
    from pneumoview.inference.model import build_model, load_base_weights, materialize
    from pneumoview.inference.weights import fingerprint_state

    notes: list[str] = []
    clip_path: Path | None
    llama_path: Path | None
    if spec.demo:
        from pneumoview.inference.demo import ensure_demo_model

        paths = ensure_demo_model(spec.demo_dir) if spec.demo_dir is not None else ensure_demo_model()
        clip_path, llama_path = Path(paths.clip), Path(paths.llama)
        architecture = getattr(paths, "architecture", None) or spec.architecture
        notes.append("demo base weights (tiny, random): the trained model is NOT a diagnostic model")
    else:
        clip_path, llama_path, architecture = spec.clip_path, spec.llama_path, spec.architecture
    config = load_config(architecture)

    if clip_path is not None or llama_path is not None:
        if clip_path is None or llama_path is None:
            raise WeightsError("both --base-clip and --base-llama are needed (or --demo / --random-base)")
        from pneumoview.inference.weights import read_clip_visual, read_llama_decoder

        visual = read_clip_visual(clip_path, dtype=base_dtype)
        decoder = read_llama_decoder(llama_path, dtype=base_dtype)
        model = build_model(config, device=device, base_dtype=base_dtype, empty_base=True)
        load_base_weights(model, visual.state, decoder.state)
        fingerprints = {"clip": visual.fingerprint, "llama": decoder.fingerprint}
        del visual, decoder
        materialize(model, device, base_dtype)
    elif spec.random_seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.random_seed)
            model = build_model(config, device=device, base_dtype=base_dtype)
        fingerprints = {
            "clip": fingerprint_state(model.visual.state_dict()),
            "llama": fingerprint_state(model.decoder.state_dict()),
        }
        notes.append(f"random frozen backbones (seed {spec.random_seed}): for tests and benchmarks only")
    else:
        raise WeightsError("no base weights: give --base-clip and --base-llama, or --demo, or --random-base")
    reinitialise_trainables(model, trainable_seed)
    return BaseModel(model=model, config=config, fingerprints=fingerprints, notes=notes)


def reinitialise_trainables(model: PneumoLLM, seed: int) -> None:
    """Fresh reference initialisation of the trainable parts from ``seed`` (global RNG untouched)."""
    from pneumoview.inference.model import build_trainable_modules, load_trainable_state_dict

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = build_trainable_modules(model.config)
    state = {
        f"{prefix}.{key}": tensor
        for prefix, module in fresh.items()
        if module is not None
        for key, tensor in module.state_dict().items()
    }
    load_trainable_state_dict(model, state)
