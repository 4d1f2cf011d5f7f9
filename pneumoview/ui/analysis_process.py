"""Analysis in a child process: the GUI process never imports torch.

Why a process and not a thread: importing torch, building the model and some of its operators
hold Python's GIL for hundreds of milliseconds at a time, which freezes a GUI thread in the same
process (measured: up to ~0.5 s with the demo model on a 2-core CPU). In a child process the GUI
keeps its GIL to itself; a crash or out-of-memory in the model cannot take the review window
down; cancelling is a message; memory is handed back when the process ends.

This module is Qt-free. The child (``python -m pneumoview gui --analysis-worker``, or
``python -m pneumoview.ui.analysis_process``) reads one JSON request per line on stdin and
answers with JSON lines on stdout (anything else the libraries print goes to stderr):

requests
    ``{"cmd": "analyse", "engine": EngineSpec, "threshold": 0.5, "batch_size": 8,
    "items": [{"key": ..., "path": ...}, ...]}``; ``{"cmd": "validate", "engine": EngineSpec}``;
    ``{"cmd": "cancel"}`` (stops the running analysis after the current batch); ``{"cmd": "quit"}``;
    ``{"cmd": "heatmap", "engine": EngineSpec, "key": ..., "path": ...}`` (one image's attention map,
    :mod:`pneumoview.inference.heatmap`).
events
    ``loading``; ``loaded`` (model name / id / version / fingerprint / plan / device);
    ``results`` (one batch: key, probability, class_name, label, threshold, model_id, model_name,
    demo, lung box); ``problems`` (``[[key, reason], ...]``: images that could not be prepared);
    ``progress`` (done, total); ``done`` (count); ``cancelled``; ``error`` (type, reason, path);
    ``heatmap`` (key, size, crop_map as base64 uint8 levels, box, image_shape, probability, label, method).

:class:`AnalysisClient` is the parent's side (used from a worker thread of the GUI).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from pneumoview import errors
from pneumoview.errors import CancelledError, PneumoViewError


@dataclass(frozen=True)
class EngineSpec:
    """Which model to run: the demo model, or a bundle with the base weights (paths as text)."""

    kind: str                      # "demo" | "bundle"
    bundle: str = ""
    clip_path: str = ""
    llama_path: str = ""
    device: str = "auto"
    precision: str = "auto"

    @property
    def demo(self) -> bool:
        return self.kind == "demo"

    def describe(self) -> str:
        return "demo model" if self.demo else f"bundle {self.bundle}"


def error_from_event(event: dict[str, Any]) -> PneumoViewError:
    """Rebuild the child's PneumoViewError subclass (by name) from an ``error`` event."""
    cls = getattr(errors, str(event.get("type", "")), None)
    reason = str(event.get("reason", "analysis failed"))
    path = event.get("path") or None
    if cls is errors.UnsupportedImageError:
        return errors.UnsupportedImageError(str(event.get("code", "unsupported")), reason, path=path)
    if isinstance(cls, type) and issubclass(cls, PneumoViewError):
        return cls(reason, path=path)
    return PneumoViewError(reason, path=path)


# --------------------------------------------------------------------------- child side
class _Child:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.engine: Any = None
        self.spec: EngineSpec | None = None
        self.cancel = threading.Event()
        self.requests: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def send(self, event: str, **data: Any) -> None:
        self.out.write(json.dumps({"event": event, **data}) + "\n")
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
            engine = InferenceEngine.demo()
        else:
            engine = InferenceEngine.load(Path(spec.bundle), clip_path=Path(spec.clip_path),
                                          llama_path=Path(spec.llama_path), device=spec.device,
                                          precision=spec.precision)
        self.engine, self.spec = engine, spec
        manifest = engine.manifest
        plan = engine.plan
        self.send("loaded", model_name=engine.model_name, model_id=engine.model_id, demo=bool(engine.demo),
                  model_version=str(getattr(manifest, "model_id", "")), created=str(getattr(manifest, "created", "")),
                  fingerprint=str(getattr(manifest, "weights_sha256", "")), device=str(plan.device),
                  plan=plan.describe() if hasattr(plan, "describe") else str(plan))
        return engine

    def analyse(self, request: dict[str, Any]) -> None:
        self.cancel.clear()
        engine = self.load(EngineSpec(**request["engine"]))
        items = request["items"]
        threshold = float(request.get("threshold", 0.5))
        batch_size = max(1, int(request.get("batch_size", 8)))
        total, done = len(items), 0
        for start in range(0, total, batch_size):
            if self.cancel.is_set():
                raise CancelledError("analysis cancelled")
            crops, ready, problems = [], [], []
            for item in items[start:start + batch_size]:
                try:
                    model_input = engine.prepare(Path(item["path"]))
                except PneumoViewError as exc:
                    problems.append([item["key"], exc.reason])
                    continue
                crops.append(model_input.crop)
                ready.append((item["key"], model_input.box))
            if crops:
                predictions = engine.predict(crops, threshold=threshold, batch_size=batch_size,
                                             cancel=self.cancel.is_set)
                self.send("results", items=[{
                    "key": key, "probability": float(p.probability), "class_name": str(p.class_name),
                    "label": str(p.label), "threshold": float(p.threshold), "model_id": str(p.model_id),
                    "model_name": str(p.model_name), "demo": bool(p.demo),
                    "box": [int(box.x0), int(box.y0), int(box.x1), int(box.y1)], "fallback": bool(box.fallback),
                } for (key, box), p in zip(ready, predictions)])
            if problems:
                self.send("problems", items=problems)
            done += len(items[start:start + batch_size])
            self.send("progress", done=done, total=total)
        self.send("done", count=done)

    def heatmap(self, request: dict[str, Any]) -> None:
        """One image's model-attention map (never a lesion finding), then ``done``."""
        from pneumoview.inference.heatmap import compute_heatmap, encode_map

        engine = self.load(EngineSpec(**request["engine"]))
        model_input = engine.prepare(Path(request["path"]))
        heat = compute_heatmap(engine, model_input.crop)
        box = model_input.box
        self.send("heatmap", key=request["key"], size=int(heat.crop_map.shape[0]), crop_map=encode_map(heat.crop_map),
                  box=[int(box.x0), int(box.y0), int(box.x1), int(box.y1)], fallback=bool(box.fallback),
                  image_shape=list(model_input.image_shape), probability=heat.probability, label=heat.label,
                  method=heat.method, demo=bool(engine.demo))
        self.send("done", count=1)

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
                elif request.get("cmd") == "heatmap":
                    self.heatmap(request)
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


def child_environment() -> dict[str, str]:
    """The GUI's environment without the one-thread BLAS limits the GUI set for itself
    (:data:`pneumoview.ui.app.THREAD_ENV_SET_HERE`): the model wants its cores."""
    from pneumoview.ui.app import THREAD_ENV_SET_HERE

    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV_SET_HERE}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class AnalysisClient:
    """The GUI's handle on the child process (started lazily, kept warm between analyses).

    Thread-safe for one request at a time (the GUI runs one analysis task at a time);
    :meth:`cancel` may be called from any thread.
    """

    def __init__(self, command: list[str] | None = None) -> None:
        self.command = command or worker_command()
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
                bufsize=1, env=child_environment())
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
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "loaded":
                self.loaded, self.loaded_spec = event, spec
            yield event
            if event.get("event") in ("done", "cancelled", "error"):
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


def main() -> int:
    return serve()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
