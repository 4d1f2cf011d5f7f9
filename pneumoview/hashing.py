"""SHA-256 of whole files (bundles, base weights, training images), read in chunks. No torch."""

from __future__ import annotations

import hashlib
import os

#: 4 MiB: large enough for fast hashing of multi-GB weights, small enough to keep memory flat.
CHUNK_BYTES = 1 << 22


def file_sha256(path: str | os.PathLike[str], *, chunk: int = CHUNK_BYTES) -> str:
    """Hex SHA-256 digest of the file's bytes. Only regular files are read: a FIFO or device
    raises :class:`~pneumoview.errors.NotRegularFileError` instead of blocking or never ending."""
    from pneumoview.dicom.readonly import open_regular_fd

    digest = hashlib.sha256()
    with open(open_regular_fd(path), "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
