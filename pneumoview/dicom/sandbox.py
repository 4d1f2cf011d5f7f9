"""Decode untrusted pixel data in a small pool of worker processes with time and memory limits.

A codec fed a hostile file can abort the whole process (GDCM throws a C++ exception on a
corrupt JPEG-lossless stream: SIGABRT), hang, or allocate gigabytes. Every function that
decodes a user's file (:func:`pneumoview.imageio.load_grey`, :func:`pneumoview.preprocess.prepare`,
:func:`pneumoview.dicom.display.load_display_image`) therefore runs its work through
:func:`run` in a worker process:

* the worker sets ``RLIMIT_AS`` (address space, :data:`DEFAULT_MEMORY_BYTES`) and
  ``RLIMIT_CORE`` = 0 on itself; the caller waits at most :data:`DEFAULT_TIMEOUT_S` seconds;
* a worker that dies (signal), runs past the limit or runs out of memory becomes a
  :class:`~pneumoview.errors.DecoderError` with ``code`` ``decoder-crashed``, ``decoder-timeout``
  or ``decoder-memory`` for that one file, and is replaced by a fresh one on the next call;
* errors raised on purpose in the worker (the PneumoViewError family) come back as the same
  class with the same reason, path and tag; any other exception is ``decoder-error``.

Nothing is pickled: requests and replies are JSON, and numpy arrays come back as raw bytes in
a shared-memory file (``/dev/shm``, mapped copy-on-write by the caller, unlinked at once) or,
where there is none, over the pipe. Workers are started with the ``forkserver`` method (no
``fork`` of a process running Qt threads) and reused across images.

A task is a module-level function ``fn(path, **params) -> (meta, arrays)`` of the
``pneumoview`` package: ``meta`` is JSON-ready, ``arrays`` maps names to numpy arrays.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import mmap
import multiprocessing
import os
import secrets
import signal
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from pneumoview import errors
from pneumoview.errors import DecoderError, PneumoViewError

log = logging.getLogger(__name__)

#: Reason codes of :class:`~pneumoview.errors.DecoderError`.
DECODER_CRASHED = "decoder-crashed"
DECODER_TIMEOUT = "decoder-timeout"
DECODER_MEMORY = "decoder-memory"
DECODER_ERROR = "decoder-error"

#: Wall-clock limit of one task (a 4k JPEG 2000 radiograph decodes in ~1-3 s on one core).
DEFAULT_TIMEOUT_S = 60.0
#: Address-space limit of a worker: a 4300x4300 16-bit radiograph needs ~0.5 GB on its way to
#: the crop; numpy, pydicom, Pillow and the codecs map ~0.6 GB of address space at rest.
DEFAULT_MEMORY_BYTES = 4 << 30
#: Workers kept (each one decodes one image at a time).
DEFAULT_WORKERS = 2

#: Array dtypes accepted back from a worker.
_DTYPES = frozenset({"float32", "float64", "uint8", "uint16", "int16", "uint32", "int32", "bool"})
#: Largest JSON message accepted from a worker.
_MAX_MESSAGE = 64 << 20
_SHM_DIR = Path("/dev/shm")

#: True inside a worker: the sandboxed functions then run their work directly.
_IN_WORKER = False


def in_worker() -> bool:
    """True in a decoder worker process (where tasks run in-process)."""
    return _IN_WORKER


# ----------------------------------------------------------------------------- worker side


def _set_limits(memory_bytes: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # an aborting codec leaves no core file
    if memory_bytes > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _resolve(name: str) -> Callable[..., tuple[dict[str, Any], dict[str, np.ndarray]]]:
    module_name, _, attr = name.partition(":")
    if not module_name.startswith("pneumoview.") or not attr:
        raise ValueError(f"not a pneumoview task: {name!r}")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise TypeError(f"not callable: {name!r}")
    return fn


def _out_of_memory(exc: BaseException) -> bool:
    """True if ``exc`` is, or was caused by, a MemoryError (decoders wrap it in PixelDecodeError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _error_reply(exc: BaseException) -> dict[str, Any]:
    if _out_of_memory(exc):
        return {
            "ok": False,
            "error": "DecoderError",
            "code": DECODER_MEMORY,
            "reason": "the decoder ran out of memory (memory limit)",
        }
    if isinstance(exc, PneumoViewError):
        return {
            "ok": False,
            "error": type(exc).__name__,
            "reason": exc.reason,
            "path": os.fspath(exc.path) if exc.path is not None else None,
            "tag": exc.tag,
            "code": getattr(exc, "code", None),
        }
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return {"ok": False, "error": "DecoderError", "code": DECODER_ERROR, "reason": f"unexpected decoder error: {text}"}


def _write_array(array: np.ndarray, target: str | None) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    described: dict[str, Any] = {"dtype": str(array.dtype), "shape": [int(n) for n in array.shape]}
    if target is not None and array.nbytes:
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, array.nbytes)
            with mmap.mmap(fd, array.nbytes) as mapped:
                np.frombuffer(mapped, dtype=array.dtype, count=array.size).reshape(array.shape)[...] = array
        finally:
            os.close(fd)
        described["file"] = os.path.basename(target)
    return described


