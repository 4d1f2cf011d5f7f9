"""The analysis worker process and its message schema, shared by both sides (no Qt; torch only in the child).

Why a process: importing torch, building the model and some of its operators hold Python's GIL
for hundreds of milliseconds, which would freeze a GUI thread in the same process; a crash or
out-of-memory in the model cannot take the review window down; cancelling is a message; memory
is handed back when the process ends.

This module is the schema and the parent's client; the child's side is
:mod:`pneumoview.service.analysis_worker` (the only part that imports torch). The child
(``python -m pneumoview gui --analysis-worker``, or ``python -m pneumoview.service.analysis_worker``)
reads one JSON request per line on stdin and answers with JSON event lines on stdout (anything
else the libraries print goes to stderr).

Requests (:func:`analyse_request`, :func:`validate_request`)
    ``{"cmd": "analyse", "engine": EngineSpec, "threshold": 0.5, "operating_point_id": "",
    "batch_size": 8, "quality": {...} (the image-quality gate's threshold overrides; absent: the
    child's settings), "items": [WorkItem, ...]}``; ``{"cmd": "validate", "engine": EngineSpec}``;
    ``{"cmd": "cancel"}`` (stops after the current batch); ``{"cmd": "quit"}``;
    ``{"cmd": "heatmap", "engine": EngineSpec, "key": ..., "path": ...}`` (one image's model-attention
    map, :mod:`pneumoview.inference.heatmap`).
Events (:data:`EVENTS`, checked by :func:`decode_event`)
    ``loading``; ``loaded`` (:class:`LoadedModel` fields); ``results`` (``items``: one
    :class:`ResultItem` per image of the batch, ``{"key": ..., "result": ImageResult.to_dict()}``,
    failures included: an image that could not be prepared is a failed result with its reason code);
    ``heatmap`` (key, size, crop_map as base64 uint8 levels, box, image_shape, probability, label,
    method, demo); ``progress`` (done, total); ``done`` (count); ``cancelled``; ``error`` (type, reason,
    path, code).

:func:`pneumoview.service.analysis_worker.predict_results` (the engine's probabilities ->
:class:`~pneumoview.results.ImageResult`, non-finite outputs as failures) is the one place a model
output becomes a result; ``pneumoview analyze`` uses it too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pneumoview import errors
from pneumoview.errors import PneumoViewError
from pneumoview.results import ImageIdentity, ImageResult

#: Event names the child sends.
EVENTS = ("loading", "loaded", "results", "heatmap", "progress", "done", "cancelled", "error")
FINAL_EVENTS = ("done", "cancelled", "error")


# --------------------------------------------------------------------------- message schema
@dataclass(frozen=True)
class EngineSpec:
    """Which model to run: the demo model, or a bundle with the base weights (paths as text)."""

    kind: str  # "demo" (bundle: "" = the demo's own) | "bundle"
    bundle: str = ""
    clip_path: str = ""
    llama_path: str = ""
    device: str = "auto"
    precision: str = "auto"
    quantisation: str = ""  # "" = the settings' quantisation (pneumoview.precision.Quantisation)

    def __post_init__(self) -> None:
        if self.kind not in ("demo", "bundle"):
            raise ValueError(f"engine kind must be 'demo' or 'bundle', not {self.kind!r}")

    @property
    def demo(self) -> bool:
        return self.kind == "demo"

    def describe(self) -> str:
        if self.demo:
            return f"bundle {self.bundle} on the demo base weights" if self.bundle else "demo model"
        return f"bundle {self.bundle}"


@dataclass(frozen=True)
class WorkItem:
    """One image to analyse: the caller's key, its file and its identity (UID + content SHA-256)."""

    key: str
    path: str
    sop_instance_uid: str
    content_sha256: str

    @property
    def identity(self) -> ImageIdentity:
        return ImageIdentity(self.sop_instance_uid, self.content_sha256, self.path)

    @classmethod
    def for_identity(cls, key: str, identity: ImageIdentity) -> WorkItem:
        return cls(key, identity.path, identity.sop_instance_uid, identity.content_sha256)


@dataclass(frozen=True)
class ResultItem:
    """One image's outcome in a ``results`` event."""

    key: str
    result: ImageResult


@dataclass(frozen=True)
class LoadedModel:
    """The ``loaded`` event: what the child is running."""

    model_name: str
    model_id: str
    demo: bool
    model_version: str
    created: str
    fingerprint: str
    device: str
    plan: str
    class_names: list[str] = field(default_factory=list)


