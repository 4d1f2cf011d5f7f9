"""Where PneumoView keeps its files: settings, the results database, the model registry, resources.

Defaults come from platformdirs (``user_config_dir("PneumoView")``, ``user_data_dir("PneumoView")``).
Setting the environment variable ``PNEUMOVIEW_HOME`` puts everything under one folder instead
(``$PNEUMOVIEW_HOME/config``, ``$PNEUMOVIEW_HOME/data``): tests and the portable app use it.
Every function that opens one of these files also takes an explicit path, which wins over both.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from platformdirs import user_cache_dir, user_config_dir, user_data_dir

APP_NAME = "PneumoView"
#: Environment variable that relocates config + data under one folder.
HOME_ENV = "PNEUMOVIEW_HOME"

SETTINGS_FILE = "settings.json"
DATABASE_FILE = "pneumoview.sqlite3"
REGISTRY_FOLDER = "models"


def home_override() -> Path | None:
    """``$PNEUMOVIEW_HOME`` as an absolute path, or None when it is unset or empty."""
    value = os.environ.get(HOME_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


def config_dir() -> Path:
    """Folder for ``settings.json`` (not created here)."""
    home = home_override()
    return home / "config" if home else Path(user_config_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    """Folder for the results database and the model registry (not created here)."""
    home = home_override()
    return home / "data" if home else Path(user_data_dir(APP_NAME, appauthor=False))


def check_writable_dir(folder: str | os.PathLike[str]) -> Path:
    """Check, without leaving anything behind, that ``folder`` can be created or written.

    Probes the folder itself or, when it does not exist yet, its nearest existing ancestor (so a
    failed check never leaves an empty folder). Raises :class:`pneumoview.errors.StorageError`
    (``disk full: ...`` / ``cannot write ...``): a file in place of a folder, a read-only or full
    disk, missing permissions.
    """
    from pneumoview.errors import StorageError, storage_error

    target = Path(folder).expanduser()
    probe = target
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise StorageError("a file is in the way, not a folder", path=probe)
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".pneumoview-probe-") as handle:
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise storage_error(exc, target) from exc
    return target


def cache_dir() -> Path:
    """Folder for files PneumoView can rebuild (prepared weights, the demo model); not created here."""
    home = home_override()
    return home / "cache" if home else Path(user_cache_dir(APP_NAME, appauthor=False))


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def database_path() -> Path:
    return data_dir() / DATABASE_FILE


def registry_dir() -> Path:
    return data_dir() / REGISTRY_FOLDER


def resources_dir() -> Path:
    """The ``resources/`` folder: next to the package in a checkout, inside the bundle when frozen.

    PyInstaller one-folder builds unpack data files under ``sys._MEIPASS``; the spec puts
    ``resources/`` there.
    """
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root is not None:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def resource_path(*parts: str) -> Path:
    """A file under :func:`resources_dir`, e.g. ``resource_path("icons", "pneumoview.svg")``."""
    return resources_dir().joinpath(*parts)
