"""InferenceEngine: one loaded PneumoLLM (bundle + base weights) that turns lung crops into predictions.

Typical use::

    engine = InferenceEngine.load(bundle_dir, clip_path=..., llama_path=..., device="auto")
    predictions = engine.predict([model_input.crop for model_input in inputs], threshold=0.5)

Loading: the bundle's manifest says which architecture and which base weights (fingerprints) it
needs; the plan (:mod:`pneumoview.inference.plans`) says where and in which dtypes it runs; the
base weights are read straight into those dtypes (no fp32 copy), checked against the bundle's
fingerprints before the model is assembled on the meta device and filled with ``assign=True``.

Running: ``predict`` batches the crops, holds a lock around each forward pass (one model instance
is shared safely by the GUI's worker threads), runs under ``torch.inference_mode``, reports
``progress(done, total)`` and checks ``cancel()`` between batches (raising
:class:`~pneumoview.errors.CancelledError`).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pneumoview.errors import (
    BundleError,
    CancelledError,
    ConfigError,
    WeightsError,
)
from pneumoview.inference import prepared
from pneumoview.inference import weights as _weights
from pneumoview.inference.bundle import Manifest, check_fingerprints, load_bundle
from pneumoview.inference.config import PneumoLLMConfig
from pneumoview.inference.plans import Plan, choose_plan, quantise_decoder_linears
from pneumoview.labels import display_label
from pneumoview.preprocess import MODEL_SIZE, ModelInput, prepare

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one crop.

    ``probability``: P(pneumoconiosis) = softmax(logits)[0]. ``positive``: probability >= threshold.
    ``class_name``: the class at the threshold (manifest's class_names[0] or [1]). ``label``: what to
    show -- :func:`pneumoview.labels.display_label` of the class name (the DEMO mark for a demo model).
    """

    probability: float
    label: str
    threshold: float
    model_id: str
    model_name: str
    demo: bool
    positive: bool
    class_name: str


@dataclass
class LoadReport:
    """What loading found and decided, for logs and the settings dialog."""

    plan: Plan
    clip_format: str = ""
    llama_format: str = ""
    fingerprints: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: Seconds spent in each step of the load (the progress messages, counts in brackets dropped).
    phases: dict[str, float] = field(default_factory=dict)


class _PhaseClock:
    """Times the steps of a load: each progress message starts a step, the next one ends it."""

    def __init__(self, report: LoadReport, say: Callable[[str], None]) -> None:
        self.report, self.forward = report, say
        self.step, self.since = "reading the model bundle", time.perf_counter()

    def __call__(self, message: str) -> None:
        self.stop()
        self.step = message.split(" (", 1)[0]
        self.forward(message)

    def stop(self) -> None:
        now = time.perf_counter()
        self.report.phases[self.step] = self.report.phases.get(self.step, 0.0) + now - self.since
        self.since = now


def _check_clip_fits(config: PneumoLLMConfig, shape: dict[str, int], path: Path) -> None:
    v = config.vision
    want = {"width": v.width, "layers": v.layers, "patch_size": v.patch_size, "image_size": v.image_size}
    got = {k: shape.get(k) for k in want}
    if got != want:
        raise WeightsError(
            f"this CLIP is not the tower architecture {config.name!r} needs: width {got['width']}, "
            f"{got['layers']} blocks, patch {got['patch_size']}, image {got['image_size']} "
            f"(needs width {v.width}, {v.layers} blocks, patch {v.patch_size}, image {v.image_size})",
            path=path,
        )


def _check_llama_fits(config: PneumoLLMConfig, hf: dict, path: Path) -> list[str]:
    d = config.decoder
    want = {
        "hidden_size": d.hidden_size,
        "num_hidden_layers": d.layers,
        "num_attention_heads": d.heads,
        "intermediate_size": d.intermediate_size,
    }
    got = {k: hf.get(k) for k in want}
    kv = hf.get("num_key_value_heads") or hf.get("num_attention_heads")
    if got != want or kv != d.kv_heads:
        raise WeightsError(
            f"this LLaMA is not the decoder architecture {config.name!r} needs: hidden {got['hidden_size']}, "
            f"{got['num_hidden_layers']} layers, {got['num_attention_heads']} heads, MLP {got['intermediate_size']} "
            f"(needs {d.hidden_size}, {d.layers}, {d.heads}, {d.intermediate_size}: LLaMA-7B for the full model)",
            path=path,
        )
    notes = []
    eps = hf.get("rms_norm_eps")
    if eps is not None and not math.isclose(float(eps), d.rms_norm_eps, rel_tol=1e-3):
        notes.append(f"LLaMA rms_norm_eps {eps} differs from the architecture's {d.rms_norm_eps} (architecture's used)")
    theta = hf.get("rope_theta") or (hf.get("rope_parameters") or {}).get("rope_theta")
    if theta is not None and not math.isclose(float(theta), d.rope_theta, rel_tol=1e-6):
        notes.append(f"LLaMA rope_theta {theta} differs from the architecture's {d.rope_theta} (architecture's used)")
    return notes


