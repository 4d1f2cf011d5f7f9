"""The GUI's side of the analysis worker process: the protocol lives in :mod:`pneumoview.service.analysis`
(Qt-free, shared with the child); here only what ties it to this GUI process (its thread limits)."""

from __future__ import annotations

import os

from pneumoview.service.analysis import (
    AnalysisClient as _ServiceClient,
)
from pneumoview.service.analysis import (
    EngineSpec,
    error_from_event,
    worker_command,
)

#: Which BLAS/OpenMP thread variables the GUI process set for itself (:func:`pneumoview.ui.app.limit_gui_process_threads`):
#: the analysis child does not inherit them, the model wants its cores.
THREAD_ENV_SET_HERE: set[str] = set()

__all__ = [
    "THREAD_ENV_SET_HERE",
    "AnalysisClient",
    "EngineSpec",
    "child_environment",
    "error_from_event",
    "worker_command",
]


def child_environment() -> dict[str, str]:
    """The GUI's environment without the one-thread BLAS limits the GUI set for itself
    (:data:`THREAD_ENV_SET_HERE`): the model wants its cores."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV_SET_HERE}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class AnalysisClient(_ServiceClient):
    """:class:`pneumoview.service.analysis.AnalysisClient` with the GUI's child environment."""

    def __init__(self, command: list[str] | None = None) -> None:
        super().__init__(command, environment=child_environment)
