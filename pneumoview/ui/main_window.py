"""The main window: study browser, viewer, diagnosis / review panels, problems and tags.

The window only asks and shows. State lives in a :class:`pneumoview.session.ReviewSession`
(persisted through :class:`pneumoview.store.ResultStore`); long work (scanning,
image preparation, analysis) runs in :mod:`pneumoview.ui.workers` jobs whose results come
back as queued signals. ``torch`` is imported only when an analysis starts, in a worker.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QIcon, QKeySequence
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
    QSplitter,
    QTabWidget,
    QToolBar,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from pneumoview import paths
from pneumoview.errors import PneumoViewError, StoreError
from pneumoview.results import ANALYSED, ImageResult
from pneumoview.service.analysis import WorkItem
from pneumoview.session import ImageEntry, ResultStoreAdapter, ReviewSession, Status
from pneumoview.settings import Settings, load_settings, save_settings
from pneumoview.ui.analysis_process import AnalysisClient, EngineSpec
from pneumoview.ui.calibration_actions import CalibrationActions
from pneumoview.ui.panels import DiagnosisPanel, ModelInputPanel, ReviewPanel, entry_summary
from pneumoview.ui.problems_panel import ProblemsPanel
from pneumoview.ui.study_model import (
    COL_DECISION,
    COL_NAME,
    COL_SCORE,
    COL_STATUS,
    KEY_ROLE,
    KIND_ROLE,
    StudyFilterProxy,
    StudyTreeModel,
)
from pneumoview.ui.tags_panel import TagsPanel
from pneumoview.ui.viewer import ImageViewer
from pneumoview.ui.workers import AnalysisJob, FunctionJob, Job, ScanJob

if TYPE_CHECKING:
    from PySide6.QtGui import QDragMoveEvent

    from pneumoview.dicom.display import Window
    from pneumoview.dicom.scan import ScanProblem
    from pneumoview.preprocess import ModelInput
    from pneumoview.report import ExportOptions, ExportSummary
    from pneumoview.session import PreparedScan

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


def model_configured(settings: Settings) -> bool:
    """True when a model can run now (read afresh): the demo choice, or a bundle (explicit, or the
    registry's active one) with the base weights it needs (:mod:`pneumoview.active_model`)."""
    from pneumoview.active_model import resolve_active_model

    model = resolve_active_model(settings)
    return model is not None and model.ready


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


# The menus, in order: (menu, attribute on the window or "", text, slot, shortcut). Text "-" is a separator,
# "submenu" a sub-menu (its title in the slot column). Slots are method paths on the window (MainWindow._action).
_MENU_ACTIONS: tuple[tuple[str, str, str, str, str | QKeySequence.StandardKey | None], ...] = (
    ("&File", "act_open_folder", "Open &Folder...", "choose_folder", QKeySequence.StandardKey.Open),
    ("&File", "act_open_files", "Open &Files...", "choose_files", "Ctrl+Shift+O"),
    ("&File", "recent_menu", "submenu", "&Recent Folders", None),
    ("&File", "", "-", "", None),
    ("&File", "act_export_all", "&Export All to CSV...", "export_all_dialog", "Ctrl+E"),
    ("&File", "act_export_selected", "Export &Selected to CSV...", "export_selected_dialog", None),
    ("&File", "", "-", "", None),
    ("&File", "act_settings", "Se&ttings...", "open_settings_dialog", QKeySequence.StandardKey.Preferences),
    ("&File", "", "-", "", None),
    ("&File", "", "&Quit", "close", QKeySequence.StandardKey.Quit),
    ("&View", "act_next_study", "&Next Study", "next_study", "Ctrl+Down"),
    ("&View", "act_prev_study", "&Previous Study", "previous_study", "Ctrl+Up"),
    ("&View", "", "-", "", None),
    ("&View", "act_overlay", "Lung &Box Overlay", "viewer.set_overlay_visible", "B"),
    ("&View", "act_invert", "&Invert", "viewer.set_invert", "I"),
    ("&View", "act_fit", "&Fit", "viewer.fit", "F"),
    ("&View", "act_one", "&1:1", "viewer.one_to_one", "1"),
    ("&View", "act_reset", "&Reset View", "_reset_view", "R"),
    ("&Analysis", "act_analyse_selected", "Analyse &Selected", "analyse_selected", "Ctrl+R"),
    ("&Analysis", "act_analyse_all", "Analyse &All", "analyse_all", "Ctrl+Shift+R"),
    ("&Analysis", "act_reanalyse_all", "&Re-analyse All...", "reanalyse_all", None),
    ("&Analysis", "act_cancel", "&Cancel", "cancel_task", "Esc"),
    ("&Analysis", "", "-", "", None),
    ("&Analysis", "act_heatmap", "Model Attention &Heatmap (not a finding)", "show_heatmap", "Ctrl+H"),
    ("&Analysis", "act_attention_overlay", "Attention &Overlay (not a finding)", "toggle_attention_overlay", "Shift+H"),
    ("&Analysis", "act_monitoring", "&Monitoring...", "open_monitoring_dialog", None),
    ("&Model", "act_setup", "Model &Setup...", "open_setup_dialog", None),
    ("&Model", "act_models", "Model &Manager...", "open_model_manager", None),
    ("&Model", "act_rollback", "Roll &Back to the Previous Model", "rollback_model", None),
    ("&Model", "act_demo", "Use the &Demo Model (not a diagnosis)", "use_demo_model", None),
    ("&Model", "act_retrain", "&Retrain on my data...", "open_retrain_wizard", None),
    ("&Model", "act_calibrate", "&Calibrate Operating Point...", "open_calibration_dialog", None),
)
_CHECKABLE = frozenset({"viewer.set_overlay_visible", "viewer.set_invert", "toggle_attention_overlay"})


class MainWindow(CalibrationActions, QMainWindow):
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
        self.resize(1500, 950)
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
        self.viewer.pool = self.view_pool
        self.tags.pool = self.view_pool
        self._build_status_bar()
        self._build_actions()
        from pneumoview.ui.reading_dialogs import ReadingMenuController

        self.reading_menu = ReadingMenuController.install_on(self)
        from pneumoview.ui.compare_view import CompareController

        self.compare = CompareController.install_on(self)  # View > Compare with Prior / ILO Standard
        self.session.problems_changed.connect(self._on_problems)
        self.session.entries_changed.connect(self._on_entries_changed)
        self.session.reset.connect(lambda _v: self._after_reset())
        self._apply_settings()
        from pneumoview.ui.pacs_browser import install_pacs

        self.pacs = install_pacs(self)  # the PACS menu: browser, listener (pneumoview.pacs)
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
        self.tree.setColumnWidth(COL_NAME, 210)
        for col, width in (
            (COL_STATUS, 110),
            (COL_SCORE, 250),
            (COL_DECISION, 110),
            (4, 70),
            (5, 82),
            (6, 75),
            (7, 40),
            (8, 36),
            (9, 58),
        ):
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
        browser = QWidget()
        layout = QVBoxLayout(browser)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.filter_edit, 1)
        row.addWidget(self.status_filter)
        layout.addLayout(row)
        layout.addWidget(self.tree)
        self.browser = browser

    def _build_centre(self) -> None:
        self.viewer = ImageViewer()
        self.viewer.setObjectName("ViewerCanvas")
        self.viewer.windowChanged.connect(self._on_viewer_window)
        self.viewer_bar = QToolBar("Viewer")
        self.preset_combo = QComboBox()
        self.preset_combo.setMinimumContentsLength(16)
        self.preset_combo.activated.connect(self._on_preset)
        self.viewer_bar.addWidget(QLabel(" Window: "))
        self.viewer_bar.addWidget(self.preset_combo)
        viewer_box = QWidget()
        vl = QVBoxLayout(viewer_box)
        vl.setContentsMargins(0, 0, 0, 0)
        vl.addWidget(self.viewer_bar)
        vl.addWidget(self.viewer, 1)

        self.diagnosis = DiagnosisPanel()
        self.diagnosis.no_model.setupRequested.connect(self.open_setup_dialog)
        self.diagnosis.no_model.demoRequested.connect(self.use_demo_model)
        self.model_input = ModelInputPanel()
        self.review = ReviewPanel()
        self.review.decisionRequested.connect(self._on_decision)
        side = QWidget()
        sl = QVBoxLayout(side)
        sl.setContentsMargins(4, 0, 4, 0)
        sl.addWidget(self.diagnosis)
        sl.addWidget(self.model_input)
        sl.addWidget(self.review)
        sl.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(side)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(360)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.browser)
        self.splitter.addWidget(viewer_box)
        self.splitter.addWidget(scroll)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setSizes([560, 640, 400])
        self.setCentralWidget(self.splitter)

    def _build_docks(self) -> None:
        self.problems = ProblemsPanel()
        self.problems.setObjectName("problems")
        self.tags = TagsPanel()
        self.tags.setObjectName("tags")
        self.bottom_tabs = QTabWidget()
        self.bottom_tabs.addTab(self.problems, "Problems (0)")
        self.bottom_tabs.addTab(self.tags, "DICOM tags")
        dock = QDockWidget("Problems and tags", self)
        dock.setObjectName("bottomDock")
        dock.setWidget(self.bottom_tabs)
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable
        )
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
        self.resizeDocks([dock], [190], Qt.Orientation.Vertical)
        self.bottom_dock = dock

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
        menus: dict[str, Any] = {}
        for title, attribute, text, slot, shortcut in _MENU_ACTIONS:
            if title not in menus:
                menus[title] = self.menuBar().addMenu(title)
            menu = menus[title]
            if text == "-":
                menu.addSeparator()
            elif text == "submenu":
                setattr(self, attribute, menu.addMenu(slot))
            else:
                act = self._action(text, slot, shortcut)
                if attribute:
                    setattr(self, attribute, act)
                menu.addAction(act)
        self.act_overlay.setChecked(True)
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
        self.addActions([self.act_next_study, self.act_prev_study, self.act_cancel])

    def _action(self, text: str, slot: str, shortcut: str | QKeySequence.StandardKey | None) -> QAction:
        """One menu action; ``slot`` is a method path on this window ("viewer.fit"); the slots in
        ``_CHECKABLE`` make checkable actions, called with the new state."""
        target: Any = self
        for part in slot.split("."):
            target = getattr(target, part)
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        act.setCheckable(slot in _CHECKABLE)
        if slot in _CHECKABLE:
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
        self._refresh_recent_menu()
        self._show_current()

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
        self.bottom_tabs.setTabText(0, f"Problems ({self.problems.rowCount()})")

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

    def _first_image(self, index: QModelIndex) -> QModelIndex:
        while index.isValid() and index.data(KIND_ROLE) != "image":
            if self.proxy.rowCount(index) == 0:
                return QModelIndex()
            index = self.proxy.index(0, 0, index)
        return index

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        image = self._first_image(current.siblingAtColumn(0)) if current.isValid() else QModelIndex()
        key = image.data(KEY_ROLE) if image.isValid() else None
        if key == self._current_key:
            return
        self._current_key = key
        entry = self.current_entry()
        self.viewer.show_path(entry.path if entry else None)
        self.viewer.set_box(None)
        self.tags.show_path(entry.path if entry else None)
        self._show_current()
        self._update_model_input(entry)

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

    # ------------------------------------------------------------------ analysis
    def use_demo_model(self) -> None:
        """Switch to the built-in demo model (random weights; every output marked DEMO), remembered
        across restarts in the model registry; runs the analysis the "no model" prompt was asked for."""
        from pneumoview.registry import ModelRegistry

        try:
            ModelRegistry().use_demo()
            self._demo_fallback = False
        except PneumoViewError as exc:
            self._demo_fallback = True  # used in this window; not remembered
            self._error("The demo choice cannot be saved", exc.message)
        self.engine_spec = EngineSpec("demo")
        self.engine_is_demo = True
        self.diagnosis.set_model_installed(True)
        self._status("Demo model selected: its results are marked 'DEMO - not a diagnosis'.")
        self._run_pending_analysis()

    def _run_pending_analysis(self) -> None:
        keys, self._pending_analysis = self._pending_analysis, []
        if keys and (self._demo_fallback or model_configured(self.settings)):
            self.analyse(keys)

    def _spec_for_settings(self) -> EngineSpec | None:
        """The active model, resolved afresh (registry + settings) whenever an analysis starts."""
        from pneumoview.active_model import resolve_active_model

        model = resolve_active_model(self.settings)
        if (model is None or not model.ready) and self._demo_fallback:
            return EngineSpec("demo")
        if model is None or not model.ready:
            self._model_missing = model.missing if model is not None else ""
            return None
        if model.demo:
            return EngineSpec("demo", bundle=str(model.bundle or ""))
        s = self.settings
        return EngineSpec(
            "bundle",
            bundle=str(model.bundle),
            clip_path=model.clip_path,
            llama_path=model.llama_path,
            device=s.device,
            precision=s.precision,
        )

    def analyse_selected(self) -> AnalysisJob | None:
        return self.analyse(self.selected_keys())

    def analyse_all(self) -> AnalysisJob | None:
        """Analyse the images that have no current result (the rest keep theirs and their decisions)."""
        keys = list(self.session.entries)
        self.session.record_unsupported(keys)  # reports list why the others were not analysed
        todo = self.session.without_current_result(keys)
        if keys and not todo and self.session.analysable(keys):
            self._status("Every image already has a result; use Analysis > Re-analyse All to analyse them again.")
            return None
        return self.analyse(todo or keys)

    def reanalyse_prompt(self) -> tuple[int, int, str]:
        """(images, decisions that would need re-review, the question to ask) for "Re-analyse All"."""
        keys = self.session.analysable(list(self.session.entries))
        loaded = self.analysis_client.loaded if self.analysis_client.loaded_spec == self.engine_spec else None
        fingerprint = str(loaded.get("fingerprint", "")) if loaded else None
        at_stake = self.session.decisions_at_stake(keys, fingerprint)
        model = "the current model" if loaded else "the chosen model (not loaded yet, so any decided image counts)"
        text = (
            f"Analyse all {len(keys)} image(s) again with {model}?\n\n"
            f"{at_stake} reviewer decision(s) were made on another model's output and will need re-review "
            "if the new result differs; they are kept, marked 'needs re-review'."
        )
        return len(keys), at_stake, text

    def reanalyse_all(self, *, confirm: Callable[[str], bool] | None = None) -> AnalysisJob | None:
        """Analyse every image again, after asking when decisions would need re-review."""
        images, at_stake, text = self.reanalyse_prompt()
        if images and at_stake:
            ask = confirm or (
                lambda question: (
                    QMessageBox.question(self, "Re-analyse all images?", question) == QMessageBox.StandardButton.Yes
                )
            )
            if not ask(text):
                self._status("Re-analysis cancelled: nothing changed.")
                return None
        return self.analyse(list(self.session.entries))

    def analyse(self, keys: Iterable[str]) -> AnalysisJob | None:
        keys = list(keys)
        if not keys:
            self._status("Nothing to analyse: open a folder first.")
            return None
        self.engine_spec = self._spec_for_settings()  # whatever is active now, wherever it was activated
        self.engine_is_demo = bool(self.engine_spec is not None and self.engine_spec.demo)
        if self.engine_spec is None:
            self.diagnosis.set_model_installed(False)
            self._offer_model_setup(keys)
            return None
        chosen = self.analysis_operating_point()  # this bundle's operating point, or the user's answer
        if chosen is None:
            return None
        threshold, operating_point_id = chosen
        if not self._claim_task("analysis"):
            return None
        self.session.record_unsupported(keys)
        todo = self.session.analysable(keys)
        skipped = len(keys) - len(todo)
        if not todo:
            self._status(f"None of the {len(keys)} image(s) can be analysed (see the Status column).")
            return None
        items = []
        for k in todo:
            identity = self.session.entries[k].identity
            assert identity is not None  # analysable() keeps only identified files
            items.append(WorkItem.for_identity(k, identity))
        job = AnalysisJob(
            items,
            self.analysis_client,
            self.engine_spec,
            threshold=threshold,
            operating_point_id=operating_point_id,
            persist=self._persist_outputs,
        )
        job.signals.progress.connect(self._on_progress)
        job.signals.partial.connect(self._on_analysis_partial)
        job.signals.finished.connect(lambda n, s=skipped: self._on_analysis_done(n, s))
        job.signals.failed.connect(self._on_analysis_failed)
        job.signals.cancelled.connect(lambda: self._task_done("Analysis cancelled; finished images are kept."))
        self._start_task(job, f"Analysing {len(items)} image(s)...")
        return job

    def _offer_model_setup(self, keys: Sequence[str] = ()) -> None:
        self._pending_analysis = list(keys)  # "Use demo model" analyses them at once
        missing, self._model_missing = self._model_missing, ""
        first = (
            f"The active model cannot run yet: {missing}."
            if missing
            else "No PneumoLLM model is installed, so nothing can be analysed yet."
        )
        box = QMessageBox(
            QMessageBox.Icon.Information,
            "No model installed",
            f"{first}\n\n"
            "Set up the model (CLIP and LLaMA weights and a trained bundle), or try the "
            "demo model (random weights: its output is not a diagnosis).",
            parent=self,
        )
        setup = box.addButton("Set up model...", QMessageBox.ButtonRole.AcceptRole)
        demo = box.addButton("Use demo model", QMessageBox.ButtonRole.ActionRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setModal(False)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        setup.clicked.connect(self.open_setup_dialog)
        demo.clicked.connect(self.use_demo_model)
        box.show()
        self._no_model_box = box

    def _persist_outputs(self, results: list[tuple[str, ImageResult]]) -> list[tuple[str, ImageResult]]:
        """Worker thread: save a batch of results to the store; returns them with their row ids."""
        return self.session.persist_results(results)

    def _on_analysis_partial(self, results: list[tuple[str, ImageResult]]) -> None:
        self.session.apply_results(results)
        failures = [(key, r) for key, r in results if r.status != ANALYSED]
        for key, result in failures:
            entry = self.session.entries.get(key)
            self.problems.add_message(str(entry.path) if entry else key, result.reason, result.reason_code)
        if failures:
            self.bottom_tabs.setTabText(0, f"Problems ({self.problems.rowCount()})")

    def _on_analysis_done(self, count: int, skipped: int) -> None:
        extra = f"; {skipped} not analysable" if skipped else ""
        self._task_done(f"Analysis finished: {count} image(s){extra}.")
        self.analysisFinished.emit(count)

    def _on_analysis_failed(self, message: str) -> None:
        self._task_done(f"Analysis failed: {message}")
        self._error("Analysis failed", message)

    def _on_entries_changed(self, keys: list[str]) -> None:
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

    # ------------------------------------------------------------------ dialogs
    def export_dialog(self, *, selected: bool) -> None:
        from pneumoview.ui.export_dialog import ExportDialog

        dialog = ExportDialog(
            self,
            self.settings,
            selected_count=len(self.selected_keys()) if selected else None,
            settings_path=self.settings_path,
        )
        if dialog.exec():
            self.export(dialog.target_path(), selected=selected, options=dialog.options())

    def export(self, path: Path, *, selected: bool, options: ExportOptions) -> ExportSummary | None:
        """Write the CSV report (:func:`pneumoview.report.export_csv`); returns its summary."""
        from pneumoview.report import export_csv

        keys = self.selected_keys() if selected else None
        try:
            rows = self.session.report_rows(keys)
            summary = export_csv(path, rows, options)
        except (PneumoViewError, RuntimeError) as exc:
            self._error("Export failed", getattr(exc, "message", str(exc)))
            return None
        if self.result_store is not None:
            self.result_store.audit(
                "export",
                actor=self.settings.reviewer_name,
                detail={"path": str(path), "rows": summary.rows, "pseudonymised": bool(options.pseudonymise)},
            )
        self.settings.export.last_directory = str(Path(path).parent)
        self._save_settings()
        self._status(f"Exported {summary.rows} row(s) to {path}")
        return summary

    def open_settings_dialog(self) -> None:
        from pneumoview.ui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            old = (
                self.settings.clip_path,
                self.settings.llama_path,
                self.settings.active_bundle,
                self.settings.device,
                self.settings.precision,
            )
            self.settings = dialog.result_settings()
            self._save_settings()
            new = (
                self.settings.clip_path,
                self.settings.llama_path,
                self.settings.active_bundle,
                self.settings.device,
                self.settings.precision,
            )
            if old != new and not self.engine_is_demo:
                self.engine_spec = None  # rebuilt from the new settings at the next analysis
            self._apply_settings()

    def open_setup_dialog(self) -> None:
        from pneumoview.ui.setup_dialog import ModelSetupDialog

        dialog = ModelSetupDialog(self.settings, self, client=self.analysis_client)
        dialog.demoRequested.connect(self.use_demo_model)
        dialog.modelActivated.connect(self._on_model_activated)
        if dialog.exec():
            self.settings = dialog.result_settings()
            self._save_settings()
            self._leave_demo()
            self._apply_settings()
            self.audit_event("model-activated", {"bundle": self.settings.active_bundle or "", "source": "model setup"})
            self._run_pending_analysis()

    def _leave_demo(self) -> None:
        """The user set up a real model: stop using the demo choice (here and after a restart)."""
        from pneumoview.registry import ModelRegistry

        self._demo_fallback = False
        try:
            ModelRegistry().leave_demo()
        except PneumoViewError as exc:
            self._error("The model choice cannot be saved", exc.message)

    def open_model_manager(self) -> None:
        """Model > Model Manager: the registry's bundles; activate / roll back / remove."""
        from pneumoview.ui.model_manager import ModelManagerDialog

        dialog = ModelManagerDialog(self)
        dialog.modelActivated.connect(self._on_model_activated)
        dialog.exec()

    def rollback_model(self) -> None:
        """Re-activate the previously active bundle (``pneumoview models rollback``)."""
        from pneumoview.registry import ModelRegistry

        try:
            entry = ModelRegistry().rollback()
        except PneumoViewError as exc:
            self._error("Cannot roll back", exc.message)
            return
        self._on_model_activated(entry.id)

    def open_retrain_wizard(self) -> None:
        try:
            from pneumoview.ui import wizard
        except ImportError as exc:
            self._error("Retraining is not available", f"The retraining wizard is not installed ({exc}).")
            return
        dialog = wizard.RetrainWizard(self, settings=self.settings)
        if hasattr(dialog, "modelActivated"):
            dialog.modelActivated.connect(self._on_model_activated)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        self._wizard = dialog

    def _on_model_activated(self, registry_id: str) -> None:
        """A bundle became the registry's active model (wizard, model manager, setup, rollback): the
        next analysis resolves it afresh; an explicit bundle folder in the settings would hide it."""
        self._demo_fallback = False
        if self.settings.active_bundle:
            self.settings.active_bundle = None
            self._save_settings()
        self._apply_settings()
        self.audit_event("model-activated", {"registry_id": registry_id})
        self._status(f"Model {registry_id} is now active; the next analysis uses it.")

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


__all__ = ["MainWindow", "active_bundle_path", "model_configured", "window_icon"]
