"""Zero-copy reading of safetensors files: every tensor is its own private memory map.

Why not ``safetensors.safe_open(...).get_tensor``: it copies each tensor out of one map of the
whole file, and every page touched stays mapped (and counted in the process's resident memory)
until the file is closed -- a 10 GB LLaMA shard read through it costs 10 GB of resident pages
*plus* the copies. Here each tensor maps only its own bytes (``mmap`` with ``ACCESS_COPY``:
private, copy-on-write, clean pages that the OS can drop and re-read), so a tensor that is kept as
stored costs no copy, and a tensor that is converted (cast, quantised) releases its map as soon as
it is dropped.

The format (https://github.com/huggingface/safetensors): 8-byte little-endian header length N,
N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``,
then the data. Every entry is checked (known dtype, offsets inside the file, size = shape x dtype)
before anything is mapped; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import torch

from pneumoview.errors import WeightsError

DTYPES: dict[str, torch.dtype] = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I8": torch.int8,
    "U8": torch.uint8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "BOOL": torch.bool,
}
MAX_HEADER = 100 * 1024 * 1024
#: Byte alignment of the data of the files :func:`save` writes (see there).
ALIGN = 64


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, dict], dict[str, str], int]:
    """(entries by name, metadata, offset of the data) of a safetensors file, fully validated."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise WeightsError("not a safetensors file (shorter than its header)", path=path)
            (n,) = struct.unpack("<Q", raw)
            if n > min(MAX_HEADER, size - 8):
                raise WeightsError("not a safetensors file (header length out of range)", path=path)
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"cannot read safetensors header: {exc}", path=path) from exc
    if not isinstance(header, dict):
        raise WeightsError("safetensors header is not a JSON object", path=path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsError("safetensors metadata must map text to text", path=path)
    start = 8 + n
    for name, entry in header.items():
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = [int(d) for d in entry["shape"]]
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"safetensors entry {name!r} is malformed ({exc})", path=path) from None
        width = torch.empty(0, dtype=dtype).element_size()
        if (
            min(shape, default=0) < 0
            or not 0 <= begin <= end
            or start + end > size
            or end - begin != math.prod(shape) * width
        ):
            raise WeightsError(f"safetensors entry {name!r} does not fit the file (truncated?)", path=path)
    return header, metadata, start


def _map(fd: int, offset: int, length: int, dtype: torch.dtype, shape: list[int]) -> torch.Tensor:
    if length == 0:
        return torch.empty(shape, dtype=dtype)
    aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
    region = mmap.mmap(fd, length + offset - aligned, access=mmap.ACCESS_COPY, offset=aligned)
    flat = torch.frombuffer(region, dtype=dtype, count=math.prod(shape), offset=offset - aligned)
    return flat.view(shape)  # keeps ``region`` alive; unmapped when the tensor goes


