"""Content fingerprints of base weights (``pvfp1:<sha256>``) and whole-file SHA-256s.

Every bundle records the fingerprints of the base weights it was trained on, and the engine
refuses other base weights; see :func:`fingerprint_state` for exactly what a fingerprint covers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from pneumoview.atomic import atomic_write_text
from pneumoview.errors import PneumoViewError
from pneumoview.hashing import file_sha256

Tensor = torch.Tensor

#: Fingerprint format tag; change it whenever :func:`fingerprint_state` changes.
FINGERPRINT_VERSION = "pvfp1"
#: Elements sampled (evenly strided) from each tensor for the fingerprint, plus its first/last few.
FINGERPRINT_SAMPLES = 4096
FINGERPRINT_EDGE = 64


def _tensor_digest(key: str, tensor: Tensor) -> bytes:
    """SHA-256 of one tensor's name, shape and a sample of its values (cast to float32)."""
    h = hashlib.sha256()
    h.update(key.encode())
    h.update(repr(tuple(tensor.shape)).encode())
    flat = tensor.detach().reshape(-1)
    n = flat.numel()
    if n <= FINGERPRINT_SAMPLES + 2 * FINGERPRINT_EDGE:
        sample = flat
    else:
        idx = torch.linspace(0, n - 1, FINGERPRINT_SAMPLES, dtype=torch.float64).round().long()
        sample = torch.cat([flat[:FINGERPRINT_EDGE], flat[idx], flat[-FINGERPRINT_EDGE:]])
    if sample.is_floating_point():
        sample = sample.to(device="cpu", dtype=torch.float32)
    else:
        sample = sample.to(device="cpu", dtype=torch.int64)
    h.update(sample.contiguous().numpy().tobytes())
    return h.digest()


def _combine_digests(digests: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()
    for key in sorted(digests):
        h.update(digests[key])
    return f"{FINGERPRINT_VERSION}:{h.hexdigest()}"


def fingerprint_state(state: Mapping[str, Tensor]) -> str:
    """Content fingerprint of a state dict: ``"pvfp1:<sha256 hex>"``.

    Covers, for every tensor (in sorted key order): its key, its shape, its first and last
    64 values and 4,096 values at evenly spaced positions, each cast to float32. It does not
    cover the storage dtype: a float16 tensor and its exact float32 up-cast give the same
    fingerprint (so OpenAI's fp16 archive and an fp32 re-save of it agree), while a lossy
    conversion (fp16 -> bf16, quantisation, fine-tuning) changes it. Weights read in another
    file format (Meta consolidated vs. a lossless Hugging Face conversion) give the same
    fingerprint because keys are normalised to Hugging Face names first. It is a sampled
    identity check against mix-ups, not a cryptographic hash of every byte.
    """
    return _combine_digests({key: _tensor_digest(key, t) for key, t in state.items()})


_SHA256_CACHE: dict[tuple[object, ...], str] = {}
#: Whole-file digests remembered across starts (most recent first), in the user cache folder.
SHA256_CACHE_FILE = "file-sha256.json"  # also remembers checked facts (:func:`fact_known`)
SHA256_CACHE_ENTRIES = 64


def file_identity(path: str | os.PathLike[str]) -> tuple[object, ...]:
    """What says a file is unchanged without reading it: (resolved path, size, mtime_ns, inode,
    device, ctime_ns). A rewrite changes size or mtime; a replaced file (``os.replace``, a copy with
    the old mtime restored) has another inode, and any write or ``utime`` moves ctime."""
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns)


def _identity_key(identity: tuple[object, ...]) -> str:
    """The on-disk key: a SHA-256 of the identity (no path is written to the cache file)."""
    return hashlib.sha256(json.dumps(list(identity)).encode()).hexdigest()


def _sha256_store() -> Path | None:
    try:
        from pneumoview.paths import cache_dir

        return cache_dir() / SHA256_CACHE_FILE
    except (OSError, PneumoViewError):
        return None


def _read_store(store: Path) -> dict[str, str]:
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _remember(store: Path, key: str, digest: str) -> None:
    entries = {key: digest, **{k: v for k, v in _read_store(store).items() if k != key}}
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(store, json.dumps(dict(list(entries.items())[:SHA256_CACHE_ENTRIES])))
    except OSError:
        pass  # a cache that cannot be written only costs the next start a re-hash


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 22, persistent: bool = True) -> str:
    """SHA-256 hex digest of a whole file, read in 4 MiB chunks.

    Remembered by :func:`file_identity` in this process and (``persistent``) in the user cache
    folder's ``file-sha256.json``: a later start does not hash the same 890 MB CLIP archive again,
    while a modified or replaced file (another size, mtime, inode or ctime) is always re-hashed.
    """
    identity = file_identity(path)
    if identity in _SHA256_CACHE:
        return _SHA256_CACHE[identity]
    store = _sha256_store() if persistent else None
    key = _identity_key(identity)
    digest = _read_store(store).get(key) if store is not None else None
    if digest is None:
        digest = file_sha256(path, chunk=chunk)
        if file_identity(path) == identity and store is not None:  # unchanged while it was read
            _remember(store, key, digest)
    _SHA256_CACHE[identity] = digest
    return digest


def _files_of(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())


def _fact_key(fact: str, paths: list[Path]) -> str:
    return _identity_key((fact, *[file_identity(f) for path in paths for f in _files_of(path)]))


def fact_known(fact: str, paths: list[Path]) -> bool:
    """Whether ``fact`` (e.g. ``"finite"``) was recorded for these files (folders: every file in
    them) as they are now: any changed, added or removed file makes it unknown again."""
    store = _sha256_store()
    return store is not None and _read_store(store).get(_fact_key(fact, paths)) == fact


def record_fact(fact: str, paths: list[Path]) -> None:
    """Remember ``fact`` for these files as they are now (see :func:`fact_known`); best effort."""
    store = _sha256_store()
    if store is not None:
        _remember(store, _fact_key(fact, paths), fact)
