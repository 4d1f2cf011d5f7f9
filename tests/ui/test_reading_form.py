"""The ILO reading form (pytest-qt, offscreen): validation from the Qt-free rules, keyboard-only
reads, Tab leaving the comment box, and the AI suggestion staying out of the reader's fields."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from pneumoview.reading.ilo import PleuralThickening, Reading, normal_reading
from pneumoview.reading.rules import AiSuggestion
from pneumoview.ui.reading_form import SHORTCUTS, ReadingForm

ALT, CTRL = Qt.KeyboardModifier.AltModifier, Qt.KeyboardModifier.ControlModifier


@pytest.fixture
def form(qtbot) -> ReadingForm:
    widget = ReadingForm()
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitExposed(widget)
    widget.activateWindow()
    qtbot.waitUntil(widget.isActiveWindow)
    return widget


def _submitted(form: ReadingForm) -> list[Reading]:
    out: list[Reading] = []
    form.submitted.connect(out.append)
    return out


def _key(qtbot, key: Qt.Key, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier, times: int = 1) -> None:
    for _ in range(times):
        qtbot.keyClick(QApplication.focusWidget(), key, modifier)


def test_validation_messages_come_from_the_rules_and_nothing_is_submitted(form: ReadingForm) -> None:
    got = _submitted(form)
    assert form.submit() is False  # no profusion chosen yet
    assert form.messages.text().startswith("Profusion: choose a profusion") and got == []
    assert QApplication.focusWidget() is form.profusion
    form.set_reading(Reading(film_quality=1, profusion="0/0"))
    form.primary.setCurrentIndex(form.primary.findData("p"))  # 0/0 with a shape: impossible
    assert form.submit() is False
    assert "0/0" in form.messages.text() and got == []
    assert QApplication.focusWidget() is form.primary
    form.quality.setCurrentIndex(form.quality.findData(3))
    messages = form.validate()
    assert any("technical defect" in m for m in messages) and len(messages) >= 2


def test_round_trip_of_every_section(form: ReadingForm) -> None:
    reading = Reading(
        film_quality=2,
        film_quality_reason="rotated",
        profusion="2/2",
        primary_shape="s",
        secondary_shape="t",
        zones=frozenset({"RL", "LL"}),
        large_opacities="B",
        plaques=PleuralThickening(
            sites={"in_profile": frozenset({"L"}), "diaphragm": frozenset({"R", "L"})},
            calcification={"diaphragm": frozenset({"R"})},
            extent={"L": 3},
            width={"L": "a"},
        ),
        costophrenic_obliteration=frozenset({"R"}),
        diffuse_thickening=PleuralThickening(sites={"face_on": frozenset({"R"})}, extent={"R": 1}),
        symbols=frozenset({"ax", "od", "tb"}),
        comments="od: sternotomy wires",
    ).validate()
    form.set_reading(reading)
    assert form.reading() == reading
    got = _submitted(form)
    assert form.submit() and got == [reading]


def test_keyboard_only_read_of_a_normal_film(form: ReadingForm, qtbot) -> None:
    got = _submitted(form)
    form.quality.setFocus()
    _key(qtbot, Qt.Key.Key_N, ALT)
    _key(qtbot, Qt.Key.Key_Return, CTRL)
    assert got == [normal_reading()]


def test_keyboard_only_read_with_findings(form: ReadingForm, qtbot) -> None:
    got = _submitted(form)
    form.comments.setFocus()
    _key(qtbot, Qt.Key.Key_Q, ALT)
    assert QApplication.focusWidget() is form.quality
    _key(qtbot, Qt.Key.Key_Down)  # quality 2
    _key(qtbot, Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is form.quality_reason
    qtbot.keyClicks(form.quality_reason, "rotated")
    _key(qtbot, Qt.Key.Key_P, ALT)
    _key(qtbot, Qt.Key.Key_Down, times=5)  # - 0/- 0/0 0/1 1/0 1/1
    _key(qtbot, Qt.Key.Key_S, ALT)
    _key(qtbot, Qt.Key.Key_Down, times=2)  # - p q
    _key(qtbot, Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is form.secondary
    _key(qtbot, Qt.Key.Key_Down, times=2)
    _key(qtbot, Qt.Key.Key_Z, ALT)
    _key(qtbot, Qt.Key.Key_Space)  # RU
    _key(qtbot, Qt.Key.Key_Tab, times=3)
    assert QApplication.focusWidget() is form.zones["LU"]
    _key(qtbot, Qt.Key.Key_Space)
    _key(qtbot, Qt.Key.Key_C, ALT)
    qtbot.keyClicks(form.comments, "keyboard read")
    _key(qtbot, Qt.Key.Key_Tab)  # Tab leaves the comment box
    assert QApplication.focusWidget() is not form.comments
    assert form.comments.toPlainText() == "keyboard read"
    _key(qtbot, Qt.Key.Key_Enter, CTRL)
    assert got == [
        Reading(
            film_quality=2,
            film_quality_reason="rotated",
            profusion="1/1",
            primary_shape="q",
            secondary_shape="q",
            zones=frozenset({"RU", "LU"}),
            comments="keyboard read",
        )
    ]


def test_ai_suggestion_is_shown_beside_and_never_written_into_the_fields(form: ReadingForm) -> None:
    before = form.reading()
    form.set_ai_suggestion(AiSuggestion(0.83, 0.5, label="pneumoconiosis", result_id=7))
    assert form.ai_label.text() == "AI: consistent with pneumoconiosis, 0.83 at operating point 0.50"
    assert form.reading() == before  # no field changed
    assert form.ai_label.focusPolicy() == Qt.FocusPolicy.NoFocus  # not a field, not in the Tab chain
    form.fill_normal()
    assert form.reading() == normal_reading()
    form.set_ai_suggestion(None)
    assert "no result" in form.ai_label.text()


def test_shortcut_table_is_data_and_unique() -> None:
    keys = [k for _a, k, _w in SHORTCUTS]
    assert len(keys) == len(set(keys)) and ("submit", "Ctrl+Return", "submit the reading") in SHORTCUTS
