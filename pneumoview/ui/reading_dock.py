"""The ILO reading form docked in the main window, for the study on screen and the signed-in reader.

A :class:`~pneumoview.ui.reading_dialogs.ReadingPanel` (form, AI suggestion, blinded other readings,
final determination: every rule decided by :class:`~pneumoview.reading.repository.ReadingRepository`)
in a scroll area, with a fixed bar below it whose button (and the form's Ctrl+Enter) saves the
reading; ``savedAndNext`` then asks the window for the next unread study.

Printable keys typed in the form's fields go to the field (a combo box's type-ahead, a check box's
Space) before the window's single-key viewer shortcuts (B, I, F, 1, R), which would otherwise win.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QKeyEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget

from pneumoview.reading.repository import ReadingRepository
from pneumoview.ui.reading_dialogs import ReadingPanel
from pneumoview.ui.reading_form import named


class ReadingDock(QWidget):
    """The docked reading form. ``signInRequested`` when nobody is signed in; ``savedAndNext`` after a save."""

    savedAndNext = Signal(object)  # SubmittedReading
    signInRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("readingDock")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        self.header = named(QLabel(wordWrap=True), "reading_header")
        layout.addWidget(self.header)
        self.panel = ReadingPanel(compact=True)
        self.form = self.panel.form
        self.form.submit_button.hide()  # the bar's button below is always on screen
        self.scroll = QScrollArea()
        self.scroll.setWidget(self.panel)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        layout.addWidget(self.scroll, 1)
        bar = QHBoxLayout()
        self.sign_in_button = named(QPushButton("Sign in..."), "sign_in_button")
        self.sign_in_button.setAutoDefault(False)
        self.sign_in_button.clicked.connect(self.signInRequested)
        self.save_button = named(QPushButton("Save and next unread (Ctrl+Enter)"), "save_next_button")
        self.save_button.setAutoDefault(False)
        self.save_button.clicked.connect(self.form.submit)
        bar.addWidget(self.sign_in_button)
        bar.addStretch(1)
        bar.addWidget(self.save_button)
        layout.addLayout(bar)
        self.panel.saved.connect(self.savedAndNext)
        for widget in self.form.findChildren(QWidget):
            widget.installEventFilter(self)
        self.show_study(None, None, "")

    def _form_shortcut(self, event: QKeyEvent) -> QShortcut | None:
        """The form's shortcut (its :data:`~pneumoview.ui.reading_form.SHORTCUTS` table) for this key."""
        pressed = QKeySequence(event.keyCombination())
        return next(
            (s for s in self.form.shortcuts if s.key().matches(pressed) == QKeySequence.SequenceMatch.ExactMatch), None
        )

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt name
        """Inside the form, its own shortcuts (Alt+P...) win over the window's menu mnemonics (&PACS),
        and printable keys without Ctrl/Alt go to the focused field, not to the viewer's single keys."""
        if isinstance(event, QKeyEvent) and event.type() in (QEvent.Type.ShortcutOverride, QEvent.Type.KeyPress):
            shortcut = self._form_shortcut(event)
            if shortcut is not None:
                event.accept()
                if event.type() == QEvent.Type.KeyPress:
                    shortcut.activated.emit()
                return True
            mods = event.modifiers() & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier)
            if (
                event.type() == QEvent.Type.ShortcutOverride
                and not mods
                and event.text()
                and event.text().isprintable()
            ):
                event.accept()
                return True
        return super().eventFilter(watched, event)

    def show_study(self, repo: ReadingRepository | None, study_uid: str | None, reader: str) -> None:
        """The form for ``study_uid`` and ``reader``; disabled (with the reason) when one of them is missing."""
        ready = repo is not None and bool(study_uid) and bool(reader)
        self.form.set_read_only(not ready)
        self.save_button.setEnabled(ready)
        self.sign_in_button.setVisible(not reader)
        if repo is None:
            self.header.setText("Readings need the results database, which could not be opened.")
            return
        if not reader:
            self.header.setText("Sign in as a reader to read (Reading > Sign In as Reader...).")
            return
        if not study_uid:
            self.header.setText(f"Reader <b>{reader}</b>: no study on screen.")
            return
        if (study_uid, reader) == (self.panel.study_uid, self.panel.reader) and self.panel.repo is not None:
            self.panel.repo = repo
            self.panel._refresh_others()  # same study and reader: keep what is being typed
        else:
            self.panel.set_study(repo, study_uid, reader)
        self.header.setText(f"Reader <b>{reader}</b> - {self.panel.final.text() or 'your reading'}")

    def focus_form(self) -> None:
        self.form.quality.setFocus()


__all__ = ["ReadingDock"]
