"""Content fingerprints of base weights (``pvfp1:<sha256>``) and whole-file SHA-256s.

Every bundle records the fingerprints of the base weights it was trained on, and the engine
refuses other base weights; see :func:`fingerprint_state` for exactly what a fingerprint covers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch

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


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a whole file, read in 4 MiB chunks.

    Remembered for this process by (resolved path, size, modification time): reloading the same
    890 MB CLIP archive does not hash it again, while a replaced or modified file is re-hashed.
    """
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _SHA256_CACHE:
        return _SHA256_CACHE[key]
    _SHA256_CACHE[key] = file_sha256(path, chunk=chunk)
    return _SHA256_CACHE[key]
