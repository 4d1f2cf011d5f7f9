"""The clinic's own ILO standard radiographs: list the folder, name each file (Qt-free).

The ILO International Classification of Radiographs of Pneumoconioses is read by comparison with
the ILO's standard radiographs. They are licensed and never shipped with PneumoView: the setting
``ilo_standards_folder`` (:class:`pneumoview.settings.Settings`) points at the clinic's own copy.

:func:`list_standards` lists the DICOM files and PNG/JPEG/TIFF pictures in that folder (and its
sub-folders; the scan's walking rule, :func:`pneumoview.dicom.files.walk_files`) and names each one
from its file name (:func:`standard_name`), leniently:

* letters are compared in any case; spaces, ``_``, ``-`` and ``.`` separate parts; a leading
  ``ILO`` / ``std`` / ``standard`` word and a leading numeric ordering prefix (``01_``) are ignored;
* ``0/0``, ``0-0``, ``00`` or ``normal`` -> ``0/0``;
* small opacities, profusion then shape/size: ``1p``, ``2q``, ``3r``, ``1-1_pp``, ``2/2 q/t``,
  ``11pp`` -> ``1/1 p/p``, ``2/2 q/q``, ``3/3 r/r``, ``1/1 p/p``, ``2/2 q/t``, ``1/1 p/p`` (a single
  profusion digit or shape letter is doubled, as on the standard films);
* large opacities: ``A``, ``B``, ``C``, ``large_A``, ``LO-b`` -> ``A``, ``B``, ``C``;
* quadrant images: ``quad_rt``, ``quad u`` -> ``quad rt``, ``quad u``;
* anything else is listed by its file name (``known`` False), after the named ones.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pneumoview.dicom.files import DICOM_SUFFIXES, is_dicom_file, walk_files
from pneumoview.dicom.pictures import PICTURE_SUFFIXES, has_picture_name
from pneumoview.errors import ConfigError

#: Where the setting is changed, for the messages below.
WHERE_TO_SET = "File > Settings... > ILO standard images folder"

KIND_NORMAL, KIND_SMALL, KIND_LARGE, KIND_QUAD, KIND_OTHER = "normal", "small opacities", "large", "quad", "other"
_KIND_ORDER = {KIND_NORMAL: 0, KIND_SMALL: 1, KIND_LARGE: 2, KIND_QUAD: 3, KIND_OTHER: 4}

_PREFIX = re.compile(r"^(?:ilo|std|standard)(?: |$)")
_ORDERING = re.compile(r"^\d+ (?=\S)")
_NORMAL = re.compile(r"0 ?/? ?0|normal")
_SMALL = re.compile(r"([0-3]) ?(?:/ ?)?([0-3])? ?([pqrstu]) ?(?:/ ?)?([pqrstu])?")
_LARGE = re.compile(r"(?:(?:large|lo|large opacities|large opacity) ?)?([abc])")
_QUAD = re.compile(r"quad ?(.+)")


@dataclass(frozen=True)
class StandardImage:
    """One file of the standards folder: ``name`` is the ILO standard it shows (or the file name)."""

    path: Path
    name: str
    kind: str  # KIND_*
    is_dicom: bool

    @property
    def known(self) -> bool:
        return self.kind != KIND_OTHER

    @property
    def sort_key(self) -> tuple[int, str, str]:
        return (_KIND_ORDER[self.kind], self.name, os.fspath(self.path))


def _normalise(stem: str) -> str:
    text = re.sub(r"[\s_.\-]+", " ", stem.lower()).strip()
    return _PREFIX.sub("", text).strip()


def _match(text: str) -> tuple[str, str] | None:
    if _NORMAL.fullmatch(text):
        return "0/0", KIND_NORMAL
    small = _SMALL.fullmatch(text)
    if small:
        major, minor, shape, second = small.groups()
        return f"{major}/{minor or major} {shape}/{second or shape}", KIND_SMALL
    large = _LARGE.fullmatch(text)
    if large:
        return large.group(1).upper(), KIND_LARGE
    quad = _QUAD.fullmatch(text)
    if quad:
        return f"quad {quad.group(1)}", KIND_QUAD
    return None


def standard_name(filename: str) -> tuple[str, str]:
    """``(name, kind)`` for a file name (see the module for the accepted spellings); unknown names give
    ``(filename, KIND_OTHER)``."""
    suffix = Path(filename).suffix.lower()
    stem = Path(filename).stem if suffix in PICTURE_SUFFIXES or suffix in DICOM_SUFFIXES else filename
    text = _normalise(stem)
    found = _match(text)
    if found is None and _ORDERING.match(text):
        found = _match(_ORDERING.sub("", text, count=1))
    return found if found is not None else (filename, KIND_OTHER)


def list_standards(folder: str | os.PathLike[str] | None) -> list[StandardImage]:
    """The standard images in ``folder``, named ones first in ILO order (0/0, small opacities by profusion and
    shape, A/B/C, quadrant images), then the others by file name.

    Raises :class:`~pneumoview.errors.ConfigError` saying where to set the folder when it is not set, does
    not exist or holds no DICOM / PNG / JPEG / TIFF file.
    """
    if not folder or not str(folder).strip():
        raise ConfigError(f"No folder of ILO standard radiographs is set. Set it in {WHERE_TO_SET}.")
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"The ILO standard radiographs folder does not exist: {root}. Set it in {WHERE_TO_SET}.")
    found = []
    for path in walk_files([root]):
        picture = has_picture_name(path)
        if not path.is_file() or not (picture or is_dicom_file(path)):
            continue
        name, kind = standard_name(path.name)
        found.append(StandardImage(path, name, kind, is_dicom=not picture))
    if not found:
        raise ConfigError(
            f"The ILO standard radiographs folder holds no DICOM, PNG, JPEG or TIFF image: {root}. "
            f"Put the clinic's licensed ILO standard images there, or choose another folder in {WHERE_TO_SET}."
        )
    return sorted(found, key=lambda s: s.sort_key)
