"""PACS in the app: a browser dialog (search, retrieve into the worklist) and the Storage SCP listener.

* :class:`PacsBrowserDialog` - search a PACS by patient ID, name and study date (C-FIND or QIDO-RS),
  retrieve the chosen studies into the inbox (C-GET or WADO-RS) with progress and cancel; each
  retrieved study is handed to the worklist through :attr:`PacsBrowserDialog.studyRetrieved`.
* :class:`ListenerSettingsDialog` - AE title, port, interface, allowed callers, inbox, start with the app.
* :class:`PacsIntegration` / :func:`install_pacs` - the *PACS* menu of the main window and the
  listener started from the app: a study that completes (quiet period) is opened in the worklist.

All network work runs in the thread pool (:mod:`pneumoview.ui.workers`); the logic lives in
:mod:`pneumoview.pacs` (Qt-free).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QObject, QThreadPool, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from pneumoview import paths
from pneumoview.errors import CancelledError, PneumoViewError
from pneumoview.pacs.client import connect as make_client
from pneumoview.settings import Settings
from pneumoview.ui.workers import FunctionJob, Job, start

if TYPE_CHECKING:
    from pneumoview.pacs.scp import ListenerEvent, StorageListener
    from pneumoview.pacs.scu import Client, StudyMatch
    from pneumoview.pacs.web import WebClient

COLUMNS = ("Patient ID", "Name", "Study date", "Modalities", "Images", "Description", "Study UID")


def inbox_folder(settings: Settings) -> Path:
    """The managed inbox: ``settings.pacs_inbox`` or ``<data folder>/inbox``."""
    return Path(settings.pacs_inbox) if settings.pacs_inbox else paths.data_dir() / "inbox"


class RetrieveJob(Job):
    """Retrieve studies one after the other; ``partial(Path)`` per study folder, progress per instance."""

    def __init__(self, client: Client | WebClient, study_uids: list[str], inbox: Path) -> None:
        super().__init__()
        self._client, self._uids, self._inbox = client, study_uids, inbox

    def work(self) -> list[Path]:
        from pneumoview.pacs.scp import Inbox

        inbox = Inbox(self._inbox)
        folders: list[Path] = []
        failed = 0
        for index, uid in enumerate(self._uids, 1):
            if self.is_cancelled():
                raise CancelledError("retrieval cancelled")

            def progress(done: int, total: int, index: int = index) -> None:
                self.report(done, total, f"study {index} of {len(self._uids)}")

            report = self._client.get_study(uid, inbox, progress=progress, cancel=self._cancel)
            failed += len(report.failed)
            if report.written:
                folders.append(report.written[0].parent)
                self.emit("partial", report.written[0].parent)
        if failed:
            self.emit("problems", [("", f"{failed} instance(s) could not be retrieved")])
        return folders


class SendResultsJob(Job):
    """Write SR (+ lung-crop SC, + reader-decision SR) for analysed images and C-STORE / STOW-RS them."""

    def __init__(
        self,
        client: Client | WebClient,
        items: list[tuple[Path, Any, Any]],
        out_dir: Path,
        reviewer: str = "",
    ) -> None:
        super().__init__()
        self._client, self._items, self._out, self._reviewer = client, items, out_dir, reviewer

    def work(self) -> Any:
        from pneumoview.pacs.export import write_decision_file, write_model_result
        from pneumoview.pacs.sr import ModelResult
        from pneumoview.preprocess import prepare

        files: list[Path] = []
        notes: list[tuple[str, str]] = []
        for index, (source, result, decision) in enumerate(self._items, 1):
            if self.is_cancelled():
                raise CancelledError("sending cancelled")
            self.report(index - 1, len(self._items), "writing DICOM results")
            try:
                crop = prepare(source).crop  # decoding goes through pneumoview's image path
            except PneumoViewError as exc:
                crop = None
                notes.append((source.name, f"no Secondary Capture: {exc.reason}"))
            model = ModelResult.of(result)
            written, problem = write_model_result(source, self._out, model, crop=crop)
            if problem:
                notes.append((source.name, problem))
            files += written
            if written and decision is not None:
                files.append(write_decision_file(source, self._out, decision.decision, model, self._reviewer))
        report = self._client.send_files(files, progress=lambda d, t: self.report(d, t, "sending"))
        if notes or report.failed:
            self.emit("problems", notes + report.failed)
        return report


class PacsBrowserDialog(QDialog):
    """Search and retrieve; ``studyRetrieved(Path)`` for each study folder written into the inbox."""

    studyRetrieved = Signal(object)

    def __init__(self, settings: Settings, parent: QObject | None = None, *, pool: QThreadPool | None = None) -> None:
        super().__init__(parent)  # type: ignore[arg-type]
        self.setWindowTitle("PACS Browser")
        self.setObjectName("pacsBrowser")
        self.settings = settings
        self.pool = pool or QThreadPool.globalInstance()
        self.job: Job | None = None
        self.remote = QLineEdit(settings.pacs_remote)
        self.remote.setPlaceholderText("HOST:PORT:AET or http://host:8042/dicom-web")
        self.patient_id, self.patient_name, self.date = QLineEdit(), QLineEdit(), QLineEdit()
        self.patient_name.setPlaceholderText("DOE^* (wildcards * ?)")
        self.date.setPlaceholderText("YYYYMMDD or YYYYMMDD-YYYYMMDD")
        self.search_button, self.retrieve_button = QPushButton("&Search"), QPushButton("&Retrieve")
        self.cancel_button = QPushButton("&Cancel")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self._build_layout()
        self.search_button.clicked.connect(self.search)
        self.retrieve_button.clicked.connect(self.retrieve_selected)
        self.cancel_button.clicked.connect(self.cancel)
        self._set_busy(False)

    def _build_layout(self) -> None:
        form = QFormLayout()
        form.addRow("PACS", self.remote)
        form.addRow("Patient ID", self.patient_id)
        form.addRow("Patient name", self.patient_name)
        form.addRow("Study date", self.date)
        buttons = QHBoxLayout()
        for button in (self.search_button, self.retrieve_button, self.cancel_button):
            buttons.addWidget(button)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        for item in (form, buttons):
            layout.addLayout(item)
        for widget in (self.table, self.progress, self.status, close):
            layout.addWidget(widget)
        self.resize(900, 560)

    # --- actions -------------------------------------------------------------------------
    def _client(self) -> Any:  # Client | WebClient; Any while find_studies(**keys) takes a str-valued dict
        return make_client(self.remote.text(), self.settings.pacs_ae_title)

    def search(self) -> Job | None:
        try:
            client = self._client()
        except PneumoViewError as exc:
            self.status.setText(exc.message)
            return None
        keys = {
            "patient_id": self.patient_id.text().strip(),
            "patient_name": self.patient_name.text().strip(),
            "date": self.date.text().strip(),
        }
        self.settings.pacs_remote = self.remote.text().strip()
        return self._run(FunctionJob(lambda: client.find_studies(**keys)), self._show_matches, "Searching...")

    def retrieve_selected(self) -> Job | None:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        items = [self.table.item(row, COLUMNS.index("Study UID")) for row in rows]
        uids = [item.text() for item in items if item is not None]
        if not uids:
            self.status.setText("Select the studies to retrieve.")
            return None
        try:
            client = self._client()
        except PneumoViewError as exc:
            self.status.setText(exc.message)
            return None
        job = RetrieveJob(client, uids, inbox_folder(self.settings))
        job.signals.partial.connect(self.studyRetrieved.emit)
        job.signals.problems.connect(lambda problems: self.status.setText(problems[0][1]))
        return self._run(
            job, lambda folders: self.status.setText(f"Retrieved {len(folders)} study(ies)."), "Retrieving..."
        )

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.setText("Cancelling...")

    def _run(self, job: Job, on_done: Callable[[Any], None], message: str) -> Job:
        self.job = job
        job.signals.progress.connect(self._on_progress)

        def finished(result: Any) -> None:
            self._set_busy(False)
            on_done(result)

        def ended(text: str) -> None:
            self._set_busy(False)
            self.status.setText(text)

        job.signals.finished.connect(finished)
        job.signals.failed.connect(ended)
        job.signals.cancelled.connect(lambda: ended("Cancelled."))
        self.status.setText(message)
        self.progress.setRange(0, 0)
        self._set_busy(True)
        start(job, self.pool)
        return job

    def _on_progress(self, done: int, total: int, message: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.status.setText(f"{message}: {done}/{total}" if message else f"{done}/{total}")

    def _set_busy(self, busy: bool) -> None:
        self.search_button.setEnabled(not busy)
        self.retrieve_button.setEnabled(not busy and self.table.rowCount() > 0)
        self.cancel_button.setEnabled(busy)
        if not busy:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.job = None

    def _show_matches(self, matches: list[StudyMatch]) -> None:
        self.table.setRowCount(len(matches))
        for row, m in enumerate(matches):
            values = (
                m.patient_id,
                m.patient_name,
                m.study_date,
                ",".join(m.modalities),
                "" if m.instances is None else str(m.instances),
                m.study_description,
                m.study_uid,
            )
            for column, value in enumerate(values):
                self.table.setItem(row, column, QTableWidgetItem(value))
        self.table.resizeColumnsToContents()
        self.status.setText(f"{len(matches)} study(ies) found.")
        self._set_busy(False)

    def done(self, result: int) -> None:  # closing cancels a running job
        self.cancel()
        super().done(result)


class ListenerSettingsDialog(QDialog):
    """The listener's settings; :meth:`apply` writes them into a Settings object."""

    def __init__(self, settings: Settings, parent: QObject | None = None) -> None:
        super().__init__(parent)  # type: ignore[arg-type]
        self.setWindowTitle("PACS Listener Settings")
        self.ae_title = QLineEdit(settings.pacs_ae_title)
        self.ae_title.setMaxLength(16)
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(settings.pacs_port or 11112)
        self.interface = QLineEdit(settings.pacs_interface)
        self.interface.setToolTip("127.0.0.1: only this computer can send. 0.0.0.0: every network interface.")
        self.allowed = QLineEdit(", ".join(settings.pacs_allowed_callers))
        self.allowed.setPlaceholderText("calling AE titles, comma-separated (empty: any)")
        self.inbox = QLineEdit(str(inbox_folder(settings)))
        self.on_start = QCheckBox("Start the listener with PneumoView")
        self.on_start.setChecked(settings.pacs_listen_on_start)
        form = QFormLayout(self)
        for label, widget in (
            ("AE title", self.ae_title),
            ("Port", self.port),
            ("Interface", self.interface),
            ("Allowed callers", self.allowed),
            ("Inbox", self.inbox),
            ("", self.on_start),
        ):
            form.addRow(label, widget)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def apply(self, settings: Settings) -> None:
        settings.pacs_ae_title = self.ae_title.text().strip() or "PNEUMOVIEW"
        settings.pacs_port = int(self.port.value())
        settings.pacs_interface = self.interface.text().strip() or "127.0.0.1"
        settings.pacs_allowed_callers = [a.strip() for a in self.allowed.text().split(",") if a.strip()]
        settings.pacs_inbox = self.inbox.text().strip()
        settings.pacs_listen_on_start = self.on_start.isChecked()


