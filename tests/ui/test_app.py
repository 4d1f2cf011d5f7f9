"""The app's start-up prewarm: with an active model (here the demo) the analysis worker loads it in the
background, so that the first analysis does not wait for torch and the weights; without one, nothing starts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ui_support import reviewer_home

from pneumoview.service.analysis import EngineSpec, WorkItem, analyse_request
from pneumoview.ui.app import prewarm_active_model
from pneumoview.ui.main_window import MainWindow


@pytest.fixture()
def window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001
    reviewer_home(tmp_path, monkeypatch)
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    yield window
    window.analysis_client.close()


def test_no_active_model_starts_no_worker(window) -> None:  # noqa: ANN001
    assert prewarm_active_model(window) is None
    assert not window.analysis_client.running


@pytest.mark.slow
def test_the_active_demo_model_is_loaded_before_the_first_analysis(qtbot, window, rg1_uncompressed) -> None:  # noqa: ANN001
    from pneumoview.results import identify

    window.use_demo_model()
    client = window.analysis_client
    assert prewarm_active_model(window) == EngineSpec("demo")
    assert client.running  # the worker process was started at once
    qtbot.waitUntil(lambda: client.loaded is not None, timeout=180000)  # the worker reports the model ready
    assert client.loaded["demo"] is True and client.loaded_spec == EngineSpec("demo")
    item = WorkItem.for_identity("rg1", identify(rg1_uncompressed, "1.2.3"))
    events: list[dict] = []
    start = time.perf_counter()
    final = client.request(
        EngineSpec("demo"), analyse_request(EngineSpec("demo"), [item], threshold=0.5), events.append
    )
    assert final == {"event": "done", "count": 1}
    assert "loading" not in [e["event"] for e in events]  # the model was already loaded
    assert time.perf_counter() - start < 60  # one small image's preparation and forward pass
