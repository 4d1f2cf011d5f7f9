"""The training child's protocol, shared by both sides and free of Qt and torch.

The retraining wizard runs ``python -m training ... --json-progress`` (``<app> train ...`` in the
frozen app) as a child process. The child writes one JSON object per line on stdout, each with
an ``"event"`` key naming one of the message types below; the client reads them with
:class:`JsonLineBuffer`. The emitter (``training.cli``) writes every message through
:func:`encode_event`, which checks it against :data:`SCHEMA`; the client decodes with
:func:`decode_event`, which applies the same check, so both sides fail the same way on a drift.

Exit codes of the child: :data:`EXIT_OK`, :data:`EXIT_ERROR` (one line on stderr and an
``error`` message), :data:`EXIT_CANCELLED` (SIGTERM/SIGINT; the last epoch's checkpoint is kept).

Also here, because the wizard needs them without torch: :func:`child_command`,
:func:`is_demo_weights` (demo base weights must never be taken for a full-size run) and
:func:`memory_warning`.
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict

PROTOCOL_VERSION = 1
EXIT_OK = 0
EXIT_ERROR = 2
EXIT_CANCELLED = 130

EventKind = Literal[
    "validate",
    "data_summary",
    "estimate",
    "start",
    "step",
    "epoch",
    "fold_done",
    "fold_skipped",
    "resumed",
    "cv_done",
    "message",
    "cancelled",
    "error",
    "done",
]


class ValidateEvent(TypedDict):
    event: Literal["validate"]
    done: int
    total: int


class DataSummaryEvent(TypedDict):
    event: Literal["data_summary"]
    summary: dict[str, Any]  # training.datacheck.DataSummary.public_dict(): counts, codes, keyed hashes
    text: str  # for the user's eyes (names problem files); never written to disk by the child


class EstimateEvent(TypedDict):
    event: Literal["estimate"]
    estimate: dict[str, Any]  # for ``device``: memory_gb, seconds, seconds_per_epoch, trainable_parameters, notes
    estimates: dict[str, dict[str, Any]]  # the same per device the child can use ("cpu", "cuda")
    machine_memory_gb: dict[str, float]  # RAM ("cpu") and GPU memory ("cuda") of the machine
    device: str
    cuda_available: bool
    devices: list[str]


class StartEvent(TypedDict):
    event: Literal["start"]
    folds: int
    of_folds: int
    epochs: int
    final_model: bool
    n_images: int
    device: str
    mixed_precision: str
    total_epochs: int
    world_size: int


class StepEvent(TypedDict):
    event: Literal["step"]
    fold: int  # -1 = final model
    epoch: int
    batch: int
    batches: int
    loss: float
    lr: float


class EpochEvent(TypedDict, total=False):
    event: Literal["epoch"]
    fold: int
    epoch: int
    epochs: int
    seconds: float
    eta_s: float
    done_epochs: int
    total_epochs: int
    train_loss: float
    lr: float
    val_loss: float  # present when the fold validates; so are the metrics (auc, avg, ...; None when undefined)
    auc: float | None


class DoneEvent(TypedDict):
    event: Literal["done"]
    bundle: str
    registry_id: str | None
    summary: dict[str, Any]
    comparison: dict[str, Any] | None
    compared_with: dict[str, Any] | None
    activated: bool
    seconds: float
    text: str


class ErrorEvent(TypedDict):
    event: Literal["error"]
    message: str
    type: str


#: Required keys and their JSON types per message (extra keys are allowed: newer children may add some).
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "validate": {"done": (int,), "total": (int,)},
    "data_summary": {"summary": (dict,), "text": (str,)},
    "estimate": {"estimate": (dict,), "device": (str,), "devices": (list,)},
    "start": {
        "folds": (int,),
        "of_folds": (int,),
        "epochs": (int,),
        "final_model": (bool,),
        "n_images": (int,),
        "device": (str,),
        "total_epochs": (int,),
        "world_size": (int,),
    },
    "step": {"fold": (int,), "epoch": (int,), "batch": (int,), "batches": (int,), "loss": (float, int)},
    "epoch": {
        "fold": (int,),
        "epoch": (int,),
        "epochs": (int,),
        "seconds": (float, int),
        "eta_s": (float, int),
        "done_epochs": (int,),
        "total_epochs": (int,),
        "train_loss": (float, int, type(None)),
    },
    "fold_done": {"fold": (int,), "best_epoch": (int,)},
    "fold_skipped": {"fold": (int,)},
    "resumed": {"fold": (int,), "epoch": (int,)},
    "cv_done": {"summary": (dict,)},
    "message": {"message": (str,)},
    "cancelled": {"message": (str,)},
    "error": {"message": (str,), "type": (str,)},
    "done": {"bundle": (str,), "summary": (dict,), "activated": (bool,), "text": (str,)},
}


class ProtocolError(ValueError):
    """A message that does not follow :data:`SCHEMA`."""


def check_event(event: Mapping[str, Any]) -> str:
    """The event's kind; raises :class:`ProtocolError` for an unknown kind or a missing/mistyped key."""
    kind = event.get("event")
    if kind not in SCHEMA:
        raise ProtocolError(f"unknown training event {kind!r}")
    for key, types in SCHEMA[kind].items():
        value = event.get(key)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ProtocolError(
                f"training event {kind!r}: {key!r} must be {'/'.join(t.__name__ for t in types)}, "
                f"not {type(value).__name__}"
            )
    return str(kind)


