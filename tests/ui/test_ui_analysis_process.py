"""The GUI's side of the analysis process: its environment (the protocol is tested in tests/service)."""

from __future__ import annotations

import pytest

from pneumoview.ui.analysis_process import AnalysisClient


def test_gui_thread_limits_are_not_passed_to_the_analysis_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from pneumoview.ui import app
    from pneumoview.ui.analysis_process import THREAD_ENV_SET_HERE, child_environment

    for name in app.GUI_THREAD_ENV:  # recorded, so the test leaves the environment as it was
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    saved = set(THREAD_ENV_SET_HERE)  # the one set app fills and child_environment reads
    THREAD_ENV_SET_HERE.clear()
    try:
        monkeypatch.setenv("MKL_NUM_THREADS", "3")  # the user's own choice is kept
        app.limit_gui_process_threads()
        assert os.environ["OPENBLAS_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "3"
        env = child_environment()
        assert "OPENBLAS_NUM_THREADS" not in env and "OMP_NUM_THREADS" not in env
        assert env["MKL_NUM_THREADS"] == "3" and env["PYTHONUNBUFFERED"] == "1"
    finally:
        THREAD_ENV_SET_HERE.clear()
        THREAD_ENV_SET_HERE.update(saved)


def test_the_gui_client_starts_the_child_with_the_gui_environment() -> None:
    from pneumoview.service.analysis import AnalysisClient as ServiceClient

    client = AnalysisClient()
    assert isinstance(client, ServiceClient) and client.command[-2:] == ["gui", "--analysis-worker"]