def _serve_one(conn: Connection, request: dict[str, Any]) -> None:
    fn = _resolve(str(request["fn"]))
    path = Path(request["path"])
    try:
        meta, arrays = fn(path, **dict(request.get("params") or {}))
        prefix = request.get("shm")
        described = {}
        for i, (name, array) in enumerate(arrays.items()):
            target = str(_SHM_DIR / f"{prefix}-{i}") if prefix else None
            described[name] = _write_array(array, target)
        reply: dict[str, Any] = {"ok": True, "meta": meta, "arrays": described}
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        reply, arrays = _error_reply(exc), {}
    conn.send_bytes(json.dumps(reply).encode("utf-8"))
    if reply["ok"] and not request.get("shm"):
        for array in arrays.values():
            conn.send_bytes(np.ascontiguousarray(array).tobytes())


def worker_main(conn: Connection, memory_bytes: int) -> None:
    """Entry point of a worker process: limits, then one task per request until the pipe closes."""
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's business
    # A codec that prints must not write into the caller's stdout (the analysis process speaks
    # JSON lines there): stdout goes to stderr, stdin is closed off.
    try:
        os.dup2(2, 1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    except OSError:
        pass
    _set_limits(memory_bytes)
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)  # pydicom logs each failing decoder plugin
    while True:
        try:
            request = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        _serve_one(conn, request)


# ----------------------------------------------------------------------------- caller side


class _Worker:
    def __init__(self, context: Any, memory_bytes: int) -> None:
        self.conn, child_conn = context.Pipe(duplex=True)
        self.process = context.Process(
            target=worker_main, args=(child_conn, memory_bytes), daemon=True, name="pneumoview-decoder"
        )
        self.process.start()
        child_conn.close()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def exit_reason(self) -> tuple[str, str]:
        """(code, text) for a worker whose pipe closed: it died."""
        self.process.join(5)
        status = self.process.exitcode
        if status is not None and status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = f"signal {-status}"
            if -status == signal.SIGKILL:  # not sent by us: the kernel's out-of-memory killer
                return DECODER_MEMORY, f"the decoder process was killed ({name}; out of memory?)"
            return DECODER_CRASHED, f"the decoder process died ({name})"
        return DECODER_CRASHED, f"the decoder process exited (status {status})"