class InferenceEngine:
    """A loaded PneumoLLM, ready to ``predict``. Build with :meth:`load` or :meth:`load_demo`; ``demo`` is True when every result is marked DEMO."""

    def __init__(
        self,
        model: torch.nn.Module,
        manifest: Manifest,
        plan: Plan,
        *,
        demo: bool = False,
        report: LoadReport | None = None,
    ) -> None:
        self.model = model.eval()
        self.manifest = manifest
        self.plan = plan
        self.demo = bool(demo or manifest.demo)
        self.report = report or LoadReport(plan=plan)
        self.config = manifest.model_config()
        self._lock = threading.Lock()
        self._device = torch.device(plan.device)

    # --- identity --------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    @property
    def model_name(self) -> str:
        name = self.manifest.name or self.manifest.architecture
        if self.demo and "DEMO" not in name:
            name = f"DEMO {name}"
        return name

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    def prepare(self, path: str | Path) -> ModelInput:
        """File -> the 224x224 lung crop this bundle was trained on (its image size and margin)."""
        preprocessing = self.manifest.preprocessing
        return prepare(path, size=int(preprocessing.get("image_size", MODEL_SIZE)), margin=preprocessing.get("margin"))

    # --- loading ---------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        bundle: str | Path,
        *,
        clip_path: str | Path | None,
        llama_path: str | Path | None,
        device: str = "auto",
        precision: str = "auto",
        quantisation: str = "auto",
        batch_size: int = 8,
        allow_unverified_clip: bool = False,
        progress: Callable[[str], None] | None = None,
        prepared_cache: bool = True,
    ) -> InferenceEngine:
        """Load ``bundle`` onto the base weights at ``clip_path`` / ``llama_path``.

        ``progress(message)`` is called at each step (and per LLaMA shard / layer), for a status line.
        ``prepared_cache``: on the CPU, map converted / quantised base weights from the user cache
        folder when they are there, and write them there when not (:mod:`pneumoview.inference.prepared`).

        Raises :class:`BundleError` (bundle missing/corrupt), :class:`WeightsError` (base weights
        missing, unreadable, of another architecture), :class:`FingerprintMismatchError` (other
        base weights than the bundle was trained on), :class:`ConfigError` /
        :class:`InsufficientMemoryError` (no workable device plan).
        """
        start = time.perf_counter()
        say = progress or (lambda _msg: None)
        bundle = Path(bundle)
        if clip_path is None or str(clip_path) == "":
            raise WeightsError("no CLIP ViT-L/14 weights chosen (set the CLIP file in settings or pass --clip)")
        if llama_path is None or str(llama_path) == "":
            raise WeightsError("no LLaMA weights chosen (set the LLaMA folder in settings or pass --llama)")
        clip_path, llama_path = Path(clip_path), Path(llama_path)
        for path, what in ((clip_path, "CLIP weights"), (llama_path, "LLaMA weights")):
            if not path.exists():
                raise WeightsError(f"{what} not found", path=path)

        say("reading the model bundle")
        bundle_start = time.perf_counter()
        manifest, trained = load_bundle(bundle)
        config = manifest.model_config()
        plan = choose_plan(config, device=device, precision=precision, quantisation=quantisation, batch_size=batch_size)
        report = LoadReport(plan=plan)
        clock = _PhaseClock(report, say)
        clock.since = bundle_start
        say = clock

        visual_state, decoder_state, base_demo = _read_base_weights(
            config,
            manifest,
            plan,
            clip_path,
            llama_path,
            allow_unverified_clip=allow_unverified_clip,
            say=say,
            report=report,
            cache=prepared_cache,
        )
        if not manifest.base_fingerprints:
            report.notes.append("the bundle records no base-weight fingerprints (imported?): not verified")
        demo = bool(manifest.demo or base_demo)
        if demo and not manifest.demo:
            report.notes.append("base weights are the random demo weights: every result is marked DEMO")

        say(f"assembling the model ({plan.describe()})")
        model = _assemble(config, plan, visual_state, decoder_state, trained)
        del visual_state, decoder_state, trained
        if plan.quantisation == "int8" and plan.device_type == "cpu":
            from pneumoview.inference.quant_cpu import int8_kernel_description

            report.notes.append(int8_kernel_description())
        clock.stop()
        report.seconds = time.perf_counter() - start
        return cls(model, manifest, plan, demo=demo, report=report)

    @classmethod
    def load_demo(
        cls,
        directory: str | Path | None = None,
        *,
        device: str = "cpu",
        precision: str = "auto",
        bundle: str | Path | None = None,
        quantisation: str = "none",
        prepared_cache: bool = True,
    ) -> InferenceEngine:
        """The demo model (tiny, random weights, every output marked DEMO), generated on first use.

        ``bundle``: another bundle trained on the demo base weights (``train --demo``) to run on
        them instead of the demo's own; it is validated and fingerprint-checked like any other.
        ``quantisation`` defaults to none (the tiny model needs no memory saving); any value of the
        vocabulary works, so the app's settings apply to the demo model as to a real one.
        """
        from pneumoview.inference.demo import ensure_demo_model

        paths = ensure_demo_model(directory)
        engine = cls.load(
            bundle if bundle else paths.bundle,
            clip_path=paths.clip,
            llama_path=paths.llama,
            device=device,
            precision=precision,
            quantisation=quantisation,
            prepared_cache=prepared_cache,
        )
        if not engine.demo:  # demo base weights always mark their results; never let that slip
            raise BundleError("the demo bundle is not marked as a demo", path=bundle or paths.bundle)
        return engine

    @classmethod
    def random(cls, config: PneumoLLMConfig, plan: Plan, *, seed: int = 0) -> InferenceEngine:
        """An engine with *random* base weights in the plan's dtypes (benchmarks, memory checks).

        Each base tensor is drawn from its own generator (seeded by ``seed`` and its name), so every
        plan of one config gets the same weights (bf16 and int8 can be compared); tensors are made
        one at a time in their final dtype, and a CPU-quantised plan quantises each decoder linear as
        it is drawn (the full bf16 decoder never exists). Marked demo: its outputs mean nothing.
        """
        from pneumoview.inference.bundle import Manifest
        from pneumoview.inference.model import build_model

        shapes = build_model(config, device="meta")
        transform = None
        if plan.quantisation and plan.device_type == "cpu":
            from pneumoview.inference.quant_cpu import state_transform

            transform = state_transform(plan.quantisation, plan.decoder_dtype)
        on = "cpu" if plan.quantisation else plan.device

        def draw(name: str, like: torch.Tensor, dtype: torch.dtype, device: str) -> torch.Tensor:
            return cls.random_tensor(name, like, dtype, device, seed=seed)

        with torch.no_grad():
            visual = {k: draw(k, v, plan.vision_dtype, plan.device) for k, v in shapes.visual.state_dict().items()}
            decoder: dict[str, torch.Tensor] = {}
            for k, v in shapes.decoder.state_dict().items():
                tensor = draw(k, v, plan.decoder_dtype, on)
                decoder.update(transform(k, tensor) if transform else {k: tensor})
                del tensor
        del shapes
        with torch.random.fork_rng(devices=[]):  # fresh trainables from the seed too: every plan gets the same
            torch.manual_seed(seed)
            model = _assemble(config, plan, visual, decoder, None)
        manifest = Manifest.create(
            config,
            base_fingerprints={},
            name=f"random {config.name} (benchmark only)",
            demo=True,
            model_id=f"random-{config.name}",
        )
        return cls(model, manifest, plan, demo=True)

    @staticmethod
    def random_tensor(
        name: str, like: torch.Tensor, dtype: torch.dtype, device: str | torch.device = "cpu", *, seed: int = 0
    ) -> torch.Tensor:
        """The random base tensor ``name`` of :meth:`random`: norms 1, biases 0, else N(0, 0.02) from a
        generator seeded by ``seed`` and the name (the same tensor whatever the plan or the order)."""
        import zlib

        out = torch.empty(like.shape, dtype=dtype, device=device)
        if like.ndim == 1 and name.endswith("weight"):  # norms
            return out.fill_(1.0)
        if name.endswith("bias"):
            return out.zero_()
        generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        return out.normal_(0.0, 0.02, generator=generator)

    # --- prediction ------------------------------------------------------------------------
    def _stack(self, crops: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        if isinstance(crops, np.ndarray):
            return crops if crops.ndim == 3 else crops[None]
        if not len(crops):
            return np.zeros((0, 1, 1), np.float32)
        return np.stack([np.asarray(c) for c in crops])

    def _prepare(self, crops: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
        """Grey crops -> normalised pixels [B, 3, S, S] on the plan's device.

        On the CPU this is :func:`pneumoview.inference.transforms.preprocess_tensor` (the function
        training uses); on a GPU the same arithmetic runs there after a grey-only copy (a third of
        the bytes), see :meth:`normalise_on`.
        """
        from pneumoview.inference.transforms import preprocess_tensor

        array = self._stack(crops)
        try:
            if self._device.type == "cpu":
                return preprocess_tensor(array, self.manifest.preprocessing)
            preprocess_tensor(array[:0], self.manifest.preprocessing)  # shape / dtype / statistics checks
            return self.normalise_on(array, self._device)
        except ValueError as exc:
            raise ConfigError(f"crops do not fit model {self.model_name!r}: {exc}") from exc

    def normalise_on(self, array: np.ndarray, device: torch.device | str) -> torch.Tensor:
        """``preprocess_tensor``'s arithmetic on ``device``: grey [B, S, S] -> (grey - mean[c]) / std[c]."""
        if not np.all(np.isfinite(array)):
            raise ValueError("crops contain NaN or infinite values")
        prep = self.manifest.preprocessing
        grey = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device, non_blocking=True)
        mean = torch.tensor(prep["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(prep["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        return (grey.unsqueeze(1).expand(-1, 3, -1, -1) - mean) / std

    def probabilities(self, crops: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """P(pneumoconiosis) for one batch of grey crops [B, S, S] in [0, 1] -> float64 [B] (one forward)."""
        pixels = self._prepare(crops)
        if pixels.shape[0] == 0:
            return np.zeros(0)
        with self._lock, torch.inference_mode():
            logits = self.model(pixels)
            probs = torch.softmax(logits.float(), dim=-1)[:, 0]
            return probs.double().cpu().numpy()

    def predict(
        self,
        crops: Sequence[np.ndarray] | np.ndarray,
        *,
        threshold: float = 0.5,
        batch_size: int | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> list[Prediction]:
        """Predictions for grey lung crops (float32 [S, S] in [0, 1], e.g. ``ModelInput.crop``), in order.

        Batches of ``batch_size`` (default: the plan's); ``progress(done, total)`` after each batch;
        ``cancel()`` is checked before each batch and raises :class:`CancelledError` when it returns True.
        """
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be within [0, 1], not {threshold}")
        n = len(crops)
        size = max(1, int(batch_size or self.plan.batch_size))
        out: list[Prediction] = []
        for start in range(0, n, size):
            if cancel is not None and cancel():
                raise CancelledError(f"analysis cancelled after {start} of {n} images")
            probs = self.probabilities(crops[start : start + size])
            out.extend(self._prediction(float(p), threshold) for p in probs)
            if progress is not None:
                progress(min(start + size, n), n)
        return out

    def _prediction(self, probability: float, threshold: float) -> Prediction:
        positive = probability >= threshold
        names = self.class_names
        class_name = names[0] if positive else names[1]
        label = display_label(class_name, demo=self.demo)
        return Prediction(
            probability=probability,
            label=label,
            threshold=threshold,
            model_id=self.model_id,
            model_name=self.model_name,
            demo=self.demo,
            positive=positive,
            class_name=class_name,
        )


def _needs_conversion(plan: Plan, clip: _weights.LoadedWeights, llama: _weights.LoadedWeights) -> bool:
    """True when the plan's tensors differ from the files' (cast, quantised, or not safetensors)."""
    stored_as_used = (
        clip.source_format == "safetensors"
        and clip.source_dtype == plan.vision_dtype
        and llama.source_format == "hf-folder"
        and llama.source_dtype == plan.decoder_dtype
        and any(Path(llama.path).glob("*.safetensors"))
    )
    return bool(plan.quantisation) or not stored_as_used


def _read_base_weights(
    config: PneumoLLMConfig,
    manifest: Manifest,
    plan: Plan,
    clip_path: Path,
    llama_path: Path,
    *,
    allow_unverified_clip: bool,
    say: Callable[[str], None],
    report: LoadReport,
    cache: bool,
) -> tuple[dict, dict, bool]:
    """(vision state, decoder state, demo) as the plan uses them, checked against the bundle.

    CPU plans whose tensors are converted (cast, quantised) come from the prepared-weights cache
    (:mod:`pneumoview.inference.prepared`) when it has them, else are read and written there.
    """
    entry = prepared.entry_path(clip_path, llama_path, plan) if cache and plan.device_type == "cpu" else None
    hit = prepared.load_entry(entry) if entry is not None else None
    if hit is not None:
        say("mapping prepared weights")
        info = hit.info
        _check_clip_fits(config, dict(info["clip_shape"]), clip_path)  # type: ignore[call-overload]
        report.notes += _check_llama_fits(config, dict(info["llama_config"]), llama_path)  # type: ignore[call-overload]
        fingerprints = {"clip": str(info["clip_fingerprint"]), "llama": str(info["llama_fingerprint"])}
        report.clip_format, report.llama_format = str(info["clip_format"]), str(info["llama_format"])
        notes = info.get("notes", [])
        assert isinstance(notes, list)  # the cache's JSON metadata holds the notes as a list
        report.notes += [str(n) for n in notes] + ["prepared weights mapped from the cache"]
        visual_state, decoder_state, demo = hit.visual, hit.decoder, bool(info.get("demo"))
    streamed = None
    if hit is None and entry is not None and plan.quantisation:  # written as it is read, then mapped
        streamed = _stream_into_cache(
            config, manifest, plan, clip_path, llama_path, entry,
            allow_unverified_clip=allow_unverified_clip, say=say, report=report,
        )  # fmt: skip
    if streamed is not None:
        info = streamed.info
        fingerprints = {"clip": str(info["clip_fingerprint"]), "llama": str(info["llama_fingerprint"])}
        visual_state, decoder_state, demo = streamed.visual, streamed.decoder, bool(info.get("demo"))
    elif hit is None:
        visual_state, decoder_state, demo, info = _read_weight_files(
            config,
            manifest,
            plan,
            clip_path,
            llama_path,
            allow_unverified_clip=allow_unverified_clip,
            say=say,
            report=report,
        )
        fingerprints = {"clip": str(info["clip_fingerprint"]), "llama": str(info["llama_fingerprint"])}
        say("checking the weights are finite")
        _check_base_finite(visual_state, decoder_state, clip_path, llama_path)
        if entry is not None and info.pop("converted") and not plan.quantisation:
            say("saving prepared weights for the next start")
            if prepared.save_entry(entry, prepared.Prepared(visual_state, decoder_state, info)) is None:
                report.notes.append("the prepared-weights cache could not be written (next start converts again)")
    check_fingerprints(manifest, {"clip": fingerprints["clip"]}, path=clip_path, only=("clip",))
    check_fingerprints(manifest, fingerprints, path=llama_path)  # every recorded key, the one rule
    report.fingerprints = fingerprints
    return visual_state, decoder_state, demo


def _decoder_specs(config: PneumoLLMConfig, plan: Plan) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """Names, dtypes and shapes of the prepared decoder of a CPU quantised plan, from the architecture
    config alone (a meta build: no memory), so that its cache entry can be written as it streams."""
    from pneumoview.inference.llama_weights import _hf_decoder_key
    from pneumoview.inference.model import build_model
    from pneumoview.inference.quant_cpu import state_specs

    assert plan.quantisation and plan.decoder_dtype is not None
    specs_of = state_specs(plan.quantisation, plan.decoder_dtype)
    specs: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
    for name, tensor in build_model(config, device="meta").decoder.state_dict().items():
        if _hf_decoder_key(name) == name:
            specs.update(specs_of(name, tensor.dtype, tuple(tensor.shape)))
    return specs


def _stream_into_cache(
    config: PneumoLLMConfig,
    manifest: Manifest,
    plan: Plan,
    clip_path: Path,
    llama_path: Path,
    entry: Path,
    *,
    allow_unverified_clip: bool,
    say: Callable[[str], None],
    report: LoadReport,
) -> prepared.Prepared | None:
    """A CPU quantised plan's first start: each decoder tensor is quantised, checked finite and written
    straight into a new prepared-weights entry (:func:`pneumoview.inference.prepared.stream_entry`),
    then dropped with its source pages, so the whole quantised decoder is never in memory; the model
    is then mapped from the entry, as on a warm start. The entry becomes visible only once complete and
    checked. None (with a note) when the entry cannot be written: the caller reads into memory instead.
    A non-finite tensor raises WeightsError (and leaves no entry)."""
    from pneumoview.inference.fingerprints import fact_known, record_fact

    check = not fact_known("finite", [clip_path, llama_path])
    try:
        decoder_specs = _decoder_specs(config, plan)
        with contextlib.ExitStack() as stack:
            streams: list[prepared.EntryStream] = []

            def open_stream(visual: dict[str, torch.Tensor]) -> Callable[[str, torch.Tensor], None]:
                stream = stack.enter_context(
                    prepared.stream_entry(
                        entry, {k: (v.dtype, tuple(v.shape)) for k, v in visual.items()}, decoder_specs
                    )
                )
                if check:
                    check_finite(visual, "CLIP", clip_path)
                for name, tensor in visual.items():
                    stream.write_visual(name, tensor)
                streams.append(stream)

                def sink(name: str, tensor: torch.Tensor) -> None:
                    if check:
                        check_finite({name: tensor}, "LLaMA", llama_path)
                    stream.write_decoder(name, tensor)

                return sink

            visual, _decoder, _demo, info = _read_weight_files(
                config, manifest, plan, clip_path, llama_path, allow_unverified_clip=allow_unverified_clip,
                say=say, report=report, open_stream=open_stream,
            )  # fmt: skip
            del visual, _decoder
            info.pop("converted")
            streams[0].info = info
            say("saving prepared weights for the next start")
    except (OSError, ValueError) as exc:
        report.notes.append(f"the prepared-weights cache could not be written ({exc}); reading into memory instead")
        return None
    if check:
        record_fact("finite", [clip_path, llama_path])
    say("mapping prepared weights")
    hit = prepared.load_entry(entry)
    if hit is None:
        report.notes.append("the prepared-weights entry just written could not be read back; reading into memory")
    return hit


def check_finite(state: dict[str, torch.Tensor], what: str, path: Path) -> None:
    """WeightsError when a floating-point tensor holds NaN or infinity. Quantised states are checked
    through their float scales (a non-finite weight makes its row's / group's scale non-finite).

    One ``aminmax`` per tensor (NaN propagates to both, +inf is the max, -inf the min): no temporary
    the size of the tensor, ~1.6 s for a bf16 LLaMA-7B on 2 cores (``isfinite().all()``: ~30 s)."""

    def finite(t: torch.Tensor) -> bool:
        if not t.is_floating_point() or t.numel() == 0:
            return True
        low, high = torch.aminmax(t.reshape(-1))
        return bool(torch.isfinite(low)) and bool(torch.isfinite(high))

    bad = [k for k, v in state.items() if not finite(v)]
    if bad:
        raise WeightsError(f"{what} weights hold NaN or infinite values ({len(bad)} tensors, e.g. {bad[0]})", path=path)


def _check_base_finite(
    visual: dict[str, torch.Tensor], decoder: dict[str, torch.Tensor], clip_path: Path, llama_path: Path
) -> None:
    """Every base value finite: checked once per set of files (remembered by their identities, see
    :func:`pneumoview.inference.fingerprints.fact_known`); a prepared-cache entry is only ever
    written after this check, so a warm start needs neither."""
    from pneumoview.inference.fingerprints import fact_known, record_fact

    if fact_known("finite", [clip_path, llama_path]):
        return
    check_finite(visual, "CLIP", clip_path)
    check_finite(decoder, "LLaMA", llama_path)
    record_fact("finite", [clip_path, llama_path])


def _read_weight_files(
    config: PneumoLLMConfig,
    manifest: Manifest,
    plan: Plan,
    clip_path: Path,
    llama_path: Path,
    *,
    allow_unverified_clip: bool,
    say: Callable[[str], None],
    report: LoadReport,
    open_stream: Callable[[dict[str, torch.Tensor]], Callable[[str, torch.Tensor], None]] | None = None,
) -> tuple[dict, dict, bool, dict[str, object]]:
    """Read both base weights from their files into the plan's dtypes (CPU int8 / int4: quantised per
    tensor as read). Returns (vision state, decoder state, demo, what the cache records about them).

    ``open_stream(vision state)``, called once CLIP is read, returns a sink that takes each prepared
    decoder tensor as it is produced; the decoder state then holds meta tensors (shapes only)."""
    say("reading CLIP weights")
    # Straight onto the device, tensor by tensor (host memory never holds a whole tower); a
    # quantised decoder stays on the host until it is quantised layer by layer onto the GPU.
    clip = _weights.read_clip_visual(
        clip_path, dtype=plan.vision_dtype, allow_unverified=allow_unverified_clip, device=plan.device
    )
    _check_clip_fits(config, clip.config, clip_path)
    check_fingerprints(manifest, {"clip": clip.fingerprint}, path=clip_path, only=("clip",))  # before the LLaMA read
    llama_config = _weights.peek_llama_config(llama_path)
    report.notes += _check_llama_fits(config, llama_config, llama_path)
    say("reading LLaMA weights")
    transform = None
    if plan.quantisation and plan.device_type == "cpu":
        from pneumoview.inference.quant_cpu import state_transform

        transform = state_transform(plan.quantisation, plan.decoder_dtype)
    if open_stream is not None:
        assert transform is not None  # streaming is for CPU quantised plans
        transform = _streamed(transform, open_stream(clip.state))
    llama = _weights.read_llama_decoder(
        llama_path,
        dtype=plan.decoder_dtype,
        device="cpu" if plan.quantisation else plan.device,
        transform=transform,
        progress=lambda done, total: say(f"reading LLaMA weights ({done}/{total})"),
    )
    demo = bool(clip.demo or llama.demo)
    report.notes += clip.notes + llama.notes
    report.clip_format, report.llama_format = clip.source_format, llama.source_format
    info: dict[str, object] = {
        "clip_fingerprint": clip.fingerprint,
        "llama_fingerprint": llama.fingerprint,
        "clip_shape": clip.config,
        "llama_config": llama_config,
        "clip_format": clip.source_format,
        "llama_format": llama.source_format,
        "notes": clip.notes + llama.notes,
        "demo": demo,
        "converted": _needs_conversion(plan, clip, llama),
    }
    return clip.state, llama.state, demo, info


def _streamed(
    transform: Callable[[str, torch.Tensor], Mapping[str, torch.Tensor]], sink: Callable[[str, torch.Tensor], None]
) -> Callable[[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``transform`` whose entries go to ``sink`` and are replaced by meta tensors (no memory kept)."""

    def streamed(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        kept = {}
        for key, value in transform(name, tensor).items():
            sink(key, value)
            kept[key] = torch.empty(value.shape, dtype=value.dtype, device="meta")
        return kept

    return streamed


def _assemble(
    config: PneumoLLMConfig, plan: Plan, visual_state: dict, decoder_state: dict, trained: dict | None
) -> torch.nn.Module:
    """Meta build -> base weights assigned (no copy) -> quantise (CUDA) -> device -> trained tensors.

    CPU int8 / int4 plans get ``decoder_state`` already quantised (:mod:`pneumoview.inference.quant_cpu`):
    its linear layers are swapped for the quantised ones first, popping their entries from
    ``decoder_state``; the layers keep those tensors as they are (memory-mapped from the prepared
    cache on a warm start: nothing is copied or repacked).
    ``trained`` None: fresh trainables (random engines).
    """
    from pneumoview.inference.model import build_model, load_base_weights, load_trainable_state_dict, materialize

    model = build_model(config, device="meta")
    if plan.quantisation and plan.device_type == "cpu":
        from pneumoview.inference.quant_cpu import install_quantised_linears

        install_quantised_linears(model.decoder, decoder_state, plan.quantisation)  # pops: int8 freed as packed
    load_base_weights(model, visual_state, decoder_state)
    if plan.quantisation and plan.device_type != "cpu":
        quantise_decoder_linears(model.decoder, plan.quantisation, device=plan.device, compute_dtype=plan.decoder_dtype)
    materialize(model, plan.device)  # dtypes kept as loaded (vision / decoder may differ); rotary rebuilt
    if trained is not None:
        load_trainable_state_dict(model, trained)
    model.eval()
    return model
