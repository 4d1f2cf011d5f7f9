"""Open DICOM files read-only, with reads bounded by the file's size.

A corrupt or non-DICOM file read leniently (``force=True``) can declare an element length of
gigabytes; ``file.read(length)`` then allocates that much before finding the file short (seen
at ~1.9 GB for a 200-byte text file). :class:`BoundedReader` caps every large read at the
bytes actually left, so such files fail fast with a small allocation.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

#: Reads up to this size go straight through (pydicom's many small tag/length reads).
_SMALL_READ = 1 << 16


class BoundedReader(io.BufferedReader):
    """A read-only binary file whose ``read(n)`` never asks for more than the bytes left."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        raw = io.FileIO(os.fspath(path), "r")  # "r": O_RDONLY, never created or truncated
        super().__init__(raw)
        self.size = os.fstat(raw.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > _SMALL_READ:
            size = max(0, min(size, self.size - self.tell()))
        return super().read(size)


def open_readonly(path: str | os.PathLike[str]) -> BoundedReader:
    """Open ``path`` for reading only; raises OSError (FileNotFoundError, IsADirectoryError, ...)."""
    return BoundedReader(Path(path))


#: Groups a DICOM data set without the Part 10 preamble starts with: command (0000),
#: file meta (0002), directory (0004) or identifying (0008) attributes.
_FIRST_GROUPS = frozenset({0x0000, 0x0002, 0x0004, 0x0008})


def looks_like_bare_dicom(head: bytes) -> bool:
    """True if ``head`` (the first bytes of a file without "DICM" at 128) starts with a
    plausible DICOM tag, little or big endian; cheap rejection of text, images and junk."""
    if len(head) < 8:
        return False
    little = int.from_bytes(head[0:2], "little")
    big = int.from_bytes(head[0:2], "big")
    return little in _FIRST_GROUPS or big in _FIRST_GROUPS
