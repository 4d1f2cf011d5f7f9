"""Whole-file SHA-256s remembered across starts by file identity, and re-hashed whenever the file changed."""

from __future__ import annotations

import hashlib
import os

import pytest

from pneumoview.inference import fingerprints


@pytest.fixture
def hashed(tmp_path, monkeypatch) -> list[str]:
    """The files actually read by the hasher (a spy around the real one), in a fresh cache folder."""
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(fingerprints, "_SHA256_CACHE", {})
    calls: list[str] = []
    real = fingerprints.file_sha256

    def spy(path, **kw):
        calls.append(os.fspath(path))
        return real(path, **kw)

    monkeypatch.setattr(fingerprints, "file_sha256", spy)
    return calls


def _new_start() -> None:
    fingerprints._SHA256_CACHE.clear()  # what a new process starts with


def test_a_later_start_reuses_the_digest_without_reading_the_file(tmp_path, hashed) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"w" * 5000)
    want = hashlib.sha256(b"w" * 5000).hexdigest()
    assert fingerprints.sha256_file(path) == want and len(hashed) == 1
    _new_start()
    assert fingerprints.sha256_file(path) == want and len(hashed) == 1  # from the user cache folder
    store = (tmp_path / "home" / "cache" / fingerprints.SHA256_CACHE_FILE).read_text()
    assert want in store and str(tmp_path) not in store and "weights.bin" not in store  # no path written


def test_same_size_and_restored_mtime_is_still_rehashed(tmp_path, hashed) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 4096)
    fingerprints.sha256_file(path)
    before = path.stat()
    with open(path, "r+b") as f:  # same size, one byte changed, modification time put back
        f.write(b"b")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size
    _new_start()
    assert fingerprints.sha256_file(path) == hashlib.sha256(b"b" + b"a" * 4095).hexdigest()
    assert len(hashed) == 2  # ctime moved: read again


def test_a_replaced_file_with_the_same_size_and_mtime_is_rehashed(tmp_path, hashed) -> None:
    path, other = tmp_path / "weights.bin", tmp_path / "other.bin"
    path.write_bytes(b"a" * 4096)
    other.write_bytes(b"c" * 4096)
    fingerprints.sha256_file(path)
    old = path.stat()
    os.utime(other, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(other, path)  # another inode under the same name, size and mtime
    assert path.stat().st_ino != old.st_ino and path.stat().st_mtime_ns == old.st_mtime_ns
    assert fingerprints.sha256_file(path) == hashlib.sha256(b"c" * 4096).hexdigest()
    assert len(hashed) == 2


def test_a_corrupt_cache_file_is_ignored_and_rewritten(tmp_path, hashed) -> None:
    store = tmp_path / "home" / "cache" / fingerprints.SHA256_CACHE_FILE
    store.parent.mkdir(parents=True)
    store.write_text("{not json")
    path = tmp_path / "weights.bin"
    path.write_bytes(b"z" * 10)
    assert fingerprints.sha256_file(path) == hashlib.sha256(b"z" * 10).hexdigest()
    _new_start()
    fingerprints.sha256_file(path)
    assert len(hashed) == 1 and store.read_text().startswith("{")