def analyse_request(
    spec: EngineSpec,
    items: Sequence[WorkItem],
    *,
    threshold: float,
    batch_size: int = 8,
    operating_point_id: str = "",
    quality: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    request = {
        "cmd": "analyse",
        "engine": asdict(spec),
        "threshold": float(threshold),
        "batch_size": int(batch_size),
        "operating_point_id": operating_point_id,
        "items": [asdict(i) for i in items],
    }
    if quality is not None:
        request["quality"] = dict(quality)
    return request


def validate_request(spec: EngineSpec) -> dict[str, Any]:
    return {"cmd": "validate", "engine": asdict(spec)}


def decode_event(line: str) -> dict[str, Any] | None:
    """One line from the child -> its event dict (``results`` items as :class:`ResultItem`), or None for
    a line that is not an event. Raises ValueError for an event that breaks the schema."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("event") not in EVENTS:
        return None
    if event["event"] == "results":
        items = event.get("items")
        if not isinstance(items, list):
            raise ValueError("a results event needs a list of items")
        event["items"] = [ResultItem(str(i["key"]), ImageResult.from_dict(i["result"])) for i in items]
    elif event["event"] == "loaded":
        event["model"] = LoadedModel(**{k: event[k] for k in LoadedModel.__dataclass_fields__ if k in event})
    return event


def error_from_event(event: Mapping[str, Any]) -> PneumoViewError:
    """Rebuild the child's PneumoViewError subclass (by name) from an ``error`` event."""
    cls = getattr(errors, str(event.get("type", "")), None)
    reason = str(event.get("reason", "analysis failed"))
    path = event.get("path") or None
    if cls is errors.UnsupportedImageError:
        return errors.UnsupportedImageError(str(event.get("code", "unsupported")), reason, path=path)
    if isinstance(cls, type) and issubclass(cls, PneumoViewError):
        return cls(reason, path=path)
    return PneumoViewError(reason, path=path)


def reason_code(exc: PneumoViewError) -> str:
    """A per-file reason code for an error: its own ``code``, else the class name in kebab-case."""
    code = getattr(exc, "code", None)
    return str(code) if code else re.sub(r"(?<!^)(?=[A-Z])", "-", type(exc).__name__).lower()


# --------------------------------------------------------------------------- parent side
def worker_command() -> list[str]:
    """How to start the child: ``pneumoview gui --analysis-worker`` (frozen app or checkout)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "gui", "--analysis-worker"]
    return [sys.executable, "-m", "pneumoview", "gui", "--analysis-worker"]


class AnalysisClient:
    """The parent's handle on the child process (started lazily, kept warm between analyses).

    ``environment()`` gives the child's environment (default: this process's, unbuffered).
    Thread-safe for one request at a time; :meth:`cancel` may be called from any thread.
    """

    def __init__(
        self, command: list[str] | None = None, environment: Callable[[], dict[str, str]] | None = None
    ) -> None:
        self.command = command or worker_command()
        self._environment = environment or (lambda: {**os.environ, "PYTHONUNBUFFERED": "1"})
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.loaded: dict[str, Any] | None = None  # the last ``loaded`` event
        self.loaded_spec: EngineSpec | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def _ensure(self) -> subprocess.Popen[str]:
        if not self.running:
            self.loaded = None
            self.loaded_spec = None
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                bufsize=1,
                env=self._environment(),
            )
        assert self._process is not None
        return self._process

    def _send(self, request: dict[str, Any]) -> None:
        process = self._ensure()
        assert process.stdin is not None
        with self._write_lock:
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()

    def _events(self, process: subprocess.Popen[str], spec: EngineSpec) -> Iterator[dict[str, Any]]:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                event = decode_event(line)
            except (ValueError, KeyError, TypeError) as exc:
                event = {
                    "event": "error",
                    "type": "PneumoViewError",
                    "reason": f"the analysis process sent a malformed message: {exc}",
                }
            if event is None:
                continue
            if event.get("event") == "loaded":
                self.loaded, self.loaded_spec = event, spec
            yield event
            if event.get("event") in FINAL_EVENTS:
                return
        code = process.wait()
        yield {
            "event": "error",
            "type": "PneumoViewError",
            "reason": f"the analysis process stopped unexpectedly (exit code {code})",
        }

    def request(
        self, spec: EngineSpec, request: dict[str, Any], on_event: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Send one request and pass every event to ``on_event``; returns the final event."""
        with self._lock:
            self._send({**request, "engine": asdict(spec)})
            assert self._process is not None
            last: dict[str, Any] = {}
            for event in self._events(self._process, spec):
                on_event(event)
                last = event
            return last

    def prewarm(
        self, spec: EngineSpec | None = None, on_event: Callable[[dict[str, Any]], None] | None = None
    ) -> threading.Thread | None:
        """Start the child now (it imports the model libraries while idle); with ``spec``, also load
        that model in the background (a ``validate`` request on a daemon thread), so that the first
        analysis finds it loaded. A request made meanwhile waits for the load (one request at a
        time) and then runs at once. Events (``loading``, ``loaded``, ``done`` or ``error``) go to
        ``on_event``; a failed load is only reported there: the analysis that needs the model
        reports it again. Returns the loading thread (None without ``spec``)."""
        with self._lock:
            self._ensure()  # started here, not in the thread: ``running`` is True on return
        if spec is None:
            return None
        ignore: Callable[[dict[str, Any]], None] = lambda _event: None  # noqa: E731
        thread = threading.Thread(
            target=self._prewarm_load, args=(spec, on_event or ignore), name="analysis-prewarm", daemon=True
        )
        thread.start()
        return thread

    def _prewarm_load(self, spec: EngineSpec, on_event: Callable[[dict[str, Any]], None]) -> None:
        try:
            self.request(spec, validate_request(spec), on_event)
        except (OSError, ValueError) as exc:  # the child could not start or its pipe closed
            on_event({"event": "error", "type": "PneumoViewError", "reason": f"prewarm failed: {exc}"})

    def cancel(self) -> None:
        if self.running:
            try:
                self._send({"cmd": "cancel"})
            except (OSError, ValueError):
                pass  # the process is already gone: nothing to cancel

    def close(self, timeout: float = 5.0) -> None:
        """Ask the child to quit; kill it if it does not within ``timeout`` seconds."""
        process, self._process = self._process, None
        self.loaded, self.loaded_spec = None, None
        if process is None or process.poll() is not None:
            return
        try:
            assert process.stdin is not None
            process.stdin.write(json.dumps({"cmd": "cancel"}) + "\n" + json.dumps({"cmd": "quit"}) + "\n")
            process.stdin.close()
            process.wait(timeout)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