def _plain(value: Any) -> Any:
    """JSON-safe: non-finite floats -> None, numpy scalars -> Python, paths -> str, tuples -> lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        return _plain(item())
    return str(value)


def encode_event(event: Mapping[str, Any]) -> str:
    """One JSON line (no trailing newline) for a checked message; NaN/Inf are written as null."""
    plain = _plain(event)
    check_event(plain)
    return json.dumps(plain, allow_nan=False)


def decode_event(line: str) -> dict[str, Any]:
    """The message of one line; raises :class:`ProtocolError` (or ``ValueError`` for bad JSON)."""
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ProtocolError("a training event must be a JSON object")
    check_event(value)
    return value


class JsonLineBuffer:
    """Bytes from a child's stdout -> checked messages (partial lines wait; other lines kept in ``junk``)."""

    def __init__(self) -> None:
        self._pending = b""
        self.junk: list[str] = []

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        events = []
        for raw in lines:
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            try:
                events.append(decode_event(text))
            except ValueError:  # ProtocolError or JSON error: not a message of this protocol
                self.junk.append(text)
        return events


def child_command(args: Sequence[str], *, python: str | None = None) -> tuple[str, list[str]]:
    """Program and arguments of the training child.

    From an install: ``python -m training ARGS --json-progress``. In a frozen (PyInstaller) app the
    executable is PneumoView itself, which dispatches ``train``: ``<app> train ARGS --json-progress``.
    """
    python = python or sys.executable
    if getattr(sys, "frozen", False) and python == sys.executable:
        return sys.executable, ["train", *args, "--json-progress"]
    return python, ["-m", "training", *args, "--json-progress"]


#: Marker of the demo model's base weights (safetensors metadata, LLaMA config.json);
#: the same key as ``pneumoview.inference.weights.DEMO_MARK`` (that module imports torch).
DEMO_MARK = "pneumoview_demo"
#: Largest safetensors header read when looking for the marker.
_MAX_HEADER = 16 * 1024 * 1024


def _safetensors_metadata(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            return {}
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            return {}
        header = json.loads(fh.read(length).decode("utf-8"))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def is_demo_weights(path: str | os.PathLike[str] | None) -> bool:
    """True when ``path`` is one of the demo model's base weights (CLIP safetensors or LLaMA folder).

    Reads only the safetensors header or ``config.json``; unreadable files count as not demo.
    """
    if not path:
        return False
    p = Path(path)
    try:
        if p.is_dir():
            config = json.loads((p / "config.json").read_text(encoding="utf-8"))
            return isinstance(config, dict) and bool(config.get(DEMO_MARK))
        if p.is_file() and p.suffix == ".safetensors":
            return _safetensors_metadata(p).get(DEMO_MARK) == "1"
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return False


def memory_warning(estimate_gb: float | None, machine_gb: float | None, *, device: str) -> str | None:
    """A warning when a run's memory estimate exceeds the machine's memory on ``device``, else None."""
    if not estimate_gb or not machine_gb or estimate_gb <= machine_gb:
        return None
    where = "GPU memory" if device == "cuda" else "memory (RAM)"
    return (
        f"This run needs about {estimate_gb:.1f} GB, more than the {machine_gb:.1f} GB of {where} of this machine: "
        "it may fail or make the computer unusable. Try gradient checkpointing, another device or a smaller batch."
    )