class DecoderPool:
    """Up to ``workers`` decoder processes, each used by one call at a time (thread-safe)."""

    def __init__(
        self,
        *,
        workers: int = DEFAULT_WORKERS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> None:
        self.workers = max(1, int(workers))
        self.timeout_s = float(timeout_s)
        self.memory_bytes = int(memory_bytes)
        self.pid = os.getpid()
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["pneumoview.dicom.sandbox", "numpy", "pydicom"])
        self._idle: list[_Worker] = []
        self._count = 0
        self._all: set[_Worker] = set()
        self._cond = threading.Condition()
        self._closed = False
        self.replaced = 0  # workers lost to a crash, timeout or memory blow-up

    def _acquire(self) -> _Worker:
        with self._cond:
            while not self._idle and self._count >= self.workers:
                self._cond.wait()
            if self._closed:
                raise RuntimeError("decoder pool is closed")
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            worker = _Worker(self._context, self.memory_bytes)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._all.add(worker)
        return worker

    def _release(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
        with self._cond:
            if healthy and not self._closed:
                self._idle.append(worker)
            else:
                self._all.discard(worker)
                self._count -= 1
                if not healthy:
                    self.replaced += 1
            self._cond.notify()
        if healthy and self._closed:
            worker.kill()

    def run(
        self,
        fn: Callable[..., Any],
        path: str | os.PathLike[str],
        params: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Run task ``fn(path, **params)`` in a worker; returns its ``(meta, arrays)``.

        Raises the task's PneumoViewError, or DecoderError (crashed / timeout / memory / error).
        """
        name = f"{fn.__module__}:{fn.__qualname__}"
        prefix = f"pneumoview-{os.getpid()}-{secrets.token_hex(8)}" if _SHM_DIR.is_dir() else None
        request = json.dumps({"fn": name, "path": os.fspath(path), "params": dict(params or {}), "shm": prefix})
        worker = self._acquire()
        healthy = False
        try:
            reply, arrays = self._exchange(worker, request.encode("utf-8"), path)
            healthy = True
        finally:
            self._release(worker, healthy)
            if prefix is not None and not healthy:
                _remove_shared(prefix)
        if not reply.get("ok"):
            raise _error_from_reply(reply, path)
        return dict(reply.get("meta") or {}), arrays

    def _exchange(
        self,
        worker: _Worker,
        request: bytes,
        path: str | os.PathLike[str],
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        deadline = time.monotonic() + self.timeout_s
        try:
            worker.conn.send_bytes(request)
            if not worker.conn.poll(max(0.0, deadline - time.monotonic())):
                raise DecoderError(DECODER_TIMEOUT, f"decoding took longer than {self.timeout_s:g} s", path=path)
            reply = json.loads(worker.conn.recv_bytes(_MAX_MESSAGE))
            arrays: dict[str, np.ndarray] = {}
            for key, described in (reply.get("arrays") or {}).items():
                arrays[str(key)] = self._receive_array(worker, described, deadline, path)
            return reply, arrays
        except (EOFError, BrokenPipeError, ConnectionResetError):
            code, text = worker.exit_reason()
            raise DecoderError(code, text, path=path) from None
        except (OSError, ValueError, TypeError, KeyError) as exc:  # a garbled reply: the worker is not trusted
            raise DecoderError(
                DECODER_CRASHED, f"unusable reply from the decoder ({type(exc).__name__})", path=path
            ) from exc

    def _receive_array(
        self, worker: _Worker, described: dict[str, Any], deadline: float, path: str | os.PathLike[str]
    ) -> np.ndarray:
        dtype = str(described["dtype"])
        if dtype not in _DTYPES:
            raise ValueError(f"unexpected dtype {dtype}")
        shape = tuple(int(n) for n in described["shape"])
        if any(n < 0 for n in shape) or len(shape) > 4:
            raise ValueError(f"unexpected shape {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = count * np.dtype(dtype).itemsize
        if nbytes == 0:
            return np.zeros(shape, dtype=dtype)
        name = described.get("file")
        if name is None:
            if not worker.conn.poll(max(0.0, deadline - time.monotonic())):
                raise DecoderError(DECODER_TIMEOUT, "decoder reply timed out", path=path)
            data = worker.conn.recv_bytes(nbytes + 1)
            if len(data) != nbytes:
                raise ValueError("array size disagrees with its shape")
            return np.frombuffer(bytearray(data), dtype=dtype).reshape(shape)
        if "/" in str(name) or not str(name).startswith("pneumoview-"):
            raise ValueError("unexpected shared-memory name")
        fd = os.open(_SHM_DIR / str(name), os.O_RDONLY)
        try:
            os.unlink(_SHM_DIR / str(name))
            if os.fstat(fd).st_size != nbytes:
                raise ValueError("array size disagrees with its shape")
            mapped = mmap.mmap(fd, nbytes, access=mmap.ACCESS_COPY)  # private, writable, zero-copy
        finally:
            os.close(fd)
        return np.frombuffer(mapped, dtype=dtype, count=count).reshape(shape)

    def close(self) -> None:
        """Stop every worker (idle ones now; busy ones when their call returns)."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for worker in idle:
            worker.kill()


def _remove_shared(prefix: str) -> None:
    for leftover in _SHM_DIR.glob(f"{prefix}-*"):
        try:
            leftover.unlink()
        except OSError:
            pass


def _error_from_reply(reply: dict[str, Any], path: str | os.PathLike[str]) -> PneumoViewError:
    """The worker's PneumoViewError, rebuilt from its JSON (class looked up in pneumoview.errors only)."""
    cls = getattr(errors, str(reply.get("error", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, PneumoViewError)):
        cls = errors.PixelDecodeError
    reason = str(reply.get("reason", "decoder failed"))
    where = reply.get("path")
    code = reply.get("code")
    if cls is DecoderError:
        return DecoderError(str(code or DECODER_ERROR), reason, path=where if where is not None else path)
    exc = cls.__new__(cls)
    PneumoViewError.__init__(exc, reason, path=where, tag=reply.get("tag"))
    if code:
        exc.code = str(code)  # type: ignore[attr-defined]
    return exc


# ----------------------------------------------------------------------------- the process's pool

_pool: DecoderPool | None = None
_pool_lock = threading.Lock()
_settings: dict[str, Any] = {}


def configure(*, workers: int | None = None, timeout_s: float | None = None, memory_bytes: int | None = None) -> None:
    """Set the limits of this process's pool (takes effect for the next pool; the current one is closed)."""
    global _pool
    with _pool_lock:
        for key, value in (("workers", workers), ("timeout_s", timeout_s), ("memory_bytes", memory_bytes)):
            if value is not None:
                _settings[key] = value
        old, _pool = _pool, None
    if old is not None:
        old.close()


def default_pool() -> DecoderPool:
    """This process's pool, created on first use (a forked child gets its own)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = DecoderPool(**_settings)
        return _pool


def run(
    fn: Callable[..., tuple[dict[str, Any], dict[str, np.ndarray]]], path: str | os.PathLike[str], **params: Any
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run task ``fn(path, **params)`` in this process's pool (in-process inside a worker)."""
    if _IN_WORKER:
        return fn(Path(path), **params)
    return default_pool().run(fn, path, params)


def warm_up() -> None:
    """Start one worker now (e.g. while the window opens), so the first image does not wait."""
    pool = default_pool()
    pool._release(pool._acquire(), True)


def _close_at_exit() -> None:
    if _pool is not None and _pool.pid == os.getpid():
        _pool.close()


atexit.register(_close_at_exit)
