"""Training checkpoints without pickle: tensors in one safetensors file, the rest as JSON in its header.

One file per checkpoint, written to a temporary sibling and moved into place with ``os.replace``,
so a crash or a kill leaves either the previous checkpoint or the new one, never half of one.

Tensor keys: ``model.<trainable name>``, ``best.<trainable name>``, ``optim.<param index>.<state name>``
(AdamW's ``step``, ``exp_avg``, ``exp_avg_sq``), ``rng.torch``, ``rng.cuda.<i>``. Everything else
(fold, epoch, scheduler step, history, optimizer hyper-parameters) is the JSON string under the
header's ``"state"`` key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pneumoview.atomic import fsync_dir
from pneumoview.errors import BundleError, storage_error


def save_checkpoint(path: str | os.PathLike[str], tensors: Mapping[str, Tensor], state: Mapping[str, Any]) -> None:
    """Write ``tensors`` + JSON ``state`` to ``path`` atomically (tmp + fsync + ``os.replace``).

    Raises ``StorageError`` (``disk full: PATH`` / ``cannot write PATH: ...``) when it cannot be written.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    from safetensors import SafetensorError

    try:
        save_file(clean, str(tmp), metadata={"state": json.dumps(state, sort_keys=True)})
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as exc:  # full or read-only disk: one clear line naming the checkpoint
        tmp.unlink(missing_ok=True)
        raise storage_error(exc, path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, state)`` of a checkpoint; raises ``BundleError`` for a damaged file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        tensors: dict[str, Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            for key in fh.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                tensors[key] = fh.get_tensor(key)
        state = json.loads(meta["state"])
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise BundleError(f"training checkpoint is damaged or unreadable: {exc}", path=path) from exc
    return tensors, state


def sub_dict(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Tensors whose key starts with ``prefix + '.'``, with the prefix removed."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def with_prefix(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """Optimizer state as flat tensors ``optim.<i>.<name>`` + JSON-able param groups."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    for index, per_param in sd["state"].items():
        for name, value in per_param.items():
            tensors[f"optim.{index}.{name}"] = value if isinstance(value, Tensor) else torch.tensor(value)
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor], groups: list[dict[str, Any]]
) -> None:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if not key.startswith("optim."):
            continue
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    restored = []
    for g in groups:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        restored.append(g)
    optimizer.load_state_dict({"state": state, "param_groups": restored})


def rng_tensors() -> dict[str, Tensor]:
    """Torch CPU (and CUDA) generator states: dropout draws continue exactly after a resume."""
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: Mapping[str, Tensor]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in cuda])
