"""A trained PneumoLLM is a bundle: its trainable tensors in safetensors plus a JSON manifest.

Layout of a bundle directory::

    manifest.json          architecture name + full config, preprocessing (size, mean, std, margin),
                           class order, base-weight fingerprints, training summary/metrics,
                           app version, creation time, model id, weights file SHA-256
    weights.safetensors    adapters / engine / projection / head tensors (float32), PneumoLLM names

Bundles are written atomically (temporary sibling directory, then rename) and read with
safetensors only. :func:`import_reference_checkpoint` reads the reference implementation's
released ``torch.save`` checkpoint with ``weights_only=True`` (``argparse.Namespace`` allowed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pneumoview.atomic import atomic_dir
from pneumoview.errors import BundleError
from pneumoview.hashing import file_sha256
from pneumoview.inference.config import (
    FULL_CONFIG,
    PneumoLLMConfig,
    load_config,
    tensor_fit_problems,
    trainable_shapes,
)
from pneumoview.inference.manifest import (  # noqa: F401  (the bundle API, one import)
    BASE_WEIGHTS,
    FORMAT_VERSION,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    Manifest,
    _check_manifest,
    check_bundle,
    check_fingerprints,
    check_safetensors_header,
    read_manifest,
    read_manifest_data,
    write_failure_reason,
)


def _check_tensors(tensors: Mapping[str, Any], config: PneumoLLMConfig, what: str) -> None:
    """torch tensors: names and shapes fit ``config`` (:func:`tensor_fit_problems`), floating point, finite."""
    import torch

    problems = tensor_fit_problems({k: tuple(v.shape) for k, v in tensors.items()}, trainable_shapes(config))
    not_float = [k for k, v in tensors.items() if not v.is_floating_point()]
    if not_float:
        problems.append(f"not floating point: {', '.join(sorted(not_float)[:3])}")
    elif not problems:
        bad = sorted(k for k, v in tensors.items() if not bool(torch.isfinite(v).all()))
        if bad:
            problems.append(f"{len(bad)} hold NaN or infinite values (e.g. {', '.join(bad[:3])})")
    if problems:
        raise BundleError(f"{what} do not fit architecture {config.name!r}: " + "; ".join(problems))


def save_bundle(
    directory: str | os.PathLike[str], trainable: Mapping[str, Any], manifest: Manifest, *, overwrite: bool = False
) -> Path:
    """Write ``trainable`` tensors + ``manifest`` as a bundle directory, atomically; returns its path.

    Tensors must be exactly those of ``manifest.config`` (:func:`trainable_state_dict` gives them)
    and finite. An existing bundle is replaced only with ``overwrite=True`` (and then also
    atomically). ``manifest.weights_sha256`` is set to the written file's digest. A failed write
    raises BundleError (``disk full: ...`` / ``cannot write ...``) and leaves no partial folder.
    """
    import torch
    from safetensors.torch import save_file

    target = Path(directory)
    if target.exists() and not overwrite:
        raise BundleError("a bundle already exists here (not overwritten)", path=target)
    config = manifest.model_config()
    _check_manifest(manifest, config)
    _check_tensors(trainable, config, "tensors to save")
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in trainable.items()}
    try:
        with atomic_dir(target, replace=overwrite) as staging:
            weights = staging.path / WEIGHTS_FILE
            save_file(
                tensors,
                str(weights),
                metadata={"format": "pt", "architecture": config.name, "model_id": manifest.model_id},
            )
            manifest.weights_file = WEIGHTS_FILE
            manifest.weights_sha256 = file_sha256(weights)
            (staging.path / MANIFEST_FILE).write_text(
                json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
    except Exception as exc:
        if not isinstance(exc, OSError) and not _is_safetensors_error(exc):
            raise
        raise BundleError(write_failure_reason(exc, target)) from exc
    return target


def _is_safetensors_error(exc: BaseException) -> bool:
    from safetensors import SafetensorError

    return isinstance(exc, SafetensorError)


def load_bundle(directory: str | os.PathLike[str]) -> tuple[Manifest, dict[str, Any]]:
    """Read a bundle: (manifest, float32 CPU tensors keyed by PneumoLLM names).

    Validates it fully first (:func:`check_bundle`). Raises :class:`BundleError` on anything
    missing, corrupt, non-finite or inconsistent.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(directory)
    manifest = check_bundle(root)
    weights = root / manifest.weights_file
    try:
        tensors = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"unreadable weights file: {exc}", path=weights) from exc
    try:
        _check_tensors(tensors, manifest.model_config(), "bundle tensors")
    except BundleError as exc:
        raise BundleError(exc.reason, path=root) from exc
    return manifest, tensors


# --- the reference implementation's released checkpoint ---------------------------------------

