"""``pneumoview`` / ``pneumoview gui``: start the desktop application.

``--smoke-test`` opens the main window (offscreen unless a platform is forced), checks that the
resources (icon, style sheet) load and that torch was not imported, and exits 0; the packaging
script runs it on the frozen build.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pneumoview import __version__, paths
from pneumoview.errors import PneumoViewError
from pneumoview.ui.analysis_process import THREAD_ENV_SET_HERE, EngineSpec

if TYPE_CHECKING:
    from pneumoview.ui.main_window import MainWindow

#: BLAS libraries (OpenBLAS via numpy/scipy) start one spinning thread per core; in the GUI process
#: they only steal CPU from the GUI thread (the lung localiser's small matmuls do not need them).
#: Set before numpy is imported; the analysis process sizes torch's threads itself.
GUI_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

ICON = ("icons", "pneumoview.svg")


def limit_gui_process_threads() -> None:
    """Apply :data:`GUI_THREAD_ENV` (only where the user has not chosen a value)."""
    for name, value in GUI_THREAD_ENV.items():
        if name not in os.environ:
            os.environ[name] = value
            THREAD_ENV_SET_HERE.add(name)


STYLE = ("styles", "pneumoview.qss")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", type=Path, help="folders or DICOM files to open at start")
    parser.add_argument("--demo", action="store_true", help="use the built-in demo model (not a diagnosis)")
    parser.add_argument(
        "--smoke-test",
        action="store_true",
        help="open the main window offscreen, check resources, exit (for packaging)",
    )
    parser.add_argument("--no-style", action="store_true", help="use Qt's default look instead of the style sheet")
    parser.add_argument("--analysis-worker", action="store_true", help=argparse.SUPPRESS)  # the app's own child


def load_style() -> str:
    """The application style sheet text; raises FileNotFoundError if the resource is missing."""
    return paths.resource_path(*STYLE).read_text(encoding="utf-8")


def create_application(argv: Sequence[str] = (), *, style: bool = True) -> object:
    """The QApplication (reused if one exists), named, with icon and style sheet."""
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0], *argv])
    app.setApplicationName("PneumoView")
    app.setOrganizationName("PneumoView")
    app.setApplicationVersion(__version__)
    icon_path = paths.resource_path(*ICON)
    if icon_path.is_file():
        app.setWindowIcon(QIcon(str(icon_path)))
    if style:
        try:
            app.setStyleSheet(load_style())
        except OSError:
            pass  # the app works without its style sheet; the smoke test reports it
    return app


def smoke_test() -> int:
    """Open the main window offscreen and check what packaging can break; 0 = fine."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    problems: list[str] = []
    app = create_application()
    from PySide6.QtGui import QIcon

    from pneumoview.ui.main_window import MainWindow

    icon = QIcon(str(paths.resource_path(*ICON)))
    if icon.isNull() or icon.pixmap(32, 32).isNull():
        problems.append(f"icon does not load: {paths.resource_path(*ICON)}")
    try:
        if not load_style().strip():
            problems.append("style sheet is empty")
    except OSError as exc:
        problems.append(f"style sheet does not load: {exc}")
    window = MainWindow()
    window.show()
    app.processEvents()  # type: ignore[attr-defined]
    if window.grab().isNull():
        problems.append("the main window did not render")
    if "torch" in sys.modules:
        problems.append("torch was imported at window start")
    window.close()
    for p in problems:
        print(f"smoke test: {p}", file=sys.stderr)
    if not problems:
        print(f"smoke test: PneumoView {__version__} main window opened; resources OK")
    return 1 if problems else 0


def clean_interrupted_runs() -> None:
    """Remove what interrupted runs left in the model registry (staging copies, ``.tmp`` files); best effort."""
    from pneumoview.registry import ModelRegistry

    try:
        ModelRegistry().clean_stale()
    except (PneumoViewError, OSError):
        pass  # a registry that cannot be read is reported when it is used


def _require_display() -> None:
    """On Linux, fail with one clear line instead of Qt's abort when there is no screen to open."""
    if not sys.platform.startswith("linux"):
        return
    if any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        return
    raise PneumoViewError(
        "no display found: start PneumoView from a desktop session "
        "(for a headless check: QT_QPA_PLATFORM=offscreen pneumoview --smoke-test)"
    )


def prewarm_active_model(window: MainWindow) -> EngineSpec | None:
    """Have the analysis worker import torch and load the active model (or the demo) now, in the
    background, so that the first *Analyse* only waits for the forward pass. Returns the spec being
    loaded, None when no model is ready (nothing is started then)."""
    spec = window.spec_for_settings()
    if spec is None:
        return None
    window.analysis_client.prewarm(spec)
    return spec


def run(args: argparse.Namespace) -> int:
    if args.analysis_worker:  # the analysis child process: no Qt, JSON lines on stdin/stdout
        # A separate process entry, named (like the CLI's sub-commands) so that the GUI process's
        # import graph never reaches torch: the worker module is only ever imported in the child.
        worker = importlib.import_module("pneumoview.service.analysis_worker")
        return int(worker.serve())
    limit_gui_process_threads()
    if args.smoke_test:
        return smoke_test()
    _require_display()
    clean_interrupted_runs()
    app = create_application(style=not args.no_style)
    from pneumoview.ui.main_window import MainWindow

    window = MainWindow()
    window.show()
    if args.demo:
        window.use_demo_model()
    if args.paths:
        window.open_paths(list(args.paths))
    prewarm_active_model(window)
    return int(app.exec())  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m pneumoview.ui.app``."""
    parser = argparse.ArgumentParser(prog="pneumoview gui")
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