def iter_tensors(
    path: str | os.PathLike[str], wanted: Callable[[str], bool] = lambda _k: True
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for each wanted entry, in file order, each backed by its own private map."""
    path = Path(path)
    header, _metadata, start = read_header(path)
    order = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise WeightsError(f"cannot open: {exc.strerror or exc}", path=path) from exc
    try:
        for name in order:
            if not wanted(name):
                continue
            entry = header[name]
            begin, end = entry["data_offsets"]
            try:
                tensor = _map(fd, start + begin, end - begin, DTYPES[entry["dtype"]], list(entry["shape"]))
            except (OSError, ValueError) as exc:
                raise WeightsError(f"cannot map tensor {name!r}: {exc}", path=path) from exc
            yield name, tensor
    finally:
        os.close(fd)  # the maps stay valid without the descriptor


def load(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors (memory-mapped) and the metadata of one safetensors file."""
    _header, metadata, _start = read_header(path)
    return dict(iter_tensors(path)), metadata


#: (dtype, shape) of one tensor, as a header announces it before its data exists.
TensorSpec = tuple[torch.dtype, tuple[int, ...]]


def _code(name: str, dtype: torch.dtype) -> str:
    code = next((k for k, v in DTYPES.items() if v == dtype), None)
    if code is None:
        raise ValueError(f"{name}: dtype {dtype} cannot be written to safetensors")
    return code


def layout(specs: dict[str, TensorSpec]) -> tuple[list[str], dict[str, dict]]:
    """(names in file order, header entries) for tensors of these dtypes and shapes: the tensors whose
    sizes are multiples of :data:`ALIGN` first (in name order), so that each of them starts aligned."""

    def size(name: str) -> int:
        dtype, shape = specs[name]
        return math.prod(shape) * torch.empty(0, dtype=dtype).element_size()

    names = sorted(specs, key=lambda k: (size(k) % ALIGN != 0, k))
    header: dict[str, dict] = {}
    offset = 0
    for name in names:
        dtype, shape = specs[name]
        header[name] = {
            "dtype": _code(name, dtype),
            "shape": list(shape),
            "data_offsets": [offset, offset + size(name)],
        }
        offset += size(name)
    return names, header


def _header_bytes(header: dict[str, dict], metadata: dict[str, str] | None, length: int = 0) -> bytes:
    """The JSON header padded with spaces to a multiple of :data:`ALIGN` (with the 8-byte length) and
    to at least ``length`` bytes."""
    full: dict[str, object] = dict(header)
    if metadata:
        full["__metadata__"] = dict(metadata)
    raw = json.dumps(full, separators=(",", ":")).encode()
    raw += b" " * max(-(8 + len(raw)) % ALIGN, length - len(raw))
    return raw


def _write_tensor(f: IO[bytes], t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    if t.numel():
        f.write(t.reshape(-1).view(torch.uint8).numpy().data)


def save(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write a standard safetensors file tensor by tensor (no second copy of the data in memory,
    unlike ``safetensors.torch.save_file``, which builds every tensor's bytes first).

    Memory-mapped tensors keep the file's alignment, and some CPU kernels need aligned operands
    (``torch._weight_int8pack_mm`` crashes on int8 weights that are not 16-byte aligned): the header
    is padded so that the data starts at a multiple of :data:`ALIGN` bytes, and the tensors are laid
    out by :func:`layout`.
    """
    with open(path, "wb") as f:
        write(f, tensors, metadata)
        f.flush()
        os.fsync(f.fileno())


def write(f: IO[bytes], tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """:func:`save`'s bytes into a file opened for writing (e.g. :func:`pneumoview.atomic.atomic_open`'s)."""
    names, header = layout({k: (t.dtype, tuple(t.shape)) for k, t in tensors.items()})
    raw = _header_bytes(header, metadata)
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for name in names:
        _write_tensor(f, tensors[name])


class StreamWriter:
    """Writes a safetensors file whose tensors arrive one by one, in any order, into a file opened for
    writing (``f``), so that no more than one of them need be in memory.

    The names, dtypes and shapes (``specs``) are known in advance: the data is laid out as :func:`save`
    lays it out, and each :meth:`write` lands at its offset. The metadata may be known only at the end
    (:meth:`finish`): the header is given ``metadata_room`` bytes for it (JSON padded with spaces, which
    the format allows); with the same metadata passed here, the file is byte-identical to :func:`save`'s.
    A tensor that is not announced, does not match its announcement or comes twice, and a :meth:`finish`
    before every tensor came, raise ValueError.
    """

    def __init__(
        self,
        f: IO[bytes],
        specs: dict[str, TensorSpec],
        metadata: dict[str, str] | None = None,
        metadata_room: int = 0,
    ) -> None:
        self.f, self.specs, self.metadata = f, specs, metadata
        _names, self.header = layout(specs)
        placeholder = {"_": " " * metadata_room} if metadata_room else None
        self.header_length = len(_header_bytes(self.header, metadata or placeholder))
        self.start = 8 + self.header_length
        self.written: set[str] = set()

    def write(self, name: str, tensor: torch.Tensor) -> None:
        spec = self.specs.get(name)
        if spec is None:
            raise ValueError(f"{name}: not announced in the header")
        if name in self.written:
            raise ValueError(f"{name}: written twice")
        if (tensor.dtype, tuple(tensor.shape)) != (spec[0], tuple(spec[1])):
            raise ValueError(f"{name}: {tensor.dtype} {tuple(tensor.shape)} is not the announced {spec[0]} {spec[1]}")
        self.f.seek(self.start + self.header[name]["data_offsets"][0])
        _write_tensor(self.f, tensor)
        self.written.add(name)

    def finish(self, metadata: dict[str, str] | None = None) -> None:
        """Write the header (with ``metadata``, or the one given at the start); every tensor must have come."""
        missing = sorted(set(self.specs) - self.written)
        if missing:
            raise ValueError(f"{len(missing)} announced tensors never written (e.g. {missing[0]})")
        raw = _header_bytes(self.header, metadata if metadata is not None else self.metadata, self.header_length)
        if len(raw) != self.header_length:
            raise ValueError(f"the metadata needs {len(raw) - self.header_length} more bytes than reserved")
        end = self.start + max((e["data_offsets"][1] for e in self.header.values()), default=0)
        self.f.truncate(end)  # the last tensor may be empty: the file still ends at the data's end
        self.f.seek(0)
        self.f.write(struct.pack("<Q", len(raw)))
        self.f.write(raw)
        self.f.flush()