_REFERENCE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^layers\.(\d+)\.adapter_attn\.(conv_A|conv_D)\.(weight|bias)$"), r"decoder_adapters.\1.\2.\3"),
    (
        re.compile(r"^backbone\.visual\.transformer\.resblocks\.(\d+)\.adapter_attn\.(conv_A|conv_D)\.(weight|bias)$"),
        r"vision_adapters.\1.\2.\3",
    ),
    (re.compile(r"^adapter_proj\.conv_A\.(weight|bias)$"), r"projection.linear1.\1"),
    (re.compile(r"^adapter_proj\.conv_B\.(weight|bias)$"), r"projection.linear2.\1"),
    (re.compile(r"^adapter_output_cls\.weight$"), r"head.fc.weight"),
    (re.compile(r"^prompt_meta_net\.(linear1|linear2)\.(weight|bias)$"), r"engine.\1.\2"),
)


def reference_to_pneumoview_name(name: str) -> str:
    """Map one reference tensor name (e.g. ``adapter_proj.conv_A.weight``) to ours; BundleError if unknown.

    A leading ``module.`` (a DistributedDataParallel wrapper's prefix) is accepted.
    """
    name = name.removeprefix("module.")
    for pattern, replacement in _REFERENCE_PATTERNS:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    raise BundleError(f"unknown tensor {name!r} in the reference checkpoint")


def import_reference_checkpoint(
    path: str | os.PathLike[str], *, config: PneumoLLMConfig | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the reference's ``torch.save`` checkpoint safely: (our tensors, ``vars(args)``).

    Loaded with ``torch.load(weights_only=True)`` and only ``argparse.Namespace`` allowed as a
    global; nothing else is ever unpickled. Tensors are renamed to PneumoLLM names, cast to
    float32, and checked against ``config`` (default: the full architecture, without the engine
    when the checkpoint has no ``prompt_meta_net``).
    """
    state, args, _epoch, _config = _read_reference(path, config)
    return state, args


def bundle_from_reference_checkpoint(
    checkpoint: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    base_fingerprints: Mapping[str, str] | None = None,
    name: str = "",
    config: PneumoLLMConfig | None = None,
) -> Path:
    """Turn the reference's released checkpoint into a PneumoView bundle (ImageNet normalisation).

    The reference does not record which CLIP/LLaMA files it was trained on: pass their
    fingerprints if known; otherwise the bundle records none and cannot verify its base weights.
    """
    state, args, epoch, config = _read_reference(checkpoint, config)
    training = {
        "source": "reference checkpoint (CodeMonsterPHD/PneumoLLM)",
        "checkpoint": Path(checkpoint).name,
        "epoch": epoch,
        "args": json.loads(json.dumps(args, default=str)),
    }
    manifest = Manifest.create(
        config,
        base_fingerprints=base_fingerprints or {},
        training=training,
        name=name or f"PneumoLLM reference ({Path(checkpoint).name})",
    )
    return save_bundle(directory, state, manifest)


#: Said for a checkpoint that would need more than tensors to be unpickled (possibly code).
REFUSED_CODE = "this file contains code, PneumoView will not load it"


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's text, without any advice to load it unsafely."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return "unsafe content" if "weights_only" in first or "weights only" in first.lower() else first[:200]


def _read_reference(
    path: str | os.PathLike[str], config: PneumoLLMConfig | None
) -> tuple[dict[str, Any], dict[str, Any], Any, PneumoLLMConfig]:
    import pickle

    import torch

    source = Path(path)
    if not source.is_file():
        raise BundleError("reference checkpoint not found", path=source)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise BundleError(REFUSED_CODE, path=source) from None  # torch's advice never reaches a user
        raise BundleError(f"not a readable torch checkpoint ({_first_line(exc)})", path=source) from None
    except (RuntimeError, OSError, EOFError, ValueError, AttributeError, TypeError) as exc:
        raise BundleError(f"not a readable torch checkpoint ({_first_line(exc)})", path=source) from None
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("model"), Mapping):
        raise BundleError("reference checkpoint has no 'model' dict of tensors", path=source)
    args = checkpoint.get("args")
    args_dict = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args or {})

    state: dict[str, Any] = {}
    for name, tensor in checkpoint["model"].items():
        if not isinstance(tensor, torch.Tensor):
            raise BundleError(f"reference checkpoint entry {name!r} is not a tensor", path=source)
        try:
            ours = reference_to_pneumoview_name(name)
        except BundleError as exc:
            raise BundleError(exc.reason, path=source) from exc
        state[ours] = tensor.detach().to(torch.float32).contiguous()
    if config is None:
        config = load_config(FULL_CONFIG).replace(use_engine=any(k.startswith("engine.") for k in state))
    try:
        _check_tensors(state, config, "reference checkpoint tensors")
    except BundleError as exc:
        raise BundleError(exc.reason, path=source) from exc
    epoch = checkpoint.get("epoch")
    return state, args_dict, epoch if isinstance(epoch, (int, float, str)) else None, config
