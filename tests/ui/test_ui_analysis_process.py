"""The analysis child process (Qt-free protocol) with the demo model and real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoview.errors import BundleError, FingerprintMismatchError, PneumoViewError
from pneumoview.ui.analysis_process import AnalysisClient, EngineSpec, error_from_event

pytestmark = pytest.mark.timeout(300)


def test_error_events_become_the_right_exception() -> None:
    err = error_from_event({"event": "error", "type": "FingerprintMismatchError", "reason": "clip differs",
                            "path": "/x/clip.pt"})
    assert isinstance(err, FingerprintMismatchError) and isinstance(err, BundleError)
    assert err.reason == "clip differs" and err.path == Path("/x/clip.pt")
    assert type(error_from_event({"event": "error", "type": "NoSuchError", "reason": "?"})) is PneumoViewError


@pytest.mark.slow
def test_child_analyses_reports_problems_and_keeps_the_model_warm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rg1_uncompressed: Path) -> None:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    missing = tmp_path / "gone.dcm"
    client = AnalysisClient()
    try:
        events: list[dict] = []
        request = {"cmd": "analyse", "threshold": 0.5, "batch_size": 4,
                   "items": [{"key": "rg1", "path": str(rg1_uncompressed)}, {"key": "gone", "path": str(missing)}]}
        final = client.request(EngineSpec("demo"), request, events.append)
        kinds = [e["event"] for e in events]
        assert final == {"event": "done", "count": 2}
        assert kinds[:2] == ["loading", "loaded"] and "progress" in kinds
        results = next(e for e in events if e["event"] == "results")["items"]
        assert [r["key"] for r in results] == ["rg1"]
        r = results[0]
        assert 0.0 <= r["probability"] <= 1.0 and r["demo"] is True
        assert r["class_name"] == ("pneumoconiosis" if r["probability"] >= 0.5 else "normal")
        x0, y0, x1, y1 = r["box"]
        assert 0 <= x0 < x1 <= 1841 and 0 <= y0 < y1 <= 1955
        problems = next(e for e in events if e["event"] == "problems")["items"]
        assert problems[0][0] == "gone" and problems[0][1]
        assert client.loaded["demo"] is True and client.loaded["plan"]
        pid = client.pid
        # Second request: same process, engine already loaded (no "loading" event).
        again: list[dict] = []
        client.request(EngineSpec("demo"), {**request, "items": request["items"][:1]}, again.append)
        assert client.pid == pid and "loading" not in [e["event"] for e in again]
        same = next(e for e in again if e["event"] == "results")["items"][0]
        assert same["probability"] == pytest.approx(r["probability"], abs=1e-6)
        # Cancel: a long request stops after the batch in progress; the process stays usable.
        many = {**request, "batch_size": 1, "items": [{"key": f"k{i}", "path": str(rg1_uncompressed)}
                                                       for i in range(40)]}
        seen: list[dict] = []

        def cancel_after_first(event: dict) -> None:
            seen.append(event)
            if event["event"] == "results":
                client.cancel()

        stopped = client.request(EngineSpec("demo"), many, cancel_after_first)
        assert stopped == {"event": "cancelled"}
        assert sum(e["event"] == "results" for e in seen) < 40
        # A bundle that does not exist: a BundleError comes back, and the process keeps serving.
        bad = client.request(EngineSpec("bundle", bundle=str(tmp_path / "nope"), clip_path=str(missing),
                                        llama_path=str(missing)), {"cmd": "validate"}, lambda e: None)
        assert bad["event"] == "error"
        assert isinstance(error_from_event(bad), PneumoViewError)
        assert client.running
    finally:
        client.close()
    assert not client.running


def test_gui_thread_limits_are_not_passed_to_the_analysis_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from pneumoview.ui import app
    from pneumoview.ui.analysis_process import child_environment

    for name in app.GUI_THREAD_ENV:           # recorded, so the test leaves the environment as it was
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    monkeypatch.setattr(app, "THREAD_ENV_SET_HERE", set())
    monkeypatch.setenv("MKL_NUM_THREADS", "3")            # the user's own choice is kept
    app.limit_gui_process_threads()
    import os

    assert os.environ["OPENBLAS_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "3"
    env = child_environment()
    assert "OPENBLAS_NUM_THREADS" not in env and "OMP_NUM_THREADS" not in env
    assert env["MKL_NUM_THREADS"] == "3" and env["PYTHONUNBUFFERED"] == "1"
