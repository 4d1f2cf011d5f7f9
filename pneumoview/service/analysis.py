"""The analysis worker process and its message schema, shared by both sides (no Qt; torch only in the child).

Why a process: importing torch, building the model and some of its operators hold Python's GIL
for hundreds of milliseconds, which would freeze a GUI thread in the same process; a crash or
out-of-memory in the model cannot take the review window down; cancelling is a message; memory
is handed back when the process ends.

The child (``python -m pneumoview gui --analysis-worker``, or ``python -m pneumoview.service.analysis``)
reads one JSON request per line on stdin and answers with JSON event lines on stdout (anything
else the libraries print goes to stderr).

Requests (:func:`analyse_request`, :func:`validate_request`)
    ``{"cmd": "analyse", "engine": EngineSpec, "threshold": 0.5, "operating_point_id": "",
    "batch_size": 8, "items": [WorkItem, ...]}``; ``{"cmd": "validate", "engine": EngineSpec}``;
    ``{"cmd": "cancel"}`` (stops after the current batch); ``{"cmd": "quit"}``.
Events (:data:`EVENTS`, checked by :func:`decode_event`)
    ``loading``; ``loaded`` (:class:`LoadedModel` fields); ``results`` (``items``: one
    :class:`ResultItem` per image of the batch, ``{"key": ..., "result": ImageResult.to_dict()}``,
    failures included: an image that could not be prepared is a failed result with its reason code);
    ``progress`` (done, total); ``done`` (count); ``cancelled``; ``error`` (type, reason, path, code).

:func:`predict_results` (the engine's probabilities -> :class:`~pneumoview.results.ImageResult`,
non-finite outputs as failures) is the one place a model output becomes a result; ``pneumoview
analyze`` uses it too.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pneumoview import __version__, errors
from pneumoview.errors import CancelledError, PneumoViewError
from pneumoview.results import FAILED, ImageIdentity, ImageResult, Provenance, analysed, failed

if TYPE_CHECKING:  # the GUI process never imports torch
    from pneumoview.inference.engine import InferenceEngine
    from pneumoview.preprocess import ModelInput

#: Event names the child sends.
EVENTS = ("loading", "loaded", "results", "progress", "done", "cancelled", "error")
FINAL_EVENTS = ("done", "cancelled", "error")


# --------------------------------------------------------------------------- message schema
@dataclass(frozen=True)
class EngineSpec:
    """Which model to run: the demo model, or a bundle with the base weights (paths as text)."""

    kind: str                      # "demo" (bundle: "" = the demo's own) | "bundle"
    bundle: str = ""
    clip_path: str = ""
    llama_path: str = ""
    device: str = "auto"
    precision: str = "auto"

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


def analyse_request(spec: EngineSpec, items: Sequence[WorkItem], *, threshold: float, batch_size: int = 8,
                    operating_point_id: str = "") -> dict[str, Any]:
    return {"cmd": "analyse", "engine": asdict(spec), "threshold": float(threshold), "batch_size": int(batch_size),
            "operating_point_id": operating_point_id, "items": [asdict(i) for i in items]}


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


# --------------------------------------------------------------------------- model output -> results
def engine_provenance(engine: InferenceEngine, threshold: float, *, operating_point_id: str = "") -> Provenance:
    """The provenance every result of ``engine`` at ``threshold`` shares (the crop box is per image)."""
    manifest = engine.manifest
    plan = engine.plan
    return Provenance(
        bundle_id=str(manifest.model_id), bundle_name=engine.model_name,
        bundle_fingerprint=str(getattr(manifest, "weights_sha256", "") or ""),
        base_fingerprints={str(k): str(v) for k, v in (manifest.base_fingerprints or {}).items()},
        operating_point_id=operating_point_id, threshold=float(threshold), software_version=__version__,
        preprocessing=json.loads(json.dumps(dict(manifest.preprocessing))),
        device=str(plan.device), plan=plan.describe() if hasattr(plan, "describe") else str(plan))


def predict_results(engine: InferenceEngine, batch: Sequence[tuple[ImageIdentity, ModelInput]],
                    provenance: Provenance) -> list[ImageResult]:
    """One forward pass over prepared images -> one result each, in order (non-finite -> failure)."""
    from dataclasses import replace

    if not batch:
        return []
    probabilities = engine.probabilities([model_input.crop for _identity, model_input in batch])
    out = []
    for (identity, model_input), probability in zip(batch, probabilities, strict=True):
        box = model_input.box
        prov = replace(provenance, crop_box=(int(box.x0), int(box.y0), int(box.x1), int(box.y1)),
                       crop_fallback=bool(box.fallback))
        out.append(analysed(identity, float(probability), class_names=engine.class_names, demo=bool(engine.demo),
                            provenance=prov, notes=tuple(model_input.notes)))
    return out


#: Errors of image preparation that end one image's analysis, not the run (decoders and the lung
#: localiser raise these on odd images, e.g. ValueError for a 1-pixel-high picture).
PREPARE_ERRORS = (PneumoViewError, ValueError, OSError, MemoryError, RuntimeError)


def prepare_failure(identity: ImageIdentity, exc: BaseException, provenance: Provenance,
                    demo: bool) -> ImageResult:
    """The result of an image that could not be prepared for the model (a per-image failure)."""
    if isinstance(exc, PneumoViewError):
        return failed(identity, reason_code(exc), exc.reason, status=FAILED, provenance=provenance, demo=demo)
    if isinstance(exc, MemoryError):
        return failed(identity, "out-of-memory", "not enough memory to prepare this image", provenance=provenance,
                      demo=demo)
    return failed(identity, "preprocessing-error", f"{type(exc).__name__}: {exc}", provenance=provenance, demo=demo)


# --------------------------------------------------------------------------- child side
class _Child:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.engine: Any = None
        self.spec: EngineSpec | None = None
        self.cancel = threading.Event()
        self.requests: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def send(self, event: str, **data: Any) -> None:
        self.out.write(json.dumps({"event": event, **data}, allow_nan=False) + "\n")
        self.out.flush()

    def read_stdin(self) -> None:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                request = json.loads(line)
            except json.JSONDecodeError:
                continue
            if request.get("cmd") == "cancel":
                self.cancel.set()
            else:
                self.requests.put(request)
        self.requests.put(None)            # parent went away

    def load(self, spec: EngineSpec) -> Any:
        if self.engine is not None and self.spec == spec:
            return self.engine
        self.send("loading", engine=spec.describe())
        import torch

        from pneumoview.inference.engine import InferenceEngine

        threads = os.environ.get("PNEUMOVIEW_ANALYSIS_THREADS")
        if threads:
            torch.set_num_threads(max(1, int(threads)))
        self.engine = None
        if spec.demo:
            engine = InferenceEngine.demo(bundle=spec.bundle or None)  # the demo, or a bundle trained on its base
        else:
            engine = InferenceEngine.load(Path(spec.bundle), clip_path=Path(spec.clip_path),
                                          llama_path=Path(spec.llama_path), device=spec.device,
                                          precision=spec.precision)
        self.engine, self.spec = engine, spec
        manifest, plan = engine.manifest, engine.plan
        loaded = LoadedModel(
            model_name=engine.model_name, model_id=engine.model_id, demo=bool(engine.demo),
            model_version=str(getattr(manifest, "model_id", "")), created=str(getattr(manifest, "created", "")),
            fingerprint=str(getattr(manifest, "weights_sha256", "")), device=str(plan.device),
            plan=plan.describe() if hasattr(plan, "describe") else str(plan), class_names=list(engine.class_names))
        self.send("loaded", **asdict(loaded))
        return engine

    def analyse(self, request: dict[str, Any]) -> None:
        self.cancel.clear()
        engine = self.load(EngineSpec(**request["engine"]))
        items = [WorkItem(**item) for item in request["items"]]
        provenance = engine_provenance(engine, float(request.get("threshold", 0.5)),
                                       operating_point_id=str(request.get("operating_point_id", "")))
        batch_size = max(1, int(request.get("batch_size", 8)))
        total, done = len(items), 0
        for start in range(0, total, batch_size):
            if self.cancel.is_set():
                raise CancelledError("analysis cancelled")
            chunk = items[start:start + batch_size]
            ready: list[tuple[WorkItem, Any]] = []
            outcome: dict[str, ImageResult] = {}
            for item in chunk:
                try:
                    ready.append((item, engine.prepare(Path(item.path))))
                except PREPARE_ERRORS as exc:
                    outcome[item.key] = prepare_failure(item.identity, exc, provenance, bool(engine.demo))
            predicted = predict_results(engine, [(item.identity, mi) for item, mi in ready], provenance)
            outcome.update({item.key: result for (item, _mi), result in zip(ready, predicted)})
            self.send("results", items=[{"key": item.key, "result": outcome[item.key].to_dict()} for item in chunk])
            done += len(chunk)
            self.send("progress", done=done, total=total)
        self.send("done", count=done)

    def serve(self) -> int:
        threading.Thread(target=self.read_stdin, name="stdin-reader", daemon=True).start()
        while True:
            request = self.requests.get()
            if request is None or request.get("cmd") == "quit":
                return 0
            try:
                if request.get("cmd") == "validate":
                    self.load(EngineSpec(**request["engine"]))
                    self.send("done", count=0)
                elif request.get("cmd") == "analyse":
                    self.analyse(request)
                else:
                    self.send("error", type="PneumoViewError", reason=f"unknown request {request.get('cmd')!r}")
            except CancelledError:
                self.send("cancelled")
            except PneumoViewError as exc:
                self.send("error", type=type(exc).__name__, reason=exc.reason,
                          path=str(exc.path) if exc.path else None, code=getattr(exc, "code", None))
            except MemoryError:
                self.send("error", type="InsufficientMemoryError", reason="not enough memory")
            except Exception as exc:  # noqa: BLE001 - report to the GUI, keep serving
                import traceback
                traceback.print_exc()
                self.send("error", type="PneumoViewError", reason=f"{type(exc).__name__}: {exc}")


def lower_priority() -> None:
    """Analysis is background work: let the GUI process have the CPU first (nice +5 / below normal),
    and leave one core to the GUI on small machines (torch intra-op threads = cores - 1, one BLAS
    thread). Runs before numpy / torch are imported."""
    try:
        import psutil

        process = psutil.Process()
        if sys.platform == "win32":
            process.nice(psutil.BELOW_NORMAL_PRIORITY_CLASS)
        else:
            process.nice(min(19, process.nice() + 5))
    except (ImportError, OSError, AttributeError):
        pass  # best effort: priority is a courtesy, not a requirement
    cores = os.cpu_count() or 1
    if cores <= 4:
        os.environ.setdefault("PNEUMOVIEW_ANALYSIS_THREADS", str(max(1, cores - 1)))
        # numpy's OpenBLAS (lung localiser) would start a spinning thread per core: one is enough here.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def serve() -> int:
    """Child entry point: protocol on the real stdout, everything else printed goes to stderr."""
    lower_priority()
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return _Child(protocol).serve()


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

    def __init__(self, command: list[str] | None = None,
                 environment: Callable[[], dict[str, str]] | None = None) -> None:
        self.command = command or worker_command()
        self._environment = environment or (lambda: {**os.environ, "PYTHONUNBUFFERED": "1"})
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.loaded: dict[str, Any] | None = None    # the last ``loaded`` event
        self.loaded_spec: EngineSpec | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running else None

    def _ensure(self) -> subprocess.Popen[str]:
        if not self.running:
            self.loaded = None
            self.loaded_spec = None
            self._process = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8",
                bufsize=1, env=self._environment())
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
                event = {"event": "error", "type": "PneumoViewError",
                         "reason": f"the analysis process sent a malformed message: {exc}"}
            if event is None:
                continue
            if event.get("event") == "loaded":
                self.loaded, self.loaded_spec = event, spec
            yield event
            if event.get("event") in FINAL_EVENTS:
                return
        code = process.wait()
        yield {"event": "error", "type": "PneumoViewError",
               "reason": f"the analysis process stopped unexpectedly (exit code {code})"}

    def request(self, spec: EngineSpec, request: dict[str, Any],
                on_event: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Send one request and pass every event to ``on_event``; returns the final event."""
        with self._lock:
            self._send({**request, "engine": asdict(spec)})
            assert self._process is not None
            last: dict[str, Any] = {}
            for event in self._events(self._process, spec):
                on_event(event)
                last = event
            return last

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve())
