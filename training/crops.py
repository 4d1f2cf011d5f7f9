"""Model crops of training images, cached on disk.

Every image goes through exactly the inference preprocessing (``pneumoview.imageio.load_grey``
-> ``pneumoview.preprocess.prepare_grey``: the same lung localiser, crop and size). The
resulting crop is cached on disk, keyed by the SHA-256 of the file's bytes, the preprocessing
parameters and :func:`pipeline_fingerprint`, so a rerun never decodes the image again and a
changed pipeline never reuses stale crops.

The fingerprint is computed from what a frozen (PyInstaller) app has: :data:`PIPELINE_VERSION`
(bump it with any change of how a crop is made), the compiled code objects of the preprocessing
modules (byte code, constants and names; no source file is read) and the lung localiser's weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import types
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pneumoview.atomic import atomic_open, atomic_write_text
from pneumoview.errors import (
    DicomReadError,
    PixelDecodeError,
    TrainingDataError,
    UnsupportedImageError,
    storage_error,
)
from pneumoview.hashing import file_sha256

#: Errors that make one file unusable (listed as unreadable); any other error stops validation
#: (e.g. missing localiser weights is not a data problem).
FILE_ERRORS = (DicomReadError, PixelDecodeError, UnsupportedImageError, TrainingDataError)
#: Errors a decoder or the lung localiser may raise on one hostile or odd file (truncated streams,
#: zero-height images, damaged deflate data...): turned into a per-file ``TrainingDataError``.
DECODE_ERRORS = (ValueError, EOFError, zlib.error, IndexError, KeyError, MemoryError, OverflowError)

#: Bump when the cached entry format changes.
CACHE_FORMAT = 1
#: Bump whenever the way a crop is made changes in a way the code fingerprint could miss
#: (e.g. a change inside a third-party decoder's use).
PIPELINE_VERSION = 2
#: The modules whose code decides a crop.
PIPELINE_MODULES = ("pneumoview.imageio", "pneumoview.preprocess", "pneumoview.dicom.lungs", "pneumoview.dicom.display")

#: Stale temporary files (``.name.xxx.tmp``) older than this are removed when a cache opens.
STALE_TMP_SECONDS = 3600.0


def default_cache_dir() -> Path:
    """``$PNEUMOVIEW_HOME/cache/crops`` or the platformdirs user cache folder ``.../crops``."""
    from platformdirs import user_cache_dir

    from pneumoview.paths import APP_NAME, home_override

    home = home_override()
    return (home / "cache" if home else Path(user_cache_dir(APP_NAME, appauthor=False))) / "crops"


def _code_digest(digest: Any, code: types.CodeType) -> None:
    """Feed a code object's byte code, names and constants (recursively) into ``digest``.

    File names and line numbers are left out, so the same code gives the same digest wherever
    it is installed (checkout, wheel or frozen app).
    """
    digest.update(code.co_name.encode())
    digest.update(code.co_code)
    digest.update(repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_digest(digest, const)
        else:
            digest.update(repr(const).encode())


def _module_digest(digest: Any, module: types.ModuleType) -> None:
    """Digest of the functions and classes a module defines (sorted by name)."""
    name = module.__name__
    for attr in sorted(vars(module)):
        value = vars(module)[attr]
        if getattr(value, "__module__", None) != name:
            continue
        if isinstance(value, types.FunctionType):
            digest.update(f"def {attr}".encode())
            _code_digest(digest, value.__code__)
        elif isinstance(value, type):
            digest.update(f"class {attr}".encode())
            for member_name in sorted(vars(value)):
                member = vars(value)[member_name]
                func = getattr(member, "__func__", member)
                if isinstance(func, types.FunctionType):
                    digest.update(member_name.encode())
                    _code_digest(digest, func.__code__)
        elif isinstance(value, (int, float, str, tuple, frozenset)) and attr.isupper():
            digest.update(f"{attr}={value!r}".encode())


@lru_cache(maxsize=1)
def pipeline_fingerprint() -> str:
    """SHA-256 over :data:`PIPELINE_VERSION`, the code of :data:`PIPELINE_MODULES` and the localiser weights.

    Reads no ``.py`` file, so it works the same in a frozen app.
    """
    import importlib

    digest = hashlib.sha256(f"pipeline-v{PIPELINE_VERSION}".encode())
    for name in PIPELINE_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            digest.update(f"{name}:absent".encode())
            continue
        digest.update(name.encode())
        _module_digest(digest, module)
    lung_file = getattr(importlib.import_module("pneumoview.dicom.lungs"), "__file__", None)
    lung_dir = Path(lung_file).parent / "lung_model" if lung_file else None
    if lung_dir is not None and lung_dir.is_dir():
        for weights in sorted(lung_dir.glob("*.npz")):
            digest.update(weights.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class PreparedImage:
    """A model crop and what was learnt while making it (cached together)."""

    crop_path: Path  # .npy float32 [size, size] in [0, 1]
    content_sha256: str  # of the file's bytes
    pixel_sha256: str  # of the decoded grey pixels (exact-duplicate detection)
    lungs_found: bool  # False = the localiser fell back to the whole image
    suitability_code: str | None  # DICOM suitability code when not diagnosable (e.g. "lateral-view")
    suitability_reason: str
    notes: tuple[str, ...] = ()

    def load_crop(self) -> np.ndarray:
        return np.load(self.crop_path, allow_pickle=False)


def remove_stale_temp_files(directory: Path, *, older_than: float = STALE_TMP_SECONDS) -> int:
    """Delete hidden ``.*.tmp`` files left by interrupted atomic writes under ``directory``; returns how many."""
    if not directory.is_dir():
        return 0
    cutoff = time.time() - older_than
    removed = 0
    for path in directory.rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


class CropCache:
    """On-disk cache of model crops: ``<dir>/<key[:2]>/<key>.npy`` + ``<key>.json``, written atomically.

    ``key`` = SHA-256 of (file content hash, size, margin, pipeline fingerprint, format). Entries
    hold no path or patient identifier.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, *, size: int = 224, margin: float | None = None
    ):
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.size = int(size)
        self.margin = margin
        self.hits = 0
        self.misses = 0

    def key(self, content_sha256: str) -> str:
        params = json.dumps(
            {
                "content": content_sha256,
                "size": self.size,
                "margin": self.margin,
                "pipeline": pipeline_fingerprint(),
                "format": CACHE_FORMAT,
            },
            sort_keys=True,
        )
        return hashlib.sha256(params.encode()).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.directory / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.json"

    def _cached(self, path: Path, npy: Path, meta_path: Path) -> PreparedImage | None:
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if "error" in meta:  # this exact content failed before with this pipeline
                self.hits += 1
                raise TrainingDataError(meta["error"], path=path)
            if npy.is_file():
                prepared = _prepared_from_meta(npy, meta)
                self.hits += 1
                return prepared
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry is simply rebuilt
        return None

    def prepare(self, path: str | os.PathLike[str]) -> PreparedImage:
        """The crop of ``path`` (from the cache, else decoded, localised, cropped and stored).

        Raises a ``FILE_ERRORS`` error for a file that cannot be used; an ``OSError`` only when
        the cache itself cannot be written (disk full, read-only folder).
        """
        path = Path(path)
        try:
            content = file_sha256(path)
        except OSError as exc:
            raise TrainingDataError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
        key = self.key(content)
        npy, meta_path = self._paths(key)
        cached = self._cached(path, npy, meta_path)
        if cached is not None:
            return cached
        self.misses += 1
        try:
            crop, meta = _make_crop(path, size=self.size, margin=self.margin)
        except FILE_ERRORS as exc:
            self._remember_error(meta_path, exc.reason, type(exc).__name__)
            raise
        except DECODE_ERRORS as exc:
            reason = f"cannot decode the image ({type(exc).__name__}: {exc})"[:300]
            self._remember_error(meta_path, reason, type(exc).__name__)
            raise TrainingDataError(reason, path=path) from exc
        meta["content_sha256"] = content
        try:
            npy.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(npy, "wb") as fh:
                np.save(fh, crop.astype(np.float32, copy=False), allow_pickle=False)
            atomic_write_text(meta_path, json.dumps(meta, sort_keys=True))
        except OSError as exc:  # the cache folder, not the image: "disk full: <cache folder>"
            raise storage_error(exc, self.directory) from exc
        return _prepared_from_meta(npy, meta)

    def _remember_error(self, meta_path: Path, reason: str, error_type: str) -> None:
        try:
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(meta_path, json.dumps({"error": reason, "error_type": error_type}))
        except OSError as exc:
            raise storage_error(exc, self.directory) from exc


