"""Open DICOM files read-only, regular files only, with reads and inflation bounded.

* A corrupt or non-DICOM file read leniently (``force=True``) can declare an element length of
  gigabytes; ``file.read(length)`` then allocates that much before finding the file short (seen
  at ~1.9 GB for a 200-byte text file). :class:`BoundedReader` caps every large read at the
  bytes actually left, so such files fail fast with a small allocation.
* Only regular files are opened (:func:`open_readonly`): a FIFO would block forever and
  ``/dev/zero`` never ends. The file is opened with ``O_NONBLOCK`` and checked with ``fstat``
  on the open descriptor (no race between a check and the open).
* Deflated Explicit VR Little Endian (1.2.840.10008.1.2.1.99, PS3.5 A.5): pydicom inflates the
  whole body at once with no limit (a 1 MB deflate bomb used 2.1 GB). :func:`read_deflated`
  inflates lazily through :class:`InflatingReader` with a cap, so a header read inflates only
  the header and a pixel read at most what the header says the pixels need.
"""

from __future__ import annotations

import fcntl
import io
import os
import stat
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from pneumoview.errors import NotRegularFileError

if TYPE_CHECKING:  # pydicom is imported lazily: open_regular_fd also serves pneumoview.hashing
    from pydicom.dataset import FileDataset

#: Reads up to this size go straight through (pydicom's many small tag/length reads).
_SMALL_READ = 1 << 16

#: Largest inflated header (everything before Pixel Data) accepted from a deflated file.
HEADER_INFLATE_CAP = 16 << 20
#: Most top-level elements read from a deflated data set (real headers have a few hundred).
MAX_TOP_LEVEL_ELEMENTS = 100_000
#: Largest inflated data set accepted from a deflated file, whatever its header says.
ABSOLUTE_INFLATE_CAP = 1 << 30


