"""Atomic writes: a temporary file (or folder) in the same folder, fsync, then a rename.

A reader (or the app after a crash) sees either the old file or the complete new one, never a
half-written file. The temporary file is removed when writing fails; :func:`atomic_dir` does the
same for whole folders (bundles, the demo model, registry copies) and :func:`clean_stale` removes
what a killed process left behind. :func:`write_error_reason` turns a failed write into one line
(``disk full: ...`` / ``cannot write ...``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO


def fsync_dir(directory: Path) -> None:
    """Flush a folder's entry table so a rename survives power loss.

    A no-op where folders cannot be opened (Windows) or a filesystem refuses fsync on folders
    (the rename itself is still atomic there).
    """
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``.

    ``mode`` is ``"w"`` (text) or ``"wb"`` (bytes). The parent folder must exist.
    """
    if mode not in {"w", "wb"}:
        raise ValueError(f"atomic_open supports 'w' and 'wb', not {mode!r}")
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        if mode == "wb":
            handle: IO = os.fdopen(fd, "wb")
        else:
            handle = os.fdopen(fd, "w", encoding=encoding, newline=newline)
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)


def write_error_reason(exc: BaseException, path: str | os.PathLike[str] | None = None) -> str:
    """One line for a failed write: ``"disk full: <path>"`` or ``"cannot write <path>: <why>"``
    (:func:`pneumoview.errors.storage_error`'s wording, the one rule for it)."""
    from pneumoview.errors import storage_error

    return storage_error(exc, path).message


#: Temporary folders made by :func:`atomic_dir` are named ``.<target name>.tmp-<pid>-<random>``.
_STAGING_MARK = ".tmp-"


def _staging_name(target: Path) -> str:
    return f".{target.name}{_STAGING_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _fsync_tree(folder: Path) -> None:
    if os.name != "posix":
        return
    for file in (f for f in folder.rglob("*") if f.is_file() and not f.is_symlink()):
        with file.open("rb") as handle:
            os.fsync(handle.fileno())
    for sub in [folder, *(d for d in folder.rglob("*") if d.is_dir() and not d.is_symlink())]:
        fsync_dir(sub)


@dataclass
class StagingDir:
    """The folder being built (``path``) and, once the ``with`` block ended well, where it landed (``final``)."""

    path: Path
    target: Path
    final: Path | None = None


def _place(staging: Path, target: Path, *, replace: bool, unique: bool) -> Path:
    """Rename ``staging`` to ``target`` (or ``target-2``, ``-3``... when ``unique``); returns where it went."""
    if replace and target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
        try:
            os.replace(staging, target)
        except OSError:
            os.replace(old, target)  # put the previous folder back
            raise
        shutil.rmtree(old, ignore_errors=True)
        return target
    for n in range(1, 1000 if unique else 2):
        final = target if n == 1 else target.with_name(f"{target.name}-{n}")
        if final.exists():
            continue
        try:
            os.rename(staging, final)  # fails when another process made a non-empty folder meanwhile
        except OSError:
            if final.exists():
                continue
            raise
        return final
    raise FileExistsError(errno.EEXIST, "the folder already exists", str(target))


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str], *, replace: bool = False, unique: bool = False) -> Iterator[StagingDir]:
    """Build a folder in a hidden temporary sibling, then rename it into place.

    ``with atomic_dir(target) as staging:`` write into ``staging.path``; when the block ends
    without an exception every file is fsynced and the folder renamed to ``target`` (an existing
    ``target`` is replaced only with ``replace=True``, the old one kept until the new one is in
    place; with ``unique=True`` a taken name gets ``-2``, ``-3``... and ``staging.final`` says
    which). On any exception the temporary folder is removed and the exception propagates, so
    a crash or a full disk never leaves half a folder under the target's name. Temporary folders
    of a process that died are removed by :func:`clean_stale`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not (replace or unique):
        raise FileExistsError(errno.EEXIST, "the folder already exists", str(target))
    staging = StagingDir(path=target.parent / _staging_name(target), target=target)
    try:
        staging.path.mkdir()
        yield staging
        _fsync_tree(staging.path)
        staging.final = _place(staging.path, target, replace=replace, unique=unique)
        fsync_dir(target.parent)
    finally:
        if staging.path.exists():
            shutil.rmtree(staging.path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def clean_stale(
    folder: str | os.PathLike[str], *, legacy_patterns: tuple[str, ...] = (), min_age_s: float = 3600.0
) -> list[Path]:
    """Remove leftovers of interrupted runs in ``folder``; returns what was removed.

    * ``.<name>.tmp-<pid>-<hex>`` staging folders (:func:`atomic_dir`) and
      ``.<name>.old-<pid>-<hex>`` replaced folders whose process is no longer running;
    * ``.<name>.<random>.tmp`` files of :func:`atomic_open` and anything matching
      ``legacy_patterns`` (glob) older than ``min_age_s`` (their writer is not recorded).

    Errors are ignored: cleaning is best effort and never stops a start.
    """
    root = Path(folder)
    removed: list[Path] = []
    try:
        children = list(root.iterdir())
    except OSError:
        return removed
    now = time.time()
    for child in children:
        name = child.name
        if not name.startswith("."):
            continue
        stale = False
        for mark in (_STAGING_MARK, ".old-"):
            head, sep, tail = name.rpartition(mark)
            pid_text = tail.split("-", 1)[0]
            if sep and head and pid_text.isdigit() and "-" in tail:
                stale = not _pid_alive(int(pid_text))
                break
        else:
            patterns = (".*.tmp", *legacy_patterns)
            if any(child.match(p) for p in patterns):
                try:
                    stale = now - child.lstat().st_mtime > min_age_s
                except OSError:
                    continue
        if not stale:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()
        if not child.exists():
            removed.append(child)
    return removed
