"""A bundle's manifest and its full validation, without torch (the GUI process and the registry use this).

A trained PneumoLLM is a bundle directory::

    manifest.json          architecture name + full config, preprocessing (size, mean, std, margin),
                           class order, base-weight fingerprints, training summary/metrics,
                           app version, creation time, model id, weights file SHA-256
    weights.safetensors    adapters / engine / projection / head tensors (float32), PneumoLLM names

:func:`check_bundle` validates one fully (tensor names and shapes against the architecture, every
value finite, ``weights_sha256`` present and matching, the class order, preprocessing ranges) with
safetensors' numpy reader; :func:`check_fingerprints` is the one base-weight fingerprint rule.
Writing and loading the tensors with torch is :mod:`pneumoview.inference.bundle`.
"""

from __future__ import annotations

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

from pneumoview.atomic import write_error_reason
from pneumoview.errors import BundleError, ConfigError, FingerprintMismatchError
from pneumoview.hashing import file_sha256
from pneumoview.inference.config import (
    PneumoLLMConfig,
    check_preprocessing,
    config_from_dict,
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
    def create(
        cls,
        config: PneumoLLMConfig,
        *,
        base_fingerprints: Mapping[str, str],
        training: Mapping[str, Any] | None = None,
        name: str = "",
        demo: bool = False,
        preprocessing: Mapping[str, Any] | None = None,
        model_id: str | None = None,
    ) -> Manifest:
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
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise BundleError(f"manifest lacks {', '.join(missing)}")
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise BundleError(f"bundle format {version!r} is newer than this PneumoView understands ({FORMAT_VERSION})")
        # Unknown keys from a newer minor revision are ignored rather than fatal.
        kwargs = {k: v for k, v in data.items() if k in names}
        kinds = {
            "config": dict,
            "preprocessing": dict,
            "class_names": list,
            "base_fingerprints": dict,
            "training": dict,
            "demo": bool,
            "architecture": str,
            "app_version": str,
            "created": str,
            "model_id": str,
            "name": str,
            "weights_file": str,
            "weights_sha256": str,
        }
        for key, kind in kinds.items():
            if key in kwargs and not isinstance(kwargs[key], kind):
                raise BundleError(f"manifest field {key!r} must be a JSON {kind.__name__}")
        fingerprints = kwargs["base_fingerprints"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in fingerprints.items()):
            raise BundleError("manifest base_fingerprints must map names to strings")
        return cls(**kwargs)


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
        raise BundleError(
            f"manifest class_names {manifest.class_names} must be {list(config.class_names)} "
            "(index 0 is the positive class)"
        )
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
    problems = tensor_fit_problems({k: tuple(v.get("shape", ())) for k, v in header.items()}, trainable_shapes(config))
    not_f32 = sorted(k for k, v in header.items() if v.get("dtype") != "F32")
    if not_f32:
        problems.append(f"not float32: {', '.join(not_f32[:3])}")
    if problems:
        raise BundleError(
            f"bundle tensors do not fit architecture {config.name!r}: " + "; ".join(problems), path=weights
        )
    try:
        arrays = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"unreadable weights file: {exc}", path=weights) from exc
    bad = sorted(k for k, v in arrays.items() if not np.isfinite(v).all())
    if bad:
        raise BundleError(
            f"{len(bad)} bundle tensors hold NaN or infinite values (e.g. {', '.join(bad[:3])})", path=weights
        )
    return manifest


_BASE_NAMES = {"clip": "CLIP", "llama": "LLaMA"}


def check_fingerprints(
    manifest: Manifest,
    actual: Mapping[str, str],
    *,
    path: str | os.PathLike[str] | None = None,
    only: tuple[str, ...] | None = None,
) -> None:
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
            problems.append(
                f"other {_BASE_NAMES.get(key, key)} weights ({key}): the bundle expects "
                f"{expected[:20]}..., these are {got[:20]}..."
            )
    if problems:
        name = manifest.name or manifest.model_id
        raise FingerprintMismatchError(
            f"model {name!r} does not fit these base weights - "
            + "; ".join(problems)
            + " (choose the base weights it was trained on)",
            path=path,
        )
