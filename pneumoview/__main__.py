import multiprocessing
import sys

from pneumoview.cli import main

if __name__ == "__main__":
    # The decoder sandbox (pneumoview.dicom.sandbox) starts worker processes; in the frozen
    # (PyInstaller) app this turns the app into the worker when it is started as one.
    multiprocessing.freeze_support()
    sys.exit(main())
