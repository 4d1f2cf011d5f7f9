"""The main window, laid out as a reading workstation: the image viewer in the centre; docks that
collapse (View menu) for the study browser / flat worklist, the DICOM tags, the AI result card with
the reviewer's decision, the docked ILO reading form, and the problems (shown only when there are some).

The window only asks and shows. Its menus and shortcuts are one data table (:mod:`pneumoview.ui.menus`);
analysis (:mod:`pneumoview.ui.analysis_actions`), dialogs (:mod:`pneumoview.ui.window_dialogs`), the
reading workflow and Help (:mod:`pneumoview.ui.workstation`) and calibration
(:mod:`pneumoview.ui.calibration_actions`) are mixins of their own. State lives in a
:class:`pneumoview.session.ReviewSession` (persisted through :class:`pneumoview.store.ResultStore`);
long work (scanning, image preparation, analysis) runs in :mod:`pneumoview.ui.workers` jobs whose
results come back as queued signals. ``torch`` is imported only when an analysis starts, in a worker.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QItemSelectionModel, QModelIndex, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QIcon, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QToolBar,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from pneumoview import paths
from pneumoview.errors import PneumoViewError, StoreError
from pneumoview.session import ImageEntry, ResultStoreAdapter, ReviewSession, Status
from pneumoview.settings import load_settings, save_settings
from pneumoview.ui.analysis_actions import AnalysisActions, model_configured
from pneumoview.ui.analysis_process import AnalysisClient, EngineSpec
from pneumoview.ui.calibration_actions import CalibrationActions
from pneumoview.ui.menus import CHECKABLE, HELP_ACTIONS, MENU_ACTIONS, Shortcut
from pneumoview.ui.panels import DiagnosisPanel, ModelInputPanel, ReviewPanel, entry_summary
from pneumoview.ui.problems_panel import ProblemsPanel
from pneumoview.ui.reading_dock import ReadingDock
from pneumoview.ui.study_model import KEY_ROLE, KIND_ROLE, StudyFilterProxy, StudyTreeModel
from pneumoview.ui.tags_panel import TagsPanel
from pneumoview.ui.viewer import ImageViewer
from pneumoview.ui.window_dialogs import WindowDialogs
from pneumoview.ui.workers import FunctionJob, Job, ScanJob
from pneumoview.ui.worklist_model import WorklistPanel
from pneumoview.ui.workstation import WorkstationActions

if TYPE_CHECKING:
    from PySide6.QtGui import QDragMoveEvent

    from pneumoview.dicom.display import Window
    from pneumoview.dicom.scan import ScanProblem
    from pneumoview.preprocess import ModelInput
    from pneumoview.session import PreparedScan
    from pneumoview.settings import Settings

log = logging.getLogger(__name__)

MODEL_INPUT_CACHE = 16
GIL_SWITCH_INTERVAL_S = 0.002
EXPAND_ALL_LIMIT = 300  # images; above this the browser opens with patients expanded only


def _warm_up_imports() -> None:
    """Worker thread, at start: import the DICOM / preprocessing modules (not torch) and start one
    sandboxed decoder process before the reviewer's first click needs them."""
    import pneumoview.dicom.display
    import pneumoview.dicom.scan
    import pneumoview.dicom.suitability
    import pneumoview.preprocess  # noqa: F401
    from pneumoview.dicom.sandbox import warm_up

    warm_up()


def _prepare_model_input(path: Path) -> ModelInput:
    """Worker thread: the crop the model sees (imports the preprocessing on first use, off the GUI thread)."""
    from pneumoview.ui.calibration_actions import prepare_with_quality  # + the image-quality badge

    return prepare_with_quality(path)


def active_bundle_path(settings: Settings | None = None) -> Path | None:
    if settings is not None and settings.active_bundle:
        return Path(settings.active_bundle)
    try:
        from pneumoview.registry import ModelRegistry

        entry = ModelRegistry().active()
    except PneumoViewError as exc:
        log.warning("model registry unreadable: %s", exc.message)
        return None
    return entry.path if entry is not None else None


class MainWindow(AnalysisActions, WindowDialogs, WorkstationActions, CalibrationActions, QMainWindow):
    """PneumoView's main window. ``settings_path`` / ``database_path`` default to :mod:`pneumoview.paths`."""

    analysisFinished = Signal(int)  # images analysed
    scanFinished = Signal(int)  # images added

    def __init__(
        self, *, settings_path: Path | None = None, database_path: Path | None = None, pool: QThreadPool | None = None
    ) -> None:
        super().__init__()
        self.setWindowTitle("PneumoView")
        self.setObjectName("mainWindow")
        self.setAcceptDrops(True)
        self.resize(1600, 1000)
        self.pool = pool or QThreadPool.globalInstance()
        # Worker threads hand the GIL back to the GUI thread within ~2 ms when it asks (default 5 ms).
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_S))
        self.settings_path = settings_path
        self.settings = load_settings(settings_path, strict=False)
        self._open_result_store(database_path)
        adapter = ResultStoreAdapter(self.result_store) if self.result_store is not None else None
        self.session = ReviewSession(adapter)
        self.engine_spec: EngineSpec | None = None  # the last analysis's model (resolved afresh each time)
        self.engine_is_demo = False
        self._demo_fallback = False  # demo chosen, but the registry could not record it
        self._pending_analysis: list[str] = []  # keys the "no model" prompt was asked for
        self._model_missing = ""  # why the active model cannot run yet
        self.analysis_client = AnalysisClient()
        self._task: Job | None = None
        self._task_started = 0.0
        self._jobs: list[Job] = []
        self._model_inputs: OrderedDict[str, ModelInput] = OrderedDict()
        self._current_key: str | None = None

        # Jobs for the image on screen (pixels, tags, model input) run one at a time, in the order
        # asked: fewer threads competing with the GUI thread for the GIL while the reviewer browses.
        self.view_pool = QThreadPool(self)
        self.view_pool.setMaxThreadCount(1)
        self._build_browser()
        self._build_centre()
        self._build_docks()
        self.setDockNestingEnabled(True)
        self.viewer.pool = self.view_pool
        self.tags.pool = self.view_pool
        self._build_status_bar()
        self._build_actions()
        from pneumoview.ui.reading_dialogs import ReadingMenuController

        self.reading_menu = ReadingMenuController.install_on(self)
        self.reading_menu.rule = self.final_rule()
        from pneumoview.ui.compare_view import CompareController

        self.compare = CompareController.install_on(self)  # View > Compare with Prior / ILO Standard
        self.session.problems_changed.connect(self._on_problems)
        self.session.entries_changed.connect(self._on_entries_changed)
        self.session.reset.connect(lambda _v: self._after_reset())
        self._worklist_timer = QTimer(self)  # result batches arrive quickly: rebuild the rows once
        self._worklist_timer.setSingleShot(True)
        self._worklist_timer.setInterval(150)
        self._worklist_timer.timeout.connect(self.refresh_worklist)
        self._apply_settings()
        from pneumoview.ui.pacs_browser import install_pacs

        self.pacs = install_pacs(self)  # the PACS menu: browser, listener (pneumoview.pacs)
        self._add_menu_actions(HELP_ACTIONS)  # Help comes last
        self.refresh_worklist()
        self.refresh_reading_dock()
        warm_up = FunctionJob(_warm_up_imports)
        self._jobs.append(warm_up)
        self.pool.start(warm_up)
        if self._startup_error is not None:  # shown once the window is up
            timer = QTimer(self)
            timer.setSingleShot(True)
            timer.timeout.connect(lambda: self._error(*self._startup_error))
            timer.start(0)

    def _open_result_store(self, database_path: Path | None) -> None:
        """Sets ``result_store`` (None when the database cannot be opened: ``_startup_error`` says why)."""
        self.result_store = None
        self._startup_error: tuple[str, str] | None = None
        try:
            from pneumoview.store import ResultStore

            self.result_store = ResultStore(database_path)
        except StoreError as exc:
            self._startup_error = (
                "The results database cannot be opened",
                f"{exc.message}\nResults will not be saved.",
            )

    # ------------------------------------------------------------------ layout
    def _build_browser(self) -> None:
        self.tree_model = StudyTreeModel(self.session, self)
        self.proxy = StudyFilterProxy(self)
        self.proxy.setSourceModel(self.tree_model)
        self.tree = QTreeView()
        self.tree.setObjectName("studyBrowser")
        self.tree.setModel(self.proxy)
        self.tree.setSortingEnabled(True)
        self.tree.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        for col, width in zip(range(10), (190, 100, 200, 90, 70, 82, 75, 40, 36, 58)):
            self.tree.setColumnWidth(col, width)
        self.tree.selectionModel().currentChanged.connect(self._on_current_changed)
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter: patient, ID, date, accession, view...")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self._on_filter)
        self.status_filter = QComboBox()
        self.status_filter.addItem("All images", None)
        for status in Status:
            self.status_filter.addItem(status.value.capitalize(), status)
        self.status_filter.currentIndexChanged.connect(
            lambda _i: self.proxy.set_status(self.status_filter.currentData())
        )
        studies = QWidget()
        layout = QVBoxLayout(studies)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.filter_edit, 1)
        row.addWidget(self.status_filter)
        layout.addLayout(row)
        layout.addWidget(self.tree)
        self.worklist = WorklistPanel()
        self.worklist.imageChosen.connect(self.select_key)
        self.browser_tabs = QTabWidget()
        self.browser_tabs.setObjectName("browserTabs")
        self.browser_tabs.addTab(studies, "Studies")
        self.browser_tabs.addTab(self.worklist, "Worklist")
        self.browser = self.browser_tabs

    def _build_centre(self) -> None:
        self.viewer = ImageViewer()
        self.viewer.setObjectName("ViewerCanvas")
        self.viewer.windowChanged.connect(self._on_viewer_window)
        self.viewer_bar = QToolBar("Viewer")
        self.preset_combo = QComboBox()
        self.preset_combo.setMinimumContentsLength(12)
        self.preset_combo.activated.connect(self._on_preset)
        self.viewer_bar.addWidget(QLabel(" Window: "))
        self.viewer_bar.addWidget(self.preset_combo)
        viewer_box = QWidget()
        vl = QVBoxLayout(viewer_box)
        vl.setContentsMargins(0, 0, 0, 0)
        vl.addWidget(self.viewer_bar)
        vl.addWidget(self.viewer, 1)
        self.setCentralWidget(viewer_box)

        self.diagnosis = DiagnosisPanel()
        self.diagnosis.no_model.setupRequested.connect(self.open_setup_dialog)
        self.diagnosis.no_model.demoRequested.connect(self.use_demo_model)
        self.model_input = ModelInputPanel()
        self.review = ReviewPanel()
        self.review.decisionRequested.connect(self._on_decision)
        side = QWidget()
        sl = QVBoxLayout(side)
        sl.setContentsMargins(4, 0, 4, 0)
        for panel in (self.diagnosis, self.review, self.model_input):  # the answer and the decision first
            sl.addWidget(panel)
        sl.addStretch(1)
        self.result_panel = QScrollArea()
        self.result_panel.setWidget(side)
        self.result_panel.setWidgetResizable(True)
        self.result_panel.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.reading_dock = ReadingDock()
        self.reading_dock.savedAndNext.connect(self._on_reading_saved)
        self.reading_dock.signInRequested.connect(self.sign_in_reader)

    def _dock(self, title: str, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_docks(self) -> None:
        """Left: browser / worklist above the DICOM tags; right: the result card and the ILO reading
        form (tabs); bottom: the problems, hidden while there are none."""
        self.problems = ProblemsPanel()
        self.problems.setObjectName("problems")
        self.tags = TagsPanel()
        self.tags.setObjectName("tags")
        left, right = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea
        self.browser_dock = self._dock("Studies and worklist", "browserDock", self.browser, left)
        self.tags_dock = self._dock("DICOM tags", "tagsDock", self.tags, left)
        self.result_dock = self._dock("AI result and decision", "resultDock", self.result_panel, right)
        self.reading_form_dock = self._dock("ILO reading", "readingDock", self.reading_dock, right)
        self.tabifyDockWidget(self.result_dock, self.reading_form_dock)
        self.result_dock.raise_()
        self.problems_dock = self._dock(
            "Problems (0)", "problemsDock", self.problems, Qt.DockWidgetArea.BottomDockWidgetArea
        )
        self.problems_dock.hide()
        self._docks_fitted = False

    def fit_docks(self) -> None:
        """Side docks at their reading widths: the image keeps >= 60 % of a 1600 px window, and the
        result card / reading form keep >= 320 px on a 1280 px one."""
        width, height = self.width(), self.height()
        left, right = max(230, int(0.165 * width)), max(320, int(0.2 * width))
        self.resizeDocks([self.browser_dock, self.result_dock], [left, right], Qt.Orientation.Horizontal)
        self.resizeDocks(
            [self.browser_dock, self.tags_dock], [int(height * 0.6), int(height * 0.3)], Qt.Orientation.Vertical
        )
        self.resizeDocks([self.problems_dock], [110], Qt.Orientation.Vertical)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt name
        """Back in the window (e.g. from Reading > Sign In or a reading dialog): readings may have changed."""
        super().changeEvent(event)
        if event.type() == QEvent.Type.ActivationChange and self.isActiveWindow() and hasattr(self, "_worklist_timer"):
            self.refresh_reading_dock()
            self._worklist_timer.start()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)
        if not self._docks_fitted:
            self._docks_fitted = True
            self.fit_docks()

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.status_label = QLabel("Drop folders or DICOM files anywhere on this window, or use File > Open Folder.")
        bar.addWidget(self.status_label, 1)
        self.eta_label = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_task)
        for w in (self.eta_label, self.progress, self.cancel_button):
            bar.addPermanentWidget(w)
            policy = w.sizePolicy()
            policy.setRetainSizeWhenHidden(True)  # showing them later does not re-lay out the window
            w.setSizePolicy(policy)
            w.hide()

    def _build_actions(self) -> None:
        self._menus: dict[str, Any] = {}
        self._add_menu_actions(MENU_ACTIONS)
        self.act_overlay.setChecked(True)
        self.act_invert.setIconText("Invert")
        for act in (self.act_overlay, self.act_invert, self.act_fit, self.act_one, self.act_reset):
            self.viewer_bar.addAction(act)
        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("mainToolbar")
        toolbar.setMovable(False)
        for act in (
            self.act_open_folder,
            self.act_open_files,
            self.act_analyse_selected,
            self.act_analyse_all,
            self.act_export_all,
        ):
            toolbar.addAction(act)
        # Window-wide even where a menu is not reachable (a floating dock has the focus).
        self.addActions([a for a in self.actions_by_table() if a.shortcut() and not a.shortcut().isEmpty()])

    def _add_menu_actions(self, table: Sequence[tuple[str, str, str, str, Shortcut]]) -> None:
        """Menus and actions from a :mod:`pneumoview.ui.menus` table."""
        for title, attribute, text, slot, shortcut in table:
            if title not in self._menus:
                self._menus[title] = self.menuBar().addMenu(title)
            menu = self._menus[title]
            if text == "-":
                menu.addSeparator()
            elif text == "submenu":
                setattr(self, attribute, menu.addMenu(slot))
            elif text == "dock":
                menu.addAction(getattr(self, slot).toggleViewAction())
            else:
                act = self._action(text, slot, shortcut)
                if attribute:
                    setattr(self, attribute, act)
                menu.addAction(act)

    def actions_by_table(self) -> list[QAction]:
        return [getattr(self, attr) for _m, attr, text, _s, _k in MENU_ACTIONS if attr and text != "submenu"]

    def _action(self, text: str, slot: str, shortcut: Shortcut) -> QAction:
        """One menu action; ``slot`` is a method path on this window ("viewer.fit"); the slots in
        ``CHECKABLE`` make checkable actions, called with the new state."""
        target: Any = self
        for part in slot.split("."):
            target = getattr(target, part)
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        act.setCheckable(slot in CHECKABLE)
        if slot in CHECKABLE:
            act.triggered.connect(target)
        else:
            act.triggered.connect(lambda _checked=False: target())
        return act

    def next_study(self) -> None:
        self.step_study(+1)

    def previous_study(self) -> None:
        self.step_study(-1)

    def export_all_dialog(self) -> None:
        self.export_dialog(selected=False)

    def export_selected_dialog(self) -> None:
        self.export_dialog(selected=True)

    def _apply_settings(self) -> None:
        self.review.set_reviewer(self.settings.reviewer_name)
        self.tree_model.set_threshold(self.settings.threshold)
        self.diagnosis.threshold = self.settings.threshold
        self.diagnosis.set_model_installed(self.engine_spec is not None or model_configured(self.settings))
        self.reading_menu.rule = self.final_rule()
        self._refresh_recent_menu()
        self._show_current()
        self.update_title()
        self._worklist_timer.start()

    def _save_settings(self) -> None:
        try:
            save_settings(self.settings, self.settings_path)
        except PneumoViewError as exc:
            self._error("Settings not saved", exc.message)

    def _save_settings_in_background(self) -> None:
        """Atomic write + fsync off the GUI thread (a snapshot of the settings as they are now)."""
        job = FunctionJob(save_settings, copy.deepcopy(self.settings), self.settings_path)
        job.signals.failed.connect(lambda msg: self._status(f"Settings not saved: {msg}"))
        self._jobs = [j for j in self._jobs if not j.done.is_set()] + [job]
        self.pool.start(job)

    # ------------------------------------------------------------------ messages
    def _error(self, title: str, text: str) -> None:
        self.status_label.setText(f"{title}: {text}")
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        box.setModal(False)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.show()

    def _status(self, text: str) -> None:
        self.status_label.setText(text)

    # ------------------------------------------------------------------ opening
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        files = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.open_paths(files)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self,
            "Open a folder of DICOM images",
            self.settings.recent_folders[0] if self.settings.recent_folders else "",
        )
        if folder:
            self.open_paths([Path(folder)])

    def choose_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Open DICOM files", "", "DICOM (*.dcm *.DCM *);;All files (*)")
        if files:
            self.open_paths([Path(f) for f in files])

    def _refresh_recent_menu(self) -> None:
        self.recent_menu.clear()
        for folder in self.settings.recent_folders:
            act = self.recent_menu.addAction(folder)
            act.triggered.connect(lambda _c=False, f=folder: self.open_paths([Path(f)]))
        self.recent_menu.setEnabled(bool(self.settings.recent_folders))

    def open_paths(self, paths_: Sequence[Path]) -> ScanJob | None:
        """Scan files and folders in the background; results merge into the session."""
        if not self._claim_task("scan"):
            return None
        job = ScanJob(paths_, post=self.session.prepare_scan)
        job.signals.progress.connect(self._on_progress)
        job.signals.finished.connect(lambda result, p=list(paths_): self._on_scanned(p, result))
        job.signals.failed.connect(lambda msg: self._task_done(f"Scan failed: {msg}"))
        job.signals.cancelled.connect(lambda: self._task_done("Scan cancelled"))
        self._start_task(job, "Scanning...")
        return job

    def _on_scanned(self, opened: list[Path], prepared: PreparedScan) -> None:
        select_first = self._current_key is None
        added = self.session.merge_scan(prepared)
        result = prepared.scan
        folders = [p for p in opened if p.is_dir()]
        for folder in folders:
            self.settings.add_recent_folder(str(folder.resolve()))
        if folders:
            self._save_settings_in_background()
            self._refresh_recent_menu()
        note = " (cancelled: partial)" if getattr(result, "cancelled", False) else ""
        self._task_done(
            f"{len(result.images)} image(s) read, {len(added)} new, {len(result.problems)} problem(s){note}"
        )
        if select_first and added:
            first = self._first_image(self.proxy.index(0, 0))
            self.select_key(first.data(KEY_ROLE) if first.isValid() else added[0])
        self.scanFinished.emit(len(added))

    def _on_problems(self, problems: list[ScanProblem]) -> None:
        self.problems.add_problems(problems)
        self._problems_changed()

    def _problems_changed(self) -> None:
        """The Problems dock is titled with the count, shown with the first problem, hidden while empty."""
        count = self.problems.rowCount()
        self.problems_dock.setWindowTitle(f"Problems ({count})")
        if count > 0 and not self.problems_dock.isVisible():
            self.problems_dock.show()
            self.resizeDocks([self.problems_dock], [110], Qt.Orientation.Vertical)
        elif count == 0:
            self.problems_dock.hide()

    # ------------------------------------------------------------------ tasks
    def _claim_task(self, what: str) -> bool:
        if self._task is not None and not self._task.done.is_set():
            self._status(f"Busy: wait for the current task to finish or cancel it before the {what}.")
            return False
        return True

    def _start_task(self, job: Job, message: str) -> None:
        self._task = job
        self._task_started = time.monotonic()
        self._status(message)
        self.progress.setRange(0, 0)
        for w in (self.progress, self.cancel_button, self.eta_label):
            w.show()
        self.eta_label.setText("")
        self.cancel_button.setEnabled(True)
        self._jobs = [j for j in self._jobs if not j.done.is_set()] + [job]
        self.pool.start(job)

    def _on_progress(self, done: int, total: int, message: str) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            elapsed = time.monotonic() - self._task_started
            if 0 < done < total and elapsed > 1.0:
                remaining = elapsed / done * (total - done)
                self.eta_label.setText(f"ETA {int(remaining // 60)}:{int(remaining % 60):02d}")
        if message:
            self._status(message)

    def _task_done(self, message: str) -> None:
        self._task = None
        for w in (self.progress, self.cancel_button, self.eta_label):
            w.hide()
        self._status(message)

    def cancel_task(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.cancel_button.setEnabled(False)
            self._status("Cancelling...")

    def busy(self) -> bool:
        return self._task is not None and not self._task.done.is_set()

    # ------------------------------------------------------------------ selection
    def _expand(self) -> None:
        """Expand everything for small sets; for large ones only patients (studies shown), so that
        opening a thousand images does not lay out a thousand rows on the GUI thread."""
        if len(self.session.entries) <= EXPAND_ALL_LIMIT:
            self.tree.expandAll()
        else:
            self.tree.expandToDepth(0)

    def _on_filter(self, text: str) -> None:
        self.proxy.set_text(text)
        self._expand()

    def _after_reset(self) -> None:
        self._worklist_timer.start()
        self._expand()
        if self._current_key is not None:
            self.select_key(self._current_key)

    def select_key(self, key: str) -> None:
        source = self.tree_model.index_for_key(key)
        index = self.proxy.mapFromSource(source)
        if index.isValid():
            self.tree.selectionModel().setCurrentIndex(
                index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
            )
            self.tree.scrollTo(index)
        else:  # filtered out of the tree (chosen in the worklist): show it all the same
            self._show_key(key)

    def _first_image(self, index: QModelIndex) -> QModelIndex:
        while index.isValid() and index.data(KIND_ROLE) != "image":
            if self.proxy.rowCount(index) == 0:
                return QModelIndex()
            index = self.proxy.index(0, 0, index)
        return index

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        image = self._first_image(current.siblingAtColumn(0)) if current.isValid() else QModelIndex()
        self._show_key(image.data(KEY_ROLE) if image.isValid() else None)

    def _show_key(self, key: str | None) -> None:
        if key == self._current_key:
            return
        self._current_key = key
        entry = self.current_entry()
        self.viewer.show_path(entry.path if entry else None)
        self.viewer.set_box(None)
        self.tags.show_path(entry.path if entry else None)
        self._show_current()
        self._update_model_input(entry)
        self.worklist.select_key(key)
        self.refresh_reading_dock()

    def current_entry(self) -> ImageEntry | None:
        return self.session.entries.get(self._current_key) if self._current_key else None

    def selected_keys(self) -> list[str]:
        keys: list[str] = []
        for index in self.tree.selectionModel().selectedRows(0):
            keys.extend(self.tree_model.keys_under(self.proxy.mapToSource(index)))
        if not keys and self._current_key:
            keys = [self._current_key]
        return list(dict.fromkeys(keys))

    def _show_current(self) -> None:
        entry = self.current_entry()
        self.diagnosis.show_entry(entry)
        self.review.show_entry(entry)
        if entry is not None:
            self._status(entry_summary(entry))

    def _study_indexes(self) -> list[QModelIndex]:
        out: list[QModelIndex] = []

        def walk(parent: QModelIndex) -> None:
            for row in range(self.proxy.rowCount(parent)):
                index = self.proxy.index(row, 0, parent)
                if index.data(KIND_ROLE) == "study":
                    out.append(index)
                elif index.data(KIND_ROLE) == "patient":
                    walk(index)

        walk(QModelIndex())
        return out

    def step_study(self, step: int) -> None:
        """Select the first image of the next (+1) / previous (-1) study in the browser's order."""
        studies = self._study_indexes()
        if not studies:
            return
        current = self.tree.currentIndex()
        position = -1
        while current.isValid():
            if current.data(KIND_ROLE) == "study":
                position = next((i for i, s in enumerate(studies) if s == current.siblingAtColumn(0)), -1)
                break
            current = current.parent()
        target = studies[(position + step) % len(studies)] if position >= 0 else studies[0 if step > 0 else -1]
        image = self._first_image(target)
        if image.isValid():
            self.select_key(image.data(KEY_ROLE))

    # ------------------------------------------------------------------ viewer
    def _on_viewer_window(self, window: Window) -> None:
        presets = self.viewer.presets()
        names = [p.name for p in presets]
        if [self.preset_combo.itemText(i) for i in range(self.preset_combo.count())] != names + ["Custom"]:
            self.preset_combo.clear()
            for p in presets:
                self.preset_combo.addItem(p.name)
            self.preset_combo.addItem("Custom")
        match = next((i for i, p in enumerate(presets) if p == window), -1)
        self.preset_combo.setCurrentIndex(match if match >= 0 else self.preset_combo.count() - 1)
        self.act_invert.setChecked(self.viewer.invert)

    def _on_preset(self, index: int) -> None:
        presets = self.viewer.presets()
        if 0 <= index < len(presets):
            self.viewer.set_window(presets[index])

    def _reset_view(self) -> None:
        self.viewer.reset()
        self.act_invert.setChecked(self.viewer.invert)

    def _update_model_input(self, entry: ImageEntry | None) -> None:
        if entry is None:
            self.model_input.show_message("")
            return
        if not entry.diagnosable:
            self.model_input.show_message(f"Not analysed: {entry.suitability.code}")
            return
        cached = self._model_inputs.get(entry.key)
        if cached is not None:
            self._show_model_input(entry.key, cached)
            return
        self.model_input.show_message("Preparing the model's input...")
        job = FunctionJob(_prepare_model_input, entry.path, wanted=lambda k=entry.key: self._current_key == k)
        job.signals.finished.connect(lambda mi, k=entry.key: self._on_model_input(k, mi))
        job.signals.failed.connect(lambda msg, k=entry.key: self._on_model_input_failed(k, msg))
        self._jobs = [j for j in self._jobs if not j.done.is_set()] + [job]
        self.view_pool.start(job)

    def _on_model_input(self, key: str, model_input: ModelInput) -> None:
        self._model_inputs[key] = model_input
        while len(self._model_inputs) > MODEL_INPUT_CACHE:
            self._model_inputs.popitem(last=False)
        if key == self._current_key:
            self._show_model_input(key, model_input)

    def _on_model_input_failed(self, key: str, message: str) -> None:
        if key == self._current_key:
            self.model_input.show_message(f"Cannot prepare the model's input: {message}")

    def _show_model_input(self, key: str, model_input: ModelInput) -> None:
        box = model_input.box
        self.model_input.show_input(model_input.crop, box.fallback, model_input.notes)
        self.viewer.set_box((box.x0, box.y0, box.x1, box.y1), box.fallback)

    def _on_entries_changed(self, keys: list[str]) -> None:
        self._worklist_timer.start()
        if self._current_key in keys:
            self._show_current()

    # ------------------------------------------------------------------ review
    def _on_decision(self, decision: str, comment: str, whole_study: bool) -> None:
        entry = self.current_entry()
        if entry is None:
            return
        reviewer = self.settings.reviewer_name
        if not reviewer:
            name, ok = QInputDialog.getText(self, "Reviewer name", "Your name (kept with every decision):")
            if not ok or not name.strip():
                self.review.saved.setText("Not saved: a reviewer name is needed (File > Settings).")
                return
            self.settings.reviewer_name = name.strip()
            self._save_settings()
            self.review.set_reviewer(self.settings.reviewer_name)
            reviewer = self.settings.reviewer_name
        keys = self.session.study_keys(entry.key) if whole_study else [entry.key]
        try:
            self.session.set_decision(keys, decision, comment, reviewer)
        except (StoreError, ValueError) as exc:
            self._error("Decision not saved", getattr(exc, "message", str(exc)))
            return
        self._status(f"Decision '{decision}' saved for {len(keys)} image(s).")

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event: QCloseEvent) -> None:
        for job in self._jobs:
            job.cancel()
        self.pool.waitForDone(10000)
        self.view_pool.waitForDone(10000)
        self.analysis_client.close()
        self.session.store = None  # late signals must not write to a closed database
        if self.result_store is not None:
            self.result_store.close()
            self.result_store = None
        super().closeEvent(event)


def window_icon() -> QIcon:
    icon_path = paths.resource_path("icons", "pneumoview.svg")
    return QIcon(str(icon_path)) if icon_path.is_file() else QIcon()


__all__ = ["MainWindow", "MENU_ACTIONS", "active_bundle_path", "model_configured", "window_icon"]
