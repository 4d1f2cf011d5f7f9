"""Batch analysis split across processes: ``pneumoview analyze --distributed`` under ``accelerate
launch`` or ``torchrun`` (``accelerate launch --multi_gpu --num_processes N -m pneumoview analyze ...``
also works: several processes are recognised from ``WORLD_SIZE``).

Every process scans the same folders and builds the same work list (sorted by path, so all agree on
it), takes its share with accelerate's ``PartialState.split_between_processes``, analyses it with
:func:`pneumoview.commands.analyze.analyse` (the same per-file analysis as one process), and the results
are gathered to rank 0 (``accelerate.utils.gather_object``), which alone writes the one CSV.
On CPUs the processes talk over gloo. Each process loads its own copy of the model, so on one
machine the memory needed grows with the number of processes. (``accelerate launch --cpu
--num_processes 2`` starts ONE process: use ``--multi_gpu --num_processes 2`` or
``torchrun --nproc_per_node 2``, which start two on a CPU-only machine too.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from pneumoview.inference.engine import InferenceEngine


def requested(args: argparse.Namespace) -> bool:
    """``--distributed`` given, or started by a launcher with more than one process."""
    return bool(getattr(args, "distributed", False)) or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def device_for_rank(args: argparse.Namespace, device: str) -> str:
    """Under a launcher, ``auto`` / ``cuda`` mean this process's own GPU (``cuda:LOCAL_RANK``)."""
    local = os.environ.get("LOCAL_RANK")
    if not requested(args) or local is None or device not in ("auto", "cuda"):
        return device
    import torch

    return f"cuda:{int(local)}" if torch.cuda.is_available() else device


def torch_device_type(engine: InferenceEngine) -> str:
    plan = getattr(engine, "plan", None)
    return str(getattr(plan, "device_type", "cpu"))


def analyse(
    engine: InferenceEngine,
    todo: list[Any],  # commands.analyze._File; importing it here would close an import circle
    threshold: float,
    batch_size: int,
    progress: Callable[[int], None],
    *,
    analyse_share: Callable[..., None],
    dicom_out: Path | None = None,
    operating_point_id: str = "",
) -> bool:
    """Analyse this process's share of ``todo`` (analyze's files) and give every file its result on rank 0.

    Results travel as :class:`pneumoview.results.ImageResult` JSON. Returns True on the process that
    should write the CSV (rank 0), False on the others.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from pneumoview.results import ImageResult

    state = PartialState(cpu=torch_device_type(engine) == "cpu")  # gloo between CPU processes
    indexed = sorted(enumerate(todo), key=lambda item: os.fsencode(item[1].path))
    with state.split_between_processes(indexed) as mine:
        share = list(mine)
        print(
            f"pneumoview analyze: process {state.process_index + 1} of {state.num_processes}: "
            f"{len(share)} of {len(todo)} file(s)",
            file=sys.stderr,
            flush=True,
        )
        analyse_share(
            engine,
            [item for _, item in share],
            threshold,
            batch_size,
            progress if state.is_local_main_process else (lambda _n: None),
            dicom_out=dicom_out,
            operating_point_id=operating_point_id,
        )
    mine_done = [(index, item.result.to_json() if item.result is not None else "") for index, item in share]
    done = gather_object(mine_done) if state.num_processes > 1 else mine_done
    if not state.is_main_process:
        state.wait_for_everyone()
        return False
    seen = set()
    for index, text in done:
        if text:
            todo[index].result = ImageResult.from_json(text)
        seen.add(index)
    if len(seen) != len(todo):  # every file analysed exactly once, somewhere
        missing = sorted(set(range(len(todo))) - seen)
        raise RuntimeError(f"distributed analysis lost {len(missing)} file(s)")
    state.wait_for_everyone()
    return True
