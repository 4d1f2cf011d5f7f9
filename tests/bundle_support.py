"""Real model bundles for tests: the tiny architecture, random finite tensors, written by save_bundle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

FINGERPRINTS = {"clip": "c" * 64, "llama": "d" * 64}


def make_tiny_bundle(folder: Path, *, seed: int = 0, model_id: str = "run", metrics: dict | None = None,
                     demo: bool = False, fingerprints: dict | None = None, name: str = "") -> Path:
    """A bundle exactly as training writes it (manifest.json + weights.safetensors) for pneumollm-tiny."""
    import torch

    from pneumoview.inference.bundle import Manifest, save_bundle
    from pneumoview.inference.config import TINY_CONFIG, load_config, trainable_shapes

    config = load_config(TINY_CONFIG)
    generator = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(shape, generator=generator) * 0.02 for k, shape in trainable_shapes(config).items()}
    manifest = Manifest.create(config, base_fingerprints=FINGERPRINTS if fingerprints is None else fingerprints,
                               training={"metrics": metrics or {}}, name=name or f"tiny {model_id}", demo=demo,
                               model_id=model_id)
    return save_bundle(folder, tensors, manifest)


def edit_manifest(bundle: Path, **changes: object) -> Path:
    """Change manifest fields of a saved bundle in place (the weights and their digest stay)."""
    path = bundle / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")
    return bundle


def replace_tensors(bundle: Path, tensors: dict) -> Path:
    """Write other tensors into a saved bundle and record their true digest (a well-formed but wrong bundle)."""
    from safetensors.torch import save_file

    weights = bundle / "weights.safetensors"
    save_file(tensors, str(weights))
    return edit_manifest(bundle, weights_sha256=hashlib.sha256(weights.read_bytes()).hexdigest())
