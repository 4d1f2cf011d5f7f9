"""The one rule for which files under a folder are looked at, and which of them are DICOM.

Used by the folder scan (:mod:`pneumoview.dicom.scan`), :func:`pneumoview.imageio.load_grey` and
the training data discovery, so that a folder gives the same files everywhere:

* :func:`walk_files` yields every non-folder entry under the given paths, recursively, sorted by
  name per folder; symbolic links to folders are not followed (no cycles). Hidden entries (a
  name starting with ".", e.g. macOS ``._x.dcm`` / ``.DS_Store``, ``.git``) and operating-system
  clutter (:data:`SKIPPED_NAMES`) are skipped. FIFOs, devices and sockets *are* yielded, so the
  caller can report them (``not-a-regular-file``) instead of hiding them; they are never opened.
* :func:`is_dicom_file` says whether a file is DICOM: the Part 10 preamble ("DICM" at byte 128,
  PS3.10 7.1), or, for a DICOM-like name (:data:`DICOM_SUFFIXES` or no suffix), a plausible first
  tag (:func:`~pneumoview.dicom.readonly.looks_like_bare_dicom`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from pneumoview.dicom.readonly import looks_like_bare_dicom, open_readonly
from pneumoview.errors import PneumoViewError

#: Bytes 128..131 of a DICOM Part 10 file (PS3.10 7.1).
DICOM_MAGIC = b"DICM"
#: Name suffixes (lower case) of DICOM files; files without a suffix are treated the same way.
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".ima"})
#: File names (lower case) never looked at: operating-system clutter. (Anything else that is not an
#: image, a README for instance, is reported by the caller with its reason, not hidden.)
SKIPPED_NAMES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db"})


def is_skipped_name(name: str) -> bool:
    """True for hidden names (leading ".") and :data:`SKIPPED_NAMES`."""
    return name.startswith(".") or name.lower() in SKIPPED_NAMES


def has_dicom_name(path: str | os.PathLike[str]) -> bool:
    """True if the name's suffix is one of :data:`DICOM_SUFFIXES` or it has none (e.g. ``IM000001``)."""
    suffix = Path(path).suffix.lower()
    return suffix in DICOM_SUFFIXES or suffix == ""


def read_head(path: str | os.PathLike[str], size: int = 132) -> bytes:
    """The first ``size`` bytes of a regular file; b"" if it cannot be opened (or is not regular)."""
    try:
        with open_readonly(path) as handle:
            return handle.read(size)
    except (OSError, PneumoViewError):
        return b""


def has_dicom_preamble(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a regular file with "DICM" at byte 128. Reads 132 bytes."""
    head = read_head(path)
    return len(head) == 132 and head[128:132] == DICOM_MAGIC


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """The one DICOM file rule: preamble, or a DICOM-like name starting with a plausible tag."""
    head = read_head(path)
    if len(head) == 132 and head[128:132] == DICOM_MAGIC:
        return True
    return has_dicom_name(path) and looks_like_bare_dicom(head[:8])


def walk_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Every non-folder entry under ``paths`` (files and folders mixed), recursively (see the module).

    A path given directly is always yielded (even hidden or not regular). A folder that cannot
    be listed is yielded as itself so that the caller reports it rather than skipping it.
    """
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from _walk(path)
        else:
            yield path


def _walk(folder: Path) -> Iterator[Path]:
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not is_skipped_name(e.name)), key=lambda e: e.name)
    except OSError:
        yield folder  # reported as unreadable by the caller
        return
    subfolders = []
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(entry.path)
            elif entry.is_symlink() and entry.is_dir():
                continue  # a link to a folder: not followed
            else:
                yield Path(entry.path)
        except OSError:
            yield Path(entry.path)
    for sub in subfolders:
        yield from _walk(Path(sub))
