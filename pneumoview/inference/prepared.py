"""Prepared-weights cache: base weights converted for a plan once, memory-mapped on every later start.

Reading LLaMA-7B from Meta's ``.pth`` files, from fp16/fp32 files, or quantising it to int8
costs a minute and, for some formats, a full copy in memory. The first load writes the tensors
exactly as the plan uses them (vision tower in its dtype, decoder in its dtype or int8 / int4 +
scales) into one safetensors file in the user cache folder; the next start maps that file
tensor by tensor (:mod:`pneumoview.inference.safetensors_mmap`) and skips reading and converting.
A CPU quantised plan's first load writes its entry as it reads (:func:`stream_entry`: each tensor
quantised, checked finite, written at its place in the file and dropped), then maps the entry like a
later start, so the whole quantised decoder is never held in memory; plans that only cast write the
whole state at the end (:func:`save_entry`).

Key: a SHA-256 over the cache format, the plan's device type, dtypes and quantisation, the torch
version, and the identity (name, size, modification time, inode, device, ctime) of every file of the CLIP weights and
the LLaMA folder. Changing the weights or the plan gives another key; an entry whose recorded base
fingerprints differ from those the bundle expects is not used. The base fingerprints are stored in
the entry's metadata (computed from the original files when it was written), so the bundle check
still runs on a warm start. A corrupt or unreadable entry is deleted and rebuilt; nothing in it is
ever unpickled (safetensors only). One entry is kept per pair of base weights (the newest plan),
and at most :data:`MAX_ENTRIES` in all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pneumoview.atomic import atomic_open, clean_stale
from pneumoview.errors import WeightsError
from pneumoview.inference import safetensors_mmap
from pneumoview.inference.safetensors_mmap import TensorSpec

if TYPE_CHECKING:
    from pneumoview.inference.plans import Plan

CACHE_FORMAT = 2  # 2: int8 scales in bf16 (torch._weight_int8pack_mm), file identity with inode
META_KEY = "pneumoview_prepared"
VISUAL, DECODER = "visual.", "decoder."
#: Entries kept in all (oldest dropped first): a full-size int8 entry is ~7 GB, a bf16 one ~14 GB.
MAX_ENTRIES = 3


def cache_dir() -> Path:
    """``<user cache folder>/prepared-weights`` (see :func:`pneumoview.paths.cache_dir`)."""
    from pneumoview.paths import cache_dir as user_cache

    return user_cache() / "prepared-weights"


def _identity(path: Path) -> list[list[object]]:
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    from pneumoview.inference.fingerprints import file_identity

    return [[f.name, *file_identity(f)[1:]] for f in files]  # size, mtime, inode, device, ctime


def _pair_id(clip_path: Path, llama_path: Path) -> str:
    text = json.dumps([str(clip_path.resolve()), str(llama_path.resolve())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_key(plan: Plan) -> dict[str, object]:
    """The parts of a :class:`~pneumoview.inference.plans.Plan` the prepared tensors depend on."""
    return {
        "device": plan.device_type,
        "vision": str(plan.vision_dtype),
        "decoder": str(plan.decoder_dtype),
        "quantisation": plan.quantisation,
    }


def cache_key(clip_path: Path, llama_path: Path, plan: Plan) -> str:
    text = json.dumps(
        {
            "format": CACHE_FORMAT,
            "plan": plan_key(plan),
            "torch": torch.__version__.split("+")[0],
            "clip": _identity(clip_path),
            "llama": _identity(llama_path),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Prepared:
    """Tensors as the plan uses them, and what the original files said about themselves."""

    visual: dict[str, torch.Tensor]
    decoder: dict[str, torch.Tensor]
    info: dict[str, object] = field(default_factory=dict)  # fingerprints, formats, notes, demo flags, configs


def entry_path(clip_path: Path, llama_path: Path, plan: Plan, directory: Path | None = None) -> Path:
    folder = directory or cache_dir()
    return folder / f"{_pair_id(clip_path, llama_path)}-{cache_key(clip_path, llama_path, plan)[:32]}.safetensors"


def load_entry(path: Path) -> Prepared | None:
    """The entry at ``path`` (memory-mapped), or None when absent; a corrupt entry is deleted (None)."""
    if not path.is_file():
        return None
    try:
        tensors, metadata = safetensors_mmap.load(path)
        info = json.loads(metadata[META_KEY])
        if not isinstance(info, dict) or info.get("format") != CACHE_FORMAT:
            raise ValueError("another cache format")
    except (WeightsError, KeyError, ValueError, TypeError):
        path.unlink(missing_ok=True)
        return None
    visual = {k[len(VISUAL) :]: v for k, v in tensors.items() if k.startswith(VISUAL)}
    decoder = {k[len(DECODER) :]: v for k, v in tensors.items() if k.startswith(DECODER)}
    if not visual or not decoder or len(visual) + len(decoder) != len(tensors):
        path.unlink(missing_ok=True)
        return None
    return Prepared(visual, decoder, info)


def save_entry(path: Path, prepared: Prepared) -> Path | None:
    """Write ``prepared`` atomically (temporary sibling, then rename); drop older entries of the same
    base weights. Returns the path, or None when the cache folder cannot be written (a warning, not an
    error: the model is loaded either way)."""
    tensors = {VISUAL + k: v.contiguous() for k, v in prepared.visual.items()}
    tensors.update({DECODER + k: v.contiguous() for k, v in prepared.decoder.items()})
    info = {**prepared.info, "format": CACHE_FORMAT}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as f:  # the temporary sibling is removed on any failure
            safetensors_mmap.write(f, tensors, {META_KEY: json.dumps(info)})
    except (OSError, ValueError):
        return None
    _drop_others(path)
    return path


def _drop_others(path: Path) -> None:
    """Drop the other entries of the same base weights, and the oldest beyond :data:`MAX_ENTRIES`."""
    pair = path.name.split("-", 1)[0]
    for other in path.parent.glob(f"{pair}-*.safetensors"):
        if other != path:
            other.unlink(missing_ok=True)
    others = sorted((p for p in path.parent.glob("*.safetensors") if p != path), key=lambda p: p.stat().st_mtime)
    for old in others[: max(0, len(others) + 1 - MAX_ENTRIES)]:
        old.unlink(missing_ok=True)


#: Header bytes kept for the entry's metadata when it is written before the metadata is known.
METADATA_ROOM = 256 * 1024


class EntryStream:
    """An entry being written tensor by tensor (see :func:`stream_entry`): ``write_visual`` /
    ``write_decoder`` each tensor as it is produced; ``info`` set before the block ends."""

    def __init__(self, writer: safetensors_mmap.StreamWriter) -> None:
        self.writer = writer
        self.info: dict[str, object] | None = None

    def write_visual(self, name: str, tensor: torch.Tensor) -> None:
        self.writer.write(VISUAL + name, tensor)

    def write_decoder(self, name: str, tensor: torch.Tensor) -> None:
        self.writer.write(DECODER + name, tensor)


@contextlib.contextmanager
def stream_entry(path: Path, visual: dict[str, TensorSpec], decoder: dict[str, TensorSpec]) -> Iterator[EntryStream]:
    """Write the entry at ``path`` as its tensors are produced (dtypes and shapes announced here), so
    that the whole prepared decoder is never in memory. It becomes visible (atomic rename,
    :func:`pneumoview.atomic.atomic_open`) only when the block ends without an exception, every
    announced tensor was written and ``info`` set; on any exception (a non-finite tensor, a read error,
    a full disk) the temporary file is removed and nothing is left under ``path``; a process killed
    mid-write leaves a hidden temporary file, removed by a later start once an hour old
    (:func:`pneumoview.atomic.clean_stale`). Older entries of the same base weights are dropped once
    it is in place."""
    specs = {VISUAL + k: v for k, v in visual.items()} | {DECODER + k: v for k, v in decoder.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent, legacy_patterns=(".*.safetensors.tmp-*",))  # what a killed start left (> 1 h old)
    with atomic_open(path, "wb") as f:
        stream = EntryStream(safetensors_mmap.StreamWriter(f, specs, metadata_room=METADATA_ROOM))
        yield stream
        if stream.info is None:
            raise ValueError("the entry's info was never set")
        stream.writer.finish({META_KEY: json.dumps({**stream.info, "format": CACHE_FORMAT})})
    _drop_others(path)
