"""The analysis worker keeps its model between requests and releases it after the idle setting."""

from __future__ import annotations

import io
import threading
import time

import pytest

from pneumoview.service import analysis_worker
from pneumoview.service.analysis import EngineSpec
from pneumoview.service.analysis_worker import _Child
from pneumoview.settings import Settings, save_settings


def test_idle_model_is_released_and_a_waiting_request_still_arrives(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path))
    save_settings(Settings(model_idle_minutes=1))
    assert analysis_worker._settings_value("model_idle_minutes", 30) == 1
    child = _Child(io.StringIO())
    child.engine, child.spec = object(), EngineSpec("demo")
    waits: list[float | None] = []
    real_get = child.requests.get

    def get(timeout: float | None = None):
        waits.append(timeout)
        return real_get(timeout=0.05 if timeout else None)  # one idle minute, shortened for the test

    monkeypatch.setattr(child.requests, "get", get)
    threading.Timer(0.3, child.requests.put, args=({"cmd": "quit"},)).start()
    start = time.perf_counter()
    assert child.next_request() == {"cmd": "quit"}
    assert waits[0] == pytest.approx(60.0) and waits[-1] is None  # idle limit while loaded, none once released
    assert child.engine is None and child.spec is None
    assert time.perf_counter() - start < 5


def test_never_release_when_the_setting_is_zero(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path))
    save_settings(Settings(model_idle_minutes=0))
    child = _Child(io.StringIO())
    engine = child.engine = object()
    child.requests.put({"cmd": "quit"})
    assert child.next_request() == {"cmd": "quit"} and child.engine is engine


def test_engine_spec_quantisation_defaults_to_the_settings(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path))
    save_settings(Settings(quantisation="int4"))
    assert EngineSpec("demo").quantisation == "" and analysis_worker._settings_value("quantisation", "auto") == "int4"