def _prepared_from_meta(npy: Path, meta: dict[str, Any]) -> PreparedImage:
    return PreparedImage(
        crop_path=npy,
        content_sha256=meta["content_sha256"],
        pixel_sha256=meta["pixel_sha256"],
        lungs_found=bool(meta["lungs_found"]),
        suitability_code=meta.get("suitability_code"),
        suitability_reason=meta.get("suitability_reason", ""),
        notes=tuple(meta.get("notes", ())),
    )


def _make_crop(path: Path, *, size: int, margin: float | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Inference preprocessing of one file (``load_grey`` -> ``prepare_grey``) + DICOM suitability."""
    from pneumoview.imageio import load_grey
    from pneumoview.preprocess import prepare_grey

    grey = load_grey(path)
    pixels = np.ascontiguousarray(grey.pixels, dtype=np.float32)
    pixel_hash = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()
    model_input = prepare_grey(grey, size=size, margin=margin)
    code, reason = None, ""
    if grey.is_dicom:
        code, reason = _dicom_suitability(path)
    meta = {
        "pixel_sha256": pixel_hash,
        "lungs_found": not bool(model_input.box.fallback),
        "box": [int(model_input.box.x0), int(model_input.box.y0), int(model_input.box.x1), int(model_input.box.y1)],
        "suitability_code": code,
        "suitability_reason": reason,
        "notes": list(grey.notes) + list(model_input.notes),
    }
    return np.asarray(model_input.crop, dtype=np.float32), meta


def _dicom_suitability(path: Path) -> tuple[str | None, str]:
    """``(code, reason)`` of ``pneumoview.dicom.suitability.assess`` when not diagnosable, else ``(None, "")``."""
    from pneumoview.dicom.scan import read_record
    from pneumoview.dicom.suitability import assess

    verdict = assess(read_record(path))
    if verdict.diagnosable:
        return None, ""
    return verdict.code or "unsuitable", verdict.reason
