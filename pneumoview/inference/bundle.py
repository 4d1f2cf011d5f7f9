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
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pneumoview.errors import BundleError, ConfigError, FingerprintMismatchError
from pneumoview.hashing import file_sha256
from pneumoview.inference.config import FULL_CONFIG, PneumoLLMConfig, config_from_dict, load_config

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"
BASE_WEIGHTS = ("clip", "llama")


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


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename itself is still atomic
    finally:
        os.close(fd)


def _check_tensors(tensors: Mapping[str, Any], config: PneumoLLMConfig, what: str) -> None:
    from pneumoview.inference.model import expected_trainable_shapes

    expected = expected_trainable_shapes(config)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    wrong = [f"{k} {tuple(tensors[k].shape)} != {shape}" for k, shape in expected.items()
             if k in tensors and tuple(tensors[k].shape) != shape]
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong[:3]))
    not_float = [k for k in expected if k in tensors and not tensors[k].is_floating_point()]
    if not_float:
        problems.append(f"not floating point: {', '.join(not_float[:3])}")
    if problems:
        raise BundleError(f"{what} do not fit architecture {config.name!r}: " + "; ".join(problems))


def save_bundle(directory: str | os.PathLike[str], trainable: Mapping[str, Any], manifest: Manifest,
                *, overwrite: bool = False) -> Path:
    """Write ``trainable`` tensors + ``manifest`` as a bundle directory, atomically; returns its path.

    Tensors must be exactly those of ``manifest.config`` (:func:`trainable_state_dict` gives them).
    An existing bundle is replaced only with ``overwrite=True`` (and then also atomically).
    ``manifest.weights_sha256`` is set to the written file's digest.
    """
    import torch
    from safetensors.torch import save_file

    target = Path(directory)
    if target.exists() and not overwrite:
        raise BundleError("a bundle already exists here (not overwritten)", path=target)
    config = manifest.model_config()
    if manifest.architecture != config.name:
        raise BundleError(f"manifest architecture {manifest.architecture!r} != config name {config.name!r}")
    if list(manifest.class_names) != list(config.class_names):
        raise BundleError(f"manifest class_names {manifest.class_names} != config's {list(config.class_names)}")
    _check_tensors(trainable, config, "tensors to save")
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in trainable.items()}

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    old: Path | None = None
    try:
        tmp.mkdir()
        weights = tmp / WEIGHTS_FILE
        save_file(tensors, str(weights), metadata={"format": "pt", "architecture": config.name,
                                                   "model_id": manifest.model_id})
        _fsync(weights)
        manifest.weights_file = WEIGHTS_FILE
        manifest.weights_sha256 = file_sha256(weights)
        manifest_path = tmp / MANIFEST_FILE
        manifest_path.write_text(json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                 encoding="utf-8")
        _fsync(manifest_path)
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        if old is not None and not target.exists():
            os.replace(old, target)  # put the previous bundle back
            old = None
        raise BundleError(f"cannot write bundle: {exc}", path=target) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read_manifest(directory: str | os.PathLike[str]) -> Manifest:
    """Only the manifest of a bundle (cheap: for listing models)."""
    path = Path(directory) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError("not a model bundle (no manifest.json)", path=Path(directory)) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"unreadable manifest: {exc}", path=path) from exc
    try:
        return Manifest.from_dict(data)
    except TypeError as exc:
        raise BundleError(f"malformed manifest: {exc}", path=path) from exc


def load_bundle(directory: str | os.PathLike[str]) -> tuple[Manifest, dict[str, Any]]:
    """Read a bundle: (manifest, float32 CPU tensors keyed by PneumoLLM names).

    Checks the weights file's SHA-256 against the manifest and the tensors against the manifest's
    architecture. Raises :class:`BundleError` on anything missing, corrupt or inconsistent.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(directory)
    manifest = read_manifest(root)
    config = manifest.model_config()
    if manifest.architecture != config.name:
        raise BundleError(f"manifest architecture {manifest.architecture!r} != config name {config.name!r}",
                          path=root)
    weights_name = Path(manifest.weights_file).name  # never follow a path out of the bundle
    weights = root / weights_name
    if not weights.is_file():
        raise BundleError(f"bundle lacks its weights file {weights_name}", path=root)
    if manifest.weights_sha256 and file_sha256(weights) != manifest.weights_sha256:
        raise BundleError("weights file is corrupt or was changed (SHA-256 differs from the manifest)",
                          path=weights)
    try:
        tensors = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"unreadable weights file: {exc}", path=weights) from exc
    try:
        _check_tensors(tensors, config, "bundle tensors")
    except BundleError as exc:
        raise BundleError(exc.reason, path=root) from exc
    return manifest, tensors


def check_fingerprints(manifest: Manifest, actual: Mapping[str, str]) -> None:
    """Refuse base weights other than the ones the bundle was trained on.

    ``actual`` maps "clip"/"llama" to fingerprints of the weights offered. Every fingerprint the
    manifest records must be present and equal; raises :class:`FingerprintMismatchError` naming them.
    """
    problems = []
    for key, expected in sorted(manifest.base_fingerprints.items()):
        got = actual.get(key)
        if got is None:
            problems.append(f"{key}: no fingerprint given (bundle expects {expected[:16]}...)")
        elif got != expected:
            problems.append(f"{key}: bundle expects {expected[:16]}..., offered weights are {got[:16]}...")
    if problems:
        name = manifest.name or manifest.model_id
        raise FingerprintMismatchError(
            f"model {name!r} was trained on other base weights - " + "; ".join(problems)
        )


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
    if name.startswith("module."):
        name = name[len("module."):]
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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BundleError(f"refused to load: the checkpoint holds more than tensors ({first})", path=source) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise BundleError(f"not a readable torch checkpoint: {exc}", path=source) from exc
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
