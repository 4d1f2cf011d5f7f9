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
import dataclasses
import json
import os
import re
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pneumoview.atomic import atomic_dir, write_error_reason
from pneumoview.errors import BundleError, ConfigError, FingerprintMismatchError
from pneumoview.hashing import file_sha256
from pneumoview.inference.config import (
    FULL_CONFIG,
    PneumoLLMConfig,
    check_preprocessing,
    config_from_dict,
    load_config,
    tensor_fit_problems,
    trainable_shapes,
)

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"
BASE_WEIGHTS = ("clip", "llama")
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _app_version() -> str:
    from pneumoview import __version__

    return __version__


@dataclass
class Manifest:
    """What a bundle says about itself (``manifest.json``)."""

    architecture: str  # config name, e.g. "pneumollm-vitl14-llama7b"
    config: dict[str, Any]  # the full architecture config (PneumoLLMConfig.to_dict())
    preprocessing: dict[str, Any]  # image_size, mean, std, margin
    class_names: list[str]  # index 0 = pneumoconiosis
    base_fingerprints: dict[str, str]  # {"clip": ..., "llama": ...}
    training: dict[str, Any] = field(default_factory=dict)  # summary / metrics
    app_version: str = ""
    created: str = ""  # ISO 8601 UTC
    model_id: str = ""
    name: str = ""  # human-readable model name
    demo: bool = False
    format_version: int = FORMAT_VERSION
    weights_file: str = WEIGHTS_FILE
    weights_sha256: str = ""  # filled in by save_bundle

    @classmethod
    def create(cls, config: PneumoLLMConfig, *, base_fingerprints: Mapping[str, str],
               training: Mapping[str, Any] | None = None, name: str = "", demo: bool = False,
               preprocessing: Mapping[str, Any] | None = None, model_id: str | None = None) -> Manifest:
        """A new manifest for ``config`` (preprocessing defaults to the config's), stamped now."""
        created = datetime.now(timezone.utc).replace(microsecond=0)
        return cls(
            architecture=config.name,
            config=config.to_dict(),
            preprocessing=dict(preprocessing) if preprocessing is not None else config.preprocessing.to_dict(),
            class_names=list(config.class_names),
            base_fingerprints=dict(base_fingerprints),
            training=dict(training or {}),
            app_version=_app_version(),
            created=created.isoformat(),
            model_id=model_id or f"{created.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}",
            name=name or config.name,
            demo=demo,
        )

    def model_config(self) -> PneumoLLMConfig:
        """The architecture this bundle was trained for (raises BundleError if it is not valid)."""
        try:
            return config_from_dict(self.config)
        except ConfigError as exc:
            raise BundleError(f"manifest has an invalid architecture config: {exc.reason}") from exc

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        if not isinstance(data, Mapping):
            raise BundleError("manifest must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise BundleError(f"manifest lacks {', '.join(missing)}")
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise BundleError(f"bundle format {version!r} is newer than this PneumoView understands ({FORMAT_VERSION})")
        # Unknown keys from a newer minor revision are ignored rather than fatal.
        kwargs = {k: v for k, v in data.items() if k in names}
        kinds = {"config": dict, "preprocessing": dict, "class_names": list, "base_fingerprints": dict,
                 "training": dict, "demo": bool, "architecture": str, "app_version": str, "created": str,
                 "model_id": str, "name": str, "weights_file": str, "weights_sha256": str}
        for key, kind in kinds.items():
            if key in kwargs and not isinstance(kwargs[key], kind):
                raise BundleError(f"manifest field {key!r} must be a JSON {kind.__name__}")
        fingerprints = kwargs["base_fingerprints"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in fingerprints.items()):
            raise BundleError("manifest base_fingerprints must map names to strings")
        return cls(**kwargs)


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


def save_bundle(directory: str | os.PathLike[str], trainable: Mapping[str, Any], manifest: Manifest,
                *, overwrite: bool = False) -> Path:
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
            save_file(tensors, str(weights), metadata={"format": "pt", "architecture": config.name,
                                                       "model_id": manifest.model_id})
            manifest.weights_file = WEIGHTS_FILE
            manifest.weights_sha256 = file_sha256(weights)
            (staging.path / MANIFEST_FILE).write_text(
                json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except Exception as exc:
        if not isinstance(exc, OSError) and not _is_safetensors_error(exc):
            raise
        raise BundleError(write_failure_reason(exc, target)) from exc
    return target


def _is_safetensors_error(exc: BaseException) -> bool:
    from safetensors import SafetensorError

    return isinstance(exc, SafetensorError)


def write_failure_reason(exc: BaseException, where: str | os.PathLike[str]) -> str:
    """One line for a failed write of tensors or files (safetensors' ``SafetensorError`` included):
    :func:`pneumoview.atomic.write_error_reason`."""
    return write_error_reason(exc, where)


def read_manifest_data(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """``manifest.json`` of a bundle folder as plain JSON (a dict); raises BundleError.

    The one reader of the file: :func:`read_manifest` and the registry's listing both use it.
    """
    root = Path(directory)
    path = root / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError("not a model bundle: manifest.json is missing", path=root) from None
    except NotADirectoryError:
        raise BundleError("not a model bundle: not a folder", path=root) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read manifest.json: {exc}", path=path) from exc
    except json.JSONDecodeError as exc:
        raise BundleError(f"manifest.json is not valid JSON (line {exc.lineno})", path=path) from exc
    if not isinstance(data, dict):
        raise BundleError("manifest.json must hold a JSON object", path=path)
    return data


def read_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """Only the manifest of a bundle, parsed (cheap: for listing models)."""
    data = read_manifest_data(directory)
    try:
        return Manifest.from_dict(data)
    except TypeError as exc:
        raise BundleError(f"malformed manifest: {exc}", path=Path(directory) / MANIFEST_FILE) from exc
    except BundleError as exc:
        raise BundleError(exc.reason, path=Path(directory) / MANIFEST_FILE) from exc


def check_safetensors_header(path: Path) -> dict[str, Any]:
    """Parse a safetensors file's header (8-byte little-endian length + JSON) and check that the
    tensors' byte ranges exactly cover the data; returns the header. Raises BundleError."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise BundleError("truncated safetensors file (no header)", path=path)
            (length,) = struct.unpack("<Q", prefix)
            if length > min(size - 8, _MAX_SAFETENSORS_HEADER):
                raise BundleError("corrupt safetensors header length", path=path)
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as exc:
        raise BundleError(f"cannot read tensors: {exc.strerror or exc}", path=path) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError("corrupt safetensors header (not JSON)", path=path) from exc
    if not isinstance(header, dict):
        raise BundleError("corrupt safetensors header (not an object)", path=path)
    data_size = size - 8 - length
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1] <= data_size):
            raise BundleError(f"tensor {name!r} lies outside the file (truncated?)", path=path)
        end = max(end, offsets[1])
    if end != data_size:
        raise BundleError(f"safetensors data is {data_size} bytes but the tensors cover {end}", path=path)
    return header


def _check_manifest(manifest: Manifest, config: PneumoLLMConfig) -> None:
    """Architecture name, class order and preprocessing of a manifest against its config."""
    if manifest.architecture != config.name:
        raise BundleError(f"manifest architecture {manifest.architecture!r} != config name {config.name!r}")
    if list(manifest.class_names) != list(config.class_names):
        raise BundleError(f"manifest class_names {manifest.class_names} must be {list(config.class_names)} "
                          "(index 0 is the positive class)")
    try:
        check_preprocessing(manifest.preprocessing, config)
    except ConfigError as exc:
        raise BundleError(f"bad preprocessing values: {exc.reason}") from exc


def _weights_path(root: Path, manifest: Manifest) -> Path:
    name = manifest.weights_file
    if not name or Path(name).name != name or name in {".", ".."}:
        raise BundleError(f"manifest names a weights file outside the bundle: {name!r}", path=root)
    weights = root / name
    if not weights.is_file():
        raise BundleError(f"bundle lacks its weights file {name}", path=root)
    if not _SHA256.fullmatch(manifest.weights_sha256 or ""):
        raise BundleError("manifest lacks weights_sha256 (the weights cannot be verified)", path=root)
    if file_sha256(weights) != manifest.weights_sha256:
        raise BundleError("weights file is corrupt or was changed (SHA-256 differs from the manifest)", path=weights)
    return weights


def check_bundle(directory: str | os.PathLike[str]) -> Manifest:
    """Validate a bundle folder fully without torch; returns its manifest. Raises BundleError.

    Manifest: parses, its architecture config is valid, ``class_names`` are exactly the
    architecture's class order, preprocessing values are in range. Weights: the file the manifest
    names lies inside the bundle, ``weights_sha256`` is present and matches, every
    ``*.safetensors`` header is sound, the tensors' names and shapes are those of the
    architecture (:func:`trainable_shapes`), float32, and every value is finite.
    ``models add``, Model Setup and :func:`load_bundle` all run this.
    """
    import numpy as np
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    root = Path(directory)
    if not root.is_dir():
        raise BundleError("not a model bundle: not a folder", path=root)
    manifest = read_manifest(root)
    config = manifest.model_config()
    try:
        _check_manifest(manifest, config)
    except BundleError as exc:
        raise BundleError(exc.reason, path=root) from exc
    weights = _weights_path(root, manifest)
    for tensor_file in sorted(root.glob("*.safetensors")):
        check_safetensors_header(tensor_file)
    header = {k: v for k, v in check_safetensors_header(weights).items() if k != "__metadata__"}
    problems = tensor_fit_problems({k: tuple(v.get("shape", ())) for k, v in header.items()},
                                   trainable_shapes(config))
    not_f32 = sorted(k for k, v in header.items() if v.get("dtype") != "F32")
    if not_f32:
        problems.append(f"not float32: {', '.join(not_f32[:3])}")
    if problems:
        raise BundleError(f"bundle tensors do not fit architecture {config.name!r}: " + "; ".join(problems),
                          path=weights)
    try:
        arrays = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"unreadable weights file: {exc}", path=weights) from exc
    bad = sorted(k for k, v in arrays.items() if not np.isfinite(v).all())
    if bad:
        raise BundleError(f"{len(bad)} bundle tensors hold NaN or infinite values (e.g. {', '.join(bad[:3])})",
                          path=weights)
    return manifest


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


_BASE_NAMES = {"clip": "CLIP", "llama": "LLaMA"}


def check_fingerprints(manifest: Manifest, actual: Mapping[str, str], *, path: str | os.PathLike[str] | None = None,
                       only: tuple[str, ...] | None = None) -> None:
    """Refuse base weights other than the ones the bundle was trained on (the one fingerprint rule).

    ``actual`` maps "clip"/"llama" to fingerprints of the weights offered. Every fingerprint the
    manifest records (of the keys in ``only``, default all) must be present and equal; raises
    :class:`FingerprintMismatchError` naming them (and ``path``, the weights offered). A bundle
    that records no fingerprints (an imported reference checkpoint) is not refused.
    """
    problems = []
    for key, expected in sorted(manifest.base_fingerprints.items()):
        if only is not None and key not in only:
            continue
        got = actual.get(key)
        if got is None:
            problems.append(f"{key}: no fingerprint given (the bundle expects {expected[:20]}...)")
        elif got != expected:
            problems.append(f"other {_BASE_NAMES.get(key, key)} weights ({key}): the bundle expects "
                            f"{expected[:20]}..., these are {got[:20]}...")
    if problems:
        name = manifest.name or manifest.model_id
        raise FingerprintMismatchError(
            f"model {name!r} does not fit these base weights - " + "; ".join(problems)
            + " (choose the base weights it was trained on)", path=path)


# --- the reference implementation's released checkpoint ---------------------------------------

_REFERENCE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^layers\.(\d+)\.adapter_attn\.(conv_A|conv_D)\.(weight|bias)$"), r"decoder_adapters.\1.\2.\3"),
    (re.compile(r"^backbone\.visual\.transformer\.resblocks\.(\d+)\.adapter_attn\.(conv_A|conv_D)\.(weight|bias)$"),
     r"vision_adapters.\1.\2.\3"),
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


def import_reference_checkpoint(path: str | os.PathLike[str], *, config: PneumoLLMConfig | None = None
                                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read the reference's ``torch.save`` checkpoint safely: (our tensors, ``vars(args)``).

    Loaded with ``torch.load(weights_only=True)`` and only ``argparse.Namespace`` allowed as a
    global; nothing else is ever unpickled. Tensors are renamed to PneumoLLM names, cast to
    float32, and checked against ``config`` (default: the full architecture, without the engine
    when the checkpoint has no ``prompt_meta_net``).
    """
    state, args, _epoch, _config = _read_reference(path, config)
    return state, args


def bundle_from_reference_checkpoint(checkpoint: str | os.PathLike[str], directory: str | os.PathLike[str], *,
                                     base_fingerprints: Mapping[str, str] | None = None, name: str = "",
                                     config: PneumoLLMConfig | None = None) -> Path:
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
    manifest = Manifest.create(config, base_fingerprints=base_fingerprints or {}, training=training,
                               name=name or f"PneumoLLM reference ({Path(checkpoint).name})")
    return save_bundle(directory, state, manifest)


#: Said for a checkpoint that would need more than tensors to be unpickled (possibly code).
REFUSED_CODE = "this file contains code, PneumoView will not load it"


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's text, without any advice to load it unsafely."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return "unsafe content" if "weights_only" in first or "weights only" in first.lower() else first[:200]


def _read_reference(path: str | os.PathLike[str], config: PneumoLLMConfig | None
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
