"""Render the main window offscreen with a real radiograph loaded and analysed (demo model).

    .venv/bin/python scripts/screenshot.py FOLDER_OF_DICOM_FILES [--output docs/screenshot.png]

The folder is read in place (never copied); settings, the results database and the generated
demo model go to a temporary ``PNEUMOVIEW_HOME`` so the real user folders are not touched.
The first analysable image (in browser order) is selected, analysed with the demo model, and
the window is saved as PNG for the README. The reading-workstation shots in ``docs/``:

    scripts/screenshot.py ../shared/data/cxr-dicom --worklist --output docs/main-window-1600x1000.png
    scripts/screenshot.py ../shared/data/cxr-dicom --size 1280x800 --reading --output docs/main-window-1280x800.png
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wait(app, condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshot: timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder (or file) of DICOM images, e.g. ../shared/data/cxr-dicom")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "screenshot.png")
    parser.add_argument("--size", default="1600x1000", help="window size WxH (default 1600x1000)")
    parser.add_argument(
        "--select",
        default="RG1_UNCR.dcm",
        help="file name to show (default RG1_UNCR.dcm; falls back to the first analysable image)",
    )
    parser.add_argument("--reading", action="store_true", help="sign a reader in and show the docked ILO form")
    parser.add_argument("--worklist", action="store_true", help="show the flat worklist instead of the study tree")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from pneumoview.ui.app import limit_gui_process_threads

    limit_gui_process_threads()
    home = tempfile.mkdtemp(prefix="pneumoview-screenshot-")
    os.environ["PNEUMOVIEW_HOME"] = home

    from pneumoview.settings import Settings, save_settings

    save_settings(Settings(reviewer_name="Dr A. Reviewer"))

    from pneumoview.ui.app import create_application

    app = create_application()
    from pneumoview.ui.main_window import MainWindow

    width, height = (int(v) for v in args.size.lower().split("x"))
    window = MainWindow()
    window.resize(width, height)
    window.show()
    window.open_paths([args.folder])
    wait(app, lambda: window.session.entries and not window.busy(), 120, "the scan")
    app.processEvents()
    entries = list(window.session.entries.values())
    chosen = next((e for e in entries if e.path.name == args.select and e.diagnosable), None)
    chosen = chosen or next((e for e in entries if e.diagnosable), None)
    if chosen is None:
        raise SystemExit(f"screenshot: no analysable radiograph in {args.folder}")
    window.use_demo_model()
    window.select_key(chosen.key)
    window.analyse([chosen.key])
    wait(app, lambda: chosen.result is not None and not window.busy(), 600, "the analysis")
    window.select_key(chosen.key)
    wait(app, lambda: window.viewer.view is not None and window.viewer.view.path == chosen.path, 120, "the viewer")
    wait(
        app,
        lambda: window.model_input.image.pixmap() is not None and not window.model_input.image.pixmap().isNull(),
        120,
        "the model's input",
    )
    if args.worklist:
        window.browser_tabs.setCurrentWidget(window.worklist)
    if args.reading:  # a signed-in reader with the docked ILO form raised (docs/main-window-1280x800.png)
        window.reading_menu.reader = window.reading_menu._repository().sign_in("Dr A. Reader")
        window.refresh_reading_dock()
        window.reading_form_dock.raise_()
    wait(app, lambda: window.tags.tree.topLevelItemCount() > 0, 60, "the tags")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(args.output)):
        raise SystemExit(f"screenshot: cannot write {args.output}")
    print(
        f"screenshot: {args.output} ({width}x{height}); {chosen.path.name}: "
        f"P = {chosen.result.probability:.3f} ({'DEMO' if chosen.result.demo else 'model'})"
    )
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
