"""Real model bundles for tests: the tiny architecture, random finite tensors, written by save_bundle;
and checkpoints in the reference implementation's layout (tensor names and shapes as the spec lists them,
``args`` as an ``argparse.Namespace``, optimizer state), saved with ``torch.save`` as the reference does."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FINGERPRINTS = {"clip": "c" * 64, "llama": "d" * 64}


def make_tiny_bundle(
    folder: Path,
    *,
    seed: int = 0,
    model_id: str = "run",
    metrics: dict | None = None,
    demo: bool = False,
    fingerprints: dict | None = None,
    name: str = "",
) -> Path:
    """A bundle exactly as training writes it (manifest.json + weights.safetensors) for pneumollm-tiny."""
    import torch

    from pneumoview.inference.bundle import Manifest, save_bundle
    from pneumoview.inference.config import TINY_CONFIG, load_config, trainable_shapes

    config = load_config(TINY_CONFIG)
    generator = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(shape, generator=generator) * 0.02 for k, shape in trainable_shapes(config).items()}
    manifest = Manifest.create(
        config,
        base_fingerprints=FINGERPRINTS if fingerprints is None else fingerprints,
        training={"metrics": metrics or {}},
        name=name or f"tiny {model_id}",
        demo=demo,
        model_id=model_id,
    )
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


def reference_tensors(config: Any, seed: int = 0) -> dict[str, Any]:
    """The reference's ``model`` dict for ``config``: names and shapes as the spec lists them."""
    import torch

    g = torch.Generator().manual_seed(seed)
    h, w, k = config.decoder.hidden_size, config.vision.width, config.adapter.hidden
    per_group = k // config.adapter.groups

    def r(*shape: int) -> Any:
        return torch.randn(*shape, generator=g) * 0.1

    out: dict[str, Any] = {}
    for i in range(config.decoder.layers):
        p = f"layers.{i}.adapter_attn"
        out |= {
            f"{p}.conv_A.weight": r(k, h, 1),
            f"{p}.conv_A.bias": r(k),
            f"{p}.conv_D.weight": r(h, per_group, 1),
            f"{p}.conv_D.bias": r(h),
        }
    for i in range(config.vision.layers):
        p = f"backbone.visual.transformer.resblocks.{i}.adapter_attn"
        out |= {
            f"{p}.conv_A.weight": r(k, w, 1),
            f"{p}.conv_A.bias": r(k),
            f"{p}.conv_D.weight": r(w, per_group, 1),
            f"{p}.conv_D.bias": r(w),
        }
    ph = config.projection.hidden
    out |= {
        "adapter_proj.conv_A.weight": r(ph, w),
        "adapter_proj.conv_A.bias": r(ph),
        "adapter_proj.conv_B.weight": r(h, ph),
        "adapter_proj.conv_B.bias": r(h),
        "adapter_output_cls.weight": r(config.num_classes, h),
    }
    if config.use_engine:
        eh, kt = config.engine.hidden, config.engine.num_tokens
        out |= {
            "prompt_meta_net.linear1.weight": r(eh, w),
            "prompt_meta_net.linear1.bias": r(eh),
            "prompt_meta_net.linear2.weight": r(kt, eh),
            "prompt_meta_net.linear2.bias": r(kt),
        }
    return out


def save_reference_checkpoint(path: Path, model_tensors: dict[str, Any]) -> Path:
    import torch

    args = argparse.Namespace(
        batch_size=16,
        accum_iter=2,
        epochs=100,
        lr=None,
        blr=3e-4,
        weight_decay=0.02,
        llama_model_path="./llama",
        output_dir="./output",
        seed=0,
    )
    first = next(iter(model_tensors.values()))
    checkpoint = {
        "model": model_tensors,
        "optimizer": {
            "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(first)}},
            "param_groups": [{"lr": 3e-4, "betas": (0.9, 0.95), "weight_decay": 0.02, "params": [0]}],
        },
        "epoch": 41,
        "lr_scheduler": {"last_epoch": 41},
        "args": args,
    }
    torch.save(checkpoint, path)
    return path


@contextlib.contextmanager
def small_filesystem(mount_point: Path, size: str = "40k", *, read_only: bool = False) -> Iterator[Path]:
    """A real tiny filesystem (tmpfs) at ``mount_point``, so a full disk is a real ENOSPC and a
    read-only one a real EROFS; skips the test where mounting is not allowed (needs root)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def make_demo_trained_bundle(folder: Path, *, model_id: str, seed: int = 7, demo_dir: Path | None = None) -> Path:
    """A bundle as ``train --demo`` writes it: trained tensors on the demo base weights (their
    fingerprints, ``demo: true``), so it runs on the demo model's CLIP / LLaMA files."""
    import torch

    from pneumoview.inference.bundle import Manifest, load_bundle, save_bundle
    from pneumoview.inference.demo import ensure_demo_model

    demo = ensure_demo_model(demo_dir)
    manifest, tensors = load_bundle(demo.bundle)
    generator = torch.Generator().manual_seed(seed)
    trained = {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in tensors.items()}
    new = Manifest.create(
        manifest.model_config(),
        base_fingerprints=manifest.base_fingerprints,
        demo=True,
        name=f"retrained {model_id} (demo base)",
        model_id=model_id,
        training={"metrics": {"auc": 0.5}},
    )
    return save_bundle(folder, trained, new)
