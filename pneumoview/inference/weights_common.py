"""What the CLIP and LLaMA readers share: the loaded-weights record, the demo mark, safe
``torch.load``, dtype conversion as tensors are read, state-dict unwrapping, and giving freed
heap memory back to the OS while converting."""

from __future__ import annotations

import ctypes
import ctypes.util
import pickle
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pneumoview.errors import WeightsError

Tensor = torch.Tensor

#: Marks the demo model's random base weights: safetensors metadata value "1" / config.json ``true``.
DEMO_WEIGHTS_KEY = "pneumoview_demo"


_LIBC: ctypes.CDLL | None = None


def release_freed_heap() -> None:
    """Give the heap memory freed so far back to the OS (glibc's ``malloc_trim(0)``; a no-op elsewhere).

    Quantising a tensor makes temporaries of 16-45 MB; glibc serves those under its dynamic mmap
    threshold (up to 32 MB) from the heap and keeps the freed pages, so a 7B decoder streamed tensor
    by tensor into the prepared-weights cache grew the resident set by ~2-4 GB of free heap
    (measured); trimming once per decoder layer keeps it flat (:func:`pneumoview.inference.quant_cpu.state_transform`)."""
    global _LIBC
    if not sys.platform.startswith("linux"):
        return
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            return
    trim = getattr(_LIBC, "malloc_trim", None)  # glibc only (not musl)
    if trim is not None:
        trim(0)


@dataclass
class LoadedWeights:
    """Base weights read from disk, ready for :func:`pneumoview.inference.model.load_base_weights`.

    ``fingerprint`` is computed on the tensors as stored (before any dtype conversion), so the
    same file gives the same fingerprint whatever precision the engine runs in.
    """

    state: dict[str, Tensor]
    config: dict
    fingerprint: str
    source_format: str  # "openai-torchscript", "torch-state-dict", "safetensors", "hf-folder", "meta-consolidated"
    source_dtype: torch.dtype | None
    path: Path
    notes: list[str] = field(default_factory=list)
    demo: bool = False  # the random demo weights (marked in their files), never a real model

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state.values())


def _torch_load(path: Path) -> object:
    """``torch.load`` that never unpickles code: weights_only, memory-mapped where possible."""
    mmap = zipfile.is_zipfile(path)  # mmap needs the zip format (torch >= 1.6 default)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            "refusing to unpickle this file: it holds more than tensors "
            f"(only weights_only=True loads are allowed): {exc}".splitlines()[0],
            path=path,
        ) from exc
    except (RuntimeError, ValueError, EOFError, OSError, AttributeError, TypeError) as exc:
        raise WeightsError(f"cannot read as a plain tensor file: {exc}".splitlines()[0], path=path) from exc


def _convert(tensor: Tensor, dtype: torch.dtype | None, device: str | torch.device | None = None) -> Tensor:
    """Tensor in ``dtype`` (floating point only) on ``device``; unchanged where nothing is asked."""
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    if device is not None and tensor.device != torch.device(device):
        tensor = tensor.to(device)
    return tensor


def _dominant_dtype(state: Mapping[str, Tensor]) -> torch.dtype | None:
    sizes: dict[torch.dtype, int] = {}
    for t in state.values():
        sizes[t.dtype] = sizes.get(t.dtype, 0) + t.numel()
    return max(sizes, key=sizes.__getitem__) if sizes else None


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"expected a state dict (name -> tensor), found {type(obj).__name__}", path=path)
    state = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise WeightsError("the file holds no tensors", path=path)
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state
