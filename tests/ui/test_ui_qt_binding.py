"""Guard against Qt bindings that corrupt reference counts (PySide6 6.12.0 on CPython 3.11).

With that release every ``Signal.emit`` dropped a reference to ``True`` and every slot call one
to ``None``; a GUI that emits a few thousand signals then dies with "Fatal Python error:
none_dealloc". pyproject.toml excludes it; this test fails if such a build is installed.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, QTimer, Signal


class _Emitter(QObject):
    value = Signal(object)


def test_signal_emit_and_slot_calls_keep_reference_counts(qtbot) -> None:  # noqa: ANN001
    emitter = _Emitter()
    received: list[int] = []
    emitter.value.connect(received.append)
    true_before, none_before = sys.getrefcount(True), sys.getrefcount(None)
    for i in range(200):
        emitter.value.emit(i)
    assert received == list(range(200))
    assert sys.getrefcount(True) - true_before >= -5
    ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(0)
    timer.timeout.connect(lambda: ticks.append(1) if len(ticks) < 300 else timer.stop())
    none_before = sys.getrefcount(None)
    timer.start()
    qtbot.waitUntil(lambda: len(ticks) >= 300, timeout=10000)
    # 300 slot calls returning None: a leak of one reference per call would show as <= -300.
    assert sys.getrefcount(None) - none_before > -100