def _describe_mode(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular_fd(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of ``path``, which must be a regular file (else NotRegularFileError).

    ``O_NONBLOCK`` keeps the open of a FIFO from blocking; it is cleared again for a regular
    file. Raises OSError (FileNotFoundError, PermissionError, ...) as ``os.open`` does.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(os.fspath(path), flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f"not-a-regular-file: {_describe_mode(mode)}", path=path)
        if hasattr(os, "O_NONBLOCK"):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_regular_file(path: str | os.PathLike[str]) -> None:
    """Raise NotRegularFileError unless ``path`` is a regular file (``stat``, follows links; never opens it)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing / no permission: the opener reports it with its own error
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(f"not-a-regular-file: {_describe_mode(mode)}", path=path)


class BoundedReader(io.BufferedReader):
    """A read-only regular file whose ``read(n)`` never asks for more than the bytes left."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        raw = io.FileIO(open_regular_fd(path), "r", closefd=True)
        super().__init__(raw)
        self.size = os.fstat(raw.fileno()).st_size
        self.path = Path(path)

    @property
    def name(self) -> str:
        return str(self.path)

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > _SMALL_READ:
            size = max(0, min(size, self.size - self.tell()))
        return super().read(size)


def open_readonly(path: str | os.PathLike[str]) -> BoundedReader:
    """Open ``path`` for reading only; raises NotRegularFileError for FIFOs, devices, sockets and
    folders, OSError (FileNotFoundError, PermissionError, ...) otherwise."""
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


# ----------------------------------------------------------------------------- deflate


class InflateError(ValueError):
    """A deflated data set is corrupt (``zlib.error``) or would inflate past its cap."""


class InflatingReader(io.RawIOBase):
    """The raw-deflate stream of ``source`` (from its current position) as a seekable file,
    inflated lazily in chunks; inflating past ``cap`` bytes raises :class:`InflateError`."""

    _CHUNK = 1 << 18

    def __init__(self, source: BinaryIO, cap: int, name: str = "") -> None:
        super().__init__()
        self._source = source
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buffer = bytearray()
        self._pos = 0
        self._cap = int(cap)
        self._done = False
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _fill(self, upto: int) -> None:
        """Inflate until the buffer holds ``upto`` bytes or the stream ends."""
        while len(self._buffer) < upto and not self._done:
            data = self._inflater.unconsumed_tail or self._source.read(1 << 16)
            if not data:
                self._done = True  # truncated stream: the reader sees end of file
                break
            room = self._cap + 1 - len(self._buffer)
            want = max(1, min(room, max(upto - len(self._buffer), self._CHUNK)))
            try:
                self._buffer += self._inflater.decompress(data, want)
            except zlib.error as exc:
                raise InflateError(f"corrupt deflated data set: {exc}") from exc
            if len(self._buffer) > self._cap:
                raise InflateError(f"deflated data set inflates past {self._cap:,} bytes (deflate bomb?)")
            if self._inflater.eof:
                self._done = True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            self._fill(self._cap + 1)
            end = len(self._buffer)
        else:
            self._fill(self._pos + size)
            end = min(len(self._buffer), self._pos + size)
        out = bytes(self._buffer[self._pos : end])
        self._pos = max(self._pos, end)
        return out

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            self._fill(self._cap + 1)
            offset += len(self._buffer)
        if offset < 0:
            raise ValueError("negative seek position")
        self._pos = offset
        return offset

    def tell(self) -> int:
        return self._pos


#: Deflated Explicit VR Little Endian (PS3.5 A.5), as it appears in the File Meta bytes.
DEFLATED_UID = "1.2.840.10008.1.2.1.99"
_DEFLATED_BYTES = DEFLATED_UID.encode("ascii")


def is_deflated(handle: BinaryIO) -> bool:
    """True if the Part 10 file open in ``handle`` is Deflated Explicit VR Little Endian.

    Cheap: the first 4 KiB are searched for the UID before the File Meta is parsed. The
    handle is left at position 0.
    """
    handle.seek(0)
    head = handle.read(4096)
    handle.seek(0)
    if _DEFLATED_BYTES not in head or head[128:132] != b"DICM":
        return False
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        read_preamble(handle, False)
        meta = _read_file_meta_info(handle)
        return str(meta.get("TransferSyntaxUID", "")) == DEFLATED_UID
    finally:
        handle.seek(0)


class _AscendingTags:
    """``stop_when`` of pydicom's ``read_dataset``: top-level tags must ascend (PS3.5 7.1). A
    deflate bomb is a header followed by inflated zeros, which parse as millions of empty
    (0000,0000) elements (~1.5 s per MiB); the first tag out of order ends the read instead."""

    def __init__(self, stop_before_pixels: bool) -> None:
        self.stop_before_pixels = stop_before_pixels
        self.last = -1
        self.count = 0

    def __call__(self, tag: int, vr: str | None, length: int) -> bool:
        if int(tag) <= self.last:
            raise InflateError(
                f"deflated data set: element ({int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X}) out of "
                "order (corrupt, or padded with junk)"
            )
        self.last = int(tag)
        self.count += 1
        if self.count > MAX_TOP_LEVEL_ELEMENTS:
            raise InflateError(f"deflated data set: more than {MAX_TOP_LEVEL_ELEMENTS:,} elements (corrupt?)")
        return self.stop_before_pixels and tag in (0x7FE00010, 0x7FE00009, 0x7FE00008)


def read_deflated(handle: BinaryIO, *, stop_before_pixels: bool, cap: int) -> FileDataset:
    """Read a deflated Part 10 file from ``handle`` (at position 0) with the inflated size capped.

    ``cap`` is clipped to :data:`ABSOLUTE_INFLATE_CAP`. Raises InflateError (a ValueError) for a
    corrupt stream or one inflating past the cap, and pydicom's parser errors otherwise.
    """
    from pydicom import config as pydicom_config
    from pydicom.dataset import FileDataset
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble

    preamble = read_preamble(handle, False)
    file_meta = _read_file_meta_info(handle)
    name = getattr(handle, "name", "")
    reader = InflatingReader(handle, min(int(cap), ABSOLUTE_INFLATE_CAP), name=str(name))
    try:
        dataset = read_dataset(cast(BinaryIO, reader), False, True, stop_when=_AscendingTags(stop_before_pixels))
    except EOFError:
        if pydicom_config.settings.reading_validation_mode == pydicom_config.RAISE:
            raise
        raise InflateError("deflated data set ends early (truncated file?)") from None
    ds = FileDataset(str(name), dataset, preamble, file_meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds
