"""The analysis worker process's side of :mod:`pneumoview.service.analysis` (the only part that imports torch).

The child reads requests and answers with events as the schema in :mod:`pneumoview.service.analysis`
says; it keeps its model loaded between requests. :func:`predict_results` and
:func:`engine_provenance` are the one place a model output becomes a
:class:`~pneumoview.results.ImageResult` (``pneumoview analyze`` calls them in its own process).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pneumoview import __version__
from pneumoview.errors import CancelledError, PneumoViewError
from pneumoview.results import FAILED, ImageIdentity, ImageResult, Provenance, analysed, failed
from pneumoview.service.analysis import EngineSpec, LoadedModel, WorkItem, reason_code

if TYPE_CHECKING:
    from pneumoview.dicom.quality import QualityThresholds
    from pneumoview.inference.engine import InferenceEngine
    from pneumoview.preprocess import ModelInput


def engine_provenance(engine: InferenceEngine, threshold: float, *, operating_point_id: str = "") -> Provenance:
    """The provenance every result of ``engine`` at ``threshold`` shares (the crop box is per image)."""
    manifest = engine.manifest
    plan = engine.plan
    return Provenance(
        bundle_id=str(manifest.model_id),
        bundle_name=engine.model_name,
        bundle_fingerprint=str(getattr(manifest, "weights_sha256", "") or ""),
        base_fingerprints={str(k): str(v) for k, v in (manifest.base_fingerprints or {}).items()},
        operating_point_id=operating_point_id,
        threshold=float(threshold),
        software_version=__version__,
        preprocessing=json.loads(json.dumps(dict(manifest.preprocessing))),
        device=str(plan.device),
        plan=plan.summary() if hasattr(plan, "summary") else str(plan),
    )


def predict_results(
    engine: InferenceEngine,
    batch: Sequence[tuple[ImageIdentity, ModelInput]],
    provenance: Provenance,
    quality: QualityThresholds | None = None,
) -> list[ImageResult]:
    """The image-quality gate (:func:`pneumoview.dicom.quality.gate`, at ``quality``'s thresholds), then one
    forward pass over prepared images -> one result each, in order (non-finite -> failure). An image below
    the gate is analysed all the same; its result carries the gate's codes and is marked."""
    from dataclasses import replace

    from pneumoview.dicom.quality import gate

    if not batch:
        return []
    reports = [gate(model_input, identity.path, quality) for identity, model_input in batch]
    probabilities = engine.probabilities([model_input.crop for _identity, model_input in batch])
    out = []
    for (identity, model_input), probability, report in zip(batch, probabilities, reports, strict=True):
        box = model_input.box
        prov = replace(
            provenance, crop_box=(int(box.x0), int(box.y0), int(box.x1), int(box.y1)), crop_fallback=bool(box.fallback)
        )
        out.append(
            analysed(
                identity,
                float(probability),
                class_names=engine.class_names,
                demo=bool(engine.demo),
                provenance=prov,
                notes=tuple(model_input.notes),
                quality_codes=report.codes,
                below_quality_gate=report.below_gate,
            )
        )
    return out


#: Errors of image preparation that end one image's analysis, not the run (decoders and the lung
#: localiser raise these on odd images, e.g. ValueError for a 1-pixel-high picture).
PREPARE_ERRORS = (PneumoViewError, ValueError, OSError, MemoryError, RuntimeError)


def prepare_failure(identity: ImageIdentity, exc: BaseException, provenance: Provenance, demo: bool) -> ImageResult:
    """The result of an image that could not be prepared for the model (a per-image failure)."""
    if isinstance(exc, PneumoViewError):
        return failed(identity, reason_code(exc), exc.reason, status=FAILED, provenance=provenance, demo=demo)
    if isinstance(exc, MemoryError):
        return failed(
            identity, "out-of-memory", "not enough memory to prepare this image", provenance=provenance, demo=demo
        )
    return failed(identity, "preprocessing-error", f"{type(exc).__name__}: {exc}", provenance=provenance, demo=demo)


# --------------------------------------------------------------------------- child side
class _Child:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.engine: InferenceEngine | None = None
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
        self.requests.put(None)  # parent went away

    def load(self, spec: EngineSpec) -> InferenceEngine:
        if self.engine is not None and self.spec == spec:
            return self.engine
        self.send("loading", engine=spec.describe())
        import torch

        from pneumoview.inference.engine import InferenceEngine

        threads = os.environ.get("PNEUMOVIEW_ANALYSIS_THREADS")
        if threads:
            torch.set_num_threads(max(1, int(threads)))
        self.engine = None
        quantisation = spec.quantisation or _settings_value("quantisation", "auto")
        if spec.demo:  # the demo, or a bundle trained on its base weights
            engine = InferenceEngine.load_demo(
                bundle=spec.bundle or None, quantisation="none" if quantisation == "auto" else quantisation
            )
        else:
            engine = InferenceEngine.load(
                Path(spec.bundle),
                clip_path=Path(spec.clip_path),
                llama_path=Path(spec.llama_path),
                device=spec.device,
                precision=spec.precision,
                quantisation=quantisation,
            )
        self.engine, self.spec = engine, spec
        manifest, plan = engine.manifest, engine.plan
        loaded = LoadedModel(
            model_name=engine.model_name,
            model_id=engine.model_id,
            demo=bool(engine.demo),
            model_version=str(getattr(manifest, "model_id", "")),
            created=str(getattr(manifest, "created", "")),
            fingerprint=str(getattr(manifest, "weights_sha256", "")),
            device=str(plan.device),
            plan=plan.describe() if hasattr(plan, "describe") else str(plan),
            class_names=list(engine.class_names),
        )
        self.send("loaded", **asdict(loaded))
        return engine

    def analyse(self, request: dict[str, Any]) -> None:
        self.cancel.clear()
        engine = self.load(EngineSpec(**request["engine"]))
        items = [WorkItem(**item) for item in request["items"]]
        provenance = engine_provenance(
            engine, float(request.get("threshold", 0.5)), operating_point_id=str(request.get("operating_point_id", ""))
        )
        quality = quality_thresholds(request.get("quality"))
        batch_size = max(1, int(request.get("batch_size", 8)))
        total, done = len(items), 0
        for start in range(0, total, batch_size):
            if self.cancel.is_set():
                raise CancelledError("analysis cancelled")
            chunk = items[start : start + batch_size]
            ready: list[tuple[WorkItem, Any]] = []
            outcome: dict[str, ImageResult] = {}
            for item in chunk:
                try:
                    ready.append((item, engine.prepare(Path(item.path))))
                except PREPARE_ERRORS as exc:
                    outcome[item.key] = prepare_failure(item.identity, exc, provenance, bool(engine.demo))
            predicted = predict_results(engine, [(item.identity, mi) for item, mi in ready], provenance, quality)
            outcome.update({item.key: result for (item, _mi), result in zip(ready, predicted)})
            self.send("results", items=[{"key": item.key, "result": outcome[item.key].to_dict()} for item in chunk])
            done += len(chunk)
            self.send("progress", done=done, total=total)
        self.send("done", count=done)

    def heatmap(self, request: dict[str, Any]) -> None:
        """One image's model-attention map (never a lesion finding), then ``done``."""
        from pneumoview.inference.heatmap import compute_heatmap, encode_map

        engine = self.load(EngineSpec(**request["engine"]))
        model_input = engine.prepare(Path(request["path"]))
        heat = compute_heatmap(engine, model_input.crop)
        box = model_input.box
        self.send(
            "heatmap",
            key=request["key"],
            size=int(heat.crop_map.shape[0]),
            crop_map=encode_map(heat.crop_map),
            box=[int(box.x0), int(box.y0), int(box.x1), int(box.y1)],
            fallback=bool(box.fallback),
            image_shape=list(model_input.image_shape),
            probability=heat.probability,
            label=heat.label,
            method=heat.method,
            demo=bool(engine.demo),
        )
        self.send("done", count=1)

    def next_request(self) -> dict[str, Any] | None:
        """The next request; a loaded model is released after the settings' idle minutes without one."""
        minutes = _settings_value("model_idle_minutes", 30) if self.engine is not None else 0
        try:
            return self.requests.get(timeout=float(minutes) * 60 if minutes else None)
        except queue.Empty:
            self.engine = self.spec = None  # released; the next request loads it again
            import gc

            gc.collect()
            print(f"analysis worker: model released after {minutes} idle minutes", file=sys.stderr, flush=True)
            return self.next_request()

    def serve(self) -> int:
        threading.Thread(target=self.read_stdin, name="stdin-reader", daemon=True).start()
        threading.Thread(target=_prewarm_imports, name="prewarm", daemon=True).start()
        while True:
            request = self.next_request()
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
                self.send(
                    "error",
                    type=type(exc).__name__,
                    reason=exc.reason,
                    path=str(exc.path) if exc.path else None,
                    code=getattr(exc, "code", None),
                )
            except MemoryError:
                self.send("error", type="InsufficientMemoryError", reason="not enough memory")
            except Exception as exc:  # noqa: BLE001 - report to the GUI, keep serving
                import traceback

                traceback.print_exc()
                self.send("error", type="PneumoViewError", reason=f"{type(exc).__name__}: {exc}")


def _settings_value(name: str, default: Any) -> Any:
    """One field of the user's settings (the default when they cannot be read)."""
    from pneumoview.settings import load_settings

    try:
        return getattr(load_settings(), name)
    except PneumoViewError:
        return default


def quality_thresholds(overrides: dict[str, Any] | None) -> QualityThresholds:
    """The gate's thresholds: the request's ``quality`` overrides (the app's settings), else the settings'."""
    from pneumoview.dicom.quality import thresholds_from

    try:
        return thresholds_from(_settings_value("quality", {}) if overrides is None else overrides)
    except (TypeError, ValueError) as exc:
        raise PneumoViewError(f"quality thresholds: {exc}") from exc


def _prewarm_imports() -> None:
    """Import torch, open_clip and transformers' LLaMA while the worker waits for its first request:
    these imports, not the weights, are most of a small model's load time (~5-10 s on 2 cores)."""
    try:
        import open_clip.model  # noqa: F401
        import transformers.models.llama.modeling_llama  # noqa: F401

        import pneumoview.inference.engine  # noqa: F401
    except ImportError:
        pass  # the request that needs them reports it


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve())