class PacsIntegration(QObject):
    """The *PACS* menu and the app's listener; received studies open in the worklist when complete."""

    studyArrived = Signal(object)  # Path of a complete study folder (emitted from the listener's thread)

    def __init__(
        self,
        window: QMainWindow,
        open_paths: Callable[[list[Path]], Any],
        settings: Callable[[], Settings],
        save: Callable[[], None],
        selected: Callable[[], list[tuple[Path, Any, Any]]] | None = None,
        items_for: Callable[[list[str]], list[tuple[Path, Any, Any]]] | None = None,
    ) -> None:
        super().__init__(window)
        self._selected = selected or list
        self._items_for = items_for or (lambda keys: [])
        self.send_job: Job | None = None
        self.window, self._open_paths, self._settings, self._save = window, open_paths, settings, save
        self.listener: StorageListener | None = None
        self.browser: PacsBrowserDialog | None = None
        menu = window.menuBar().addMenu("&PACS")
        self.act_browse = menu.addAction("&Browse PACS...")
        self.act_listen = menu.addAction("&Receive Studies (Listener)")
        self.act_listen.setCheckable(True)
        self.act_settings = menu.addAction("Listener &Settings...")
        menu.addSeparator()
        self.act_send = menu.addAction("Send &Results of Selected Images to PACS")
        self.act_send.triggered.connect(lambda _checked=False: self.send_selected())
        self.act_auto = menu.addAction("Send Results &Automatically")
        self.act_auto.setCheckable(True)
        self.act_auto.setChecked(settings().pacs_send_automatically)
        self.act_auto.toggled.connect(self._set_automatic)
        self._sent: set[tuple[str, str, str]] = set()  # (key, result time, decision) already sent this session
        self._changed: set[str] = set()
        self._auto_timer = QTimer(self)
        self._auto_timer.setSingleShot(True)
        self._auto_timer.setInterval(1500)  # collect a whole analysis run before sending
        self._auto_timer.timeout.connect(self._send_changed)
        self.act_browse.triggered.connect(self.open_browser)
        self.act_listen.toggled.connect(self.set_listening)
        self.act_settings.triggered.connect(self.open_settings)
        self._pending: list[Path] = []
        self.studyArrived.connect(self.open_study)
        window.installEventFilter(self)
        if settings().pacs_listen_on_start:
            self.act_listen.setChecked(True)

    def open_browser(self) -> PacsBrowserDialog:
        if self.browser is None:
            self.browser = PacsBrowserDialog(self._settings(), self.window)
            self.browser.studyRetrieved.connect(self.open_study)
            self.browser.finished.connect(lambda _r: self._save())
        self.browser.show()
        self.browser.raise_()
        return self.browser

    def open_study(self, folder: Path) -> None:
        """Add a received / retrieved study folder to the worklist; retried while another scan runs."""
        if folder not in self._pending:
            self._pending.append(folder)
        if self._open_paths(list(self._pending)) is not None:
            self._pending.clear()
        else:
            QTimer.singleShot(1000, lambda: self.open_study(folder) if self._pending else None)

    def _set_automatic(self, on: bool) -> None:
        self._settings().pacs_send_automatically = on
        self._save()

    def entries_changed(self, keys: list[str]) -> None:
        """The session's ``entries_changed`` event: with automatic sending on, send new results soon."""
        if self._settings().pacs_send_automatically and self._settings().pacs_remote:
            self._changed.update(keys)
            self._auto_timer.start()

    def _send_changed(self) -> None:
        if self.send_job is not None and not self.send_job.done.is_set():
            self._auto_timer.start()  # one sending job at a time
            return
        keys, self._changed = sorted(self._changed), set()
        items = [item for item in self._items_for(keys) if item[1] is not None]
        fresh = [item for item in items if self._signature(item) not in self._sent]
        if fresh:
            self.send_selected(fresh)

    @staticmethod
    def _signature(item: tuple[Path, Any, Any]) -> tuple[str, str, str]:
        path, result, decision = item
        return (str(path), f"{result.analysed_at}{result.probability}", decision.decision if decision else "")

    def send_selected(self, items: list[tuple[Path, Any, Any]] | None = None) -> Job | None:
        """Send the DICOM results of ``items`` (default: the selected, analysed images) to ``settings.pacs_remote``."""
        s = self._settings()
        items = [item for item in (items if items is not None else self._selected()) if item[1] is not None]
        if not s.pacs_remote or not items:
            why = "Choose a PACS in PACS > Browse PACS first." if not s.pacs_remote else "Select analysed images first."
            QMessageBox.information(self.window, "Send results", why)
            return None
        try:
            client = make_client(s.pacs_remote, s.pacs_ae_title)
        except PneumoViewError as exc:
            QMessageBox.warning(self.window, "Send results", exc.message)
            return None
        job = SendResultsJob(client, items, paths.data_dir() / "dicom-results", s.reviewer_name)
        bar = self.window.statusBar()
        job.signals.progress.connect(lambda d, t, m: bar.showMessage(f"PACS: {m} {d}/{t}"))
        job.signals.finished.connect(lambda r: bar.showMessage(f"PACS: sent {len(r.sent)} object(s)"))
        job.signals.failed.connect(lambda text: QMessageBox.warning(self.window, "Send results", text))
        job.signals.problems.connect(lambda p: bar.showMessage(f"PACS: {len(p)} problem(s): {p[0][1]}"))
        self._sent.update(self._signature(item) for item in items)
        self.send_job = start(job)
        return job

    def open_settings(self) -> None:
        dialog = ListenerSettingsDialog(self._settings(), self.window)
        if dialog.exec():
            dialog.apply(self._settings())
            self._save()
            if self.listener is not None:  # restart with the new settings
                self.set_listening(False)
                self.set_listening(True)

    def set_listening(self, on: bool) -> None:
        from pneumoview.pacs.scp import ListenerConfig, StorageListener

        if not on:
            if self.listener is not None:
                self.listener.stop()
                self.listener = None
            self.act_listen.setChecked(False)
            return
        if self.listener is not None:
            return
        s = self._settings()
        config = ListenerConfig(
            inbox=inbox_folder(s),
            ae_title=s.pacs_ae_title,
            port=s.pacs_port,
            host=s.pacs_interface,
            allowed_callers=tuple(s.pacs_allowed_callers),
        )
        listener = StorageListener(config, self._on_event)
        try:
            listener.start()
        except PneumoViewError as exc:
            self.act_listen.setChecked(False)
            QMessageBox.warning(self.window, "PACS listener", exc.message)
            return
        self.listener = listener
        self.act_listen.setChecked(True)
        self.window.statusBar().showMessage(f"Receiving as {s.pacs_ae_title} on {s.pacs_interface}:{listener.port}")

    def _on_event(self, event: ListenerEvent) -> None:  # listener thread: cross to the GUI thread through a signal
        if event.kind == "study-complete" and event.path is not None:
            self.studyArrived.emit(event.path)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.window and event.type() == QEvent.Type.Close:
            self.set_listening(False)
            if self.browser is not None:
                self.browser.cancel()
        return False


def install_pacs(window: Any) -> PacsIntegration:  # ui.main_window.MainWindow (it imports this module)
    """Add the *PACS* menu to PneumoView's main window (uses its ``open_paths``, ``settings``, ``_save_settings``)."""

    def items_for(keys: list[str]) -> list[tuple[Path, Any, Any]]:
        entries = [window.session.entries.get(key) for key in keys]
        return [(e.path, e.result if e.has_current_result else None, e.decision) for e in entries if e is not None]

    pacs = PacsIntegration(
        window,
        window.open_paths,
        lambda: window.settings,
        window._save_settings,
        lambda: items_for(window.selected_keys()),
        items_for,
    )
    window.session.entries_changed.connect(pacs.entries_changed)
    return pacs


__all__ = [
    "ListenerSettingsDialog",
    "PacsBrowserDialog",
    "PacsIntegration",
    "inbox_folder",
    "install_pacs",
]
