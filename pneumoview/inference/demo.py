"""The demo model: PneumoLLM's tiny architecture with random weights, so the app can be tried
before real weights exist. It is never confusable with a real model:

* its files are marked (``pneumoview_demo`` in the CLIP safetensors metadata and the LLaMA
  ``config.json``), its manifest has ``demo: true``, its name starts with ``DEMO`` and its id with
  ``demo-``;
* the engine marks every prediction made with it (or on its base weights) ``demo=True`` and
  marks the label with :data:`pneumoview.labels.DEMO_MARK` ("DEMO - not a diagnosis").

It is generated on demand, deterministically (fixed seed), into a cache folder:
``$PNEUMOVIEW_HOME/cache/demo-model`` or platformdirs' user cache dir. Layout::

    demo-model/
      clip-visual-demo.safetensors   open_clip CLIP state dict, visual.* only (tiny ViT)
      llama-demo/                    Hugging Face folder: config.json + model.safetensors (tiny LLaMA)
      bundle/                        manifest.json (demo: true) + weights.safetensors
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pneumoview.atomic import atomic_dir, clean_stale
from pneumoview.errors import BundleError, PneumoViewError
from pneumoview.labels import DEMO_MARK

__all__ = ["DEMO_MODEL_ID", "DEMO_SEED", "DemoPaths", "default_demo_dir", "ensure_demo_model"]

DEMO_SEED = 20240229
DEMO_VERSION = 1
DEMO_MODEL_ID = f"demo-pneumollm-tiny-v{DEMO_VERSION}"
DEMO_NAME = "DEMO pneumollm-tiny (random weights - not a diagnosis)"
CLIP_FILE = "clip-visual-demo.safetensors"
LLAMA_DIR = "llama-demo"
BUNDLE_DIR = "bundle"


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo model's three parts are (pass them to ``InferenceEngine.load``)."""

    root: Path
    clip: Path
    llama: Path
    bundle: Path

    @classmethod
    def under(cls, root: Path) -> DemoPaths:
        return cls(root=root, clip=root / CLIP_FILE, llama=root / LLAMA_DIR, bundle=root / BUNDLE_DIR)


def default_demo_dir() -> Path:
    """``$PNEUMOVIEW_HOME/cache/demo-model`` if set, else the user cache dir (platformdirs)."""
    from platformdirs import user_cache_dir

    from pneumoview.paths import APP_NAME, home_override

    home = home_override()
    base = home / "cache" if home else Path(user_cache_dir(APP_NAME, appauthor=False))
    return base / f"demo-model-v{DEMO_VERSION}"


def _is_complete(paths: DemoPaths) -> bool:
    from pneumoview.inference.bundle import read_manifest

    if not (
        paths.clip.is_file()
        and (paths.llama / "config.json").is_file()
        and (paths.llama / "model.safetensors").is_file()
    ):
        return False
    try:
        manifest = read_manifest(paths.bundle)
    except BundleError:
        return False
    return manifest.demo and manifest.model_id == DEMO_MODEL_ID


def _write(paths: DemoPaths) -> None:
    """Generate the tiny random model into ``paths`` (the folder exists and is empty)."""
    import torch
    from safetensors.torch import save_file

    from pneumoview.inference.bundle import Manifest, save_bundle
    from pneumoview.inference.config import TINY_CONFIG, hf_llama_config, load_config
    from pneumoview.inference.model import build_model, trainable_state_dict
    from pneumoview.inference.weights import DEMO_WEIGHTS_KEY, fingerprint_state

    config = load_config(TINY_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEMO_SEED)
        model = build_model(config, device="cpu", base_dtype=torch.float32)
        # Fresh adapters are the identity (zero D); give them small random weights so the demo
        # exercises every trained part, as a trained bundle would.
        with torch.no_grad():
            for name, tensor in model.named_parameters():
                if ".conv_D." in name:
                    tensor.normal_(0.0, 0.02)
        visual = {f"visual.{k}": v.contiguous() for k, v in model.visual.state_dict().items()}
        decoder = {k: v.contiguous() for k, v in model.decoder.state_dict().items()}
        trained = trainable_state_dict(model)

    save_file(visual, str(paths.clip), metadata={DEMO_WEIGHTS_KEY: "1", "format": "pt"})
    paths.llama.mkdir()
    hf_config = {**hf_llama_config(config.decoder, torch_dtype="float32"), DEMO_WEIGHTS_KEY: True}
    (paths.llama / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    save_file(
        {f"model.{k}": v for k, v in decoder.items()},
        str(paths.llama / "model.safetensors"),
        metadata={DEMO_WEIGHTS_KEY: "1", "format": "pt"},
    )
    fingerprints = {
        "clip": fingerprint_state({k[len("visual.") :]: v for k, v in visual.items()}),
        "llama": fingerprint_state(decoder),
    }
    manifest = Manifest.create(
        config,
        base_fingerprints=fingerprints,
        name=DEMO_NAME,
        demo=True,
        model_id=DEMO_MODEL_ID,
        training={"note": f"random weights (seed {DEMO_SEED}); {DEMO_MARK}", "demo": True},
    )
    save_bundle(paths.bundle, trained, manifest)


def ensure_demo_model(directory: str | os.PathLike[str] | None = None) -> DemoPaths:
    """The demo model's paths, generating it first if absent or incomplete.

    Built with :func:`pneumoview.atomic.atomic_dir` (a temporary sibling folder renamed into place),
    so a crash or a full disk never leaves half a model; leftovers of a killed run are removed
    first. A failed write raises PneumoViewError ``disk full: ...`` / ``cannot write ...``.
    """
    root = Path(directory) if directory is not None else default_demo_dir()
    paths = DemoPaths.under(root)
    if _is_complete(paths):
        return paths
    clean_stale(root.parent)
    try:
        with atomic_dir(root, replace=True) as staging:  # an incomplete earlier attempt is ours to replace
            _write(DemoPaths.under(staging.path))
    except BundleError as exc:  # save_bundle's write errors name the temporary folder: name the target
        full = exc.reason.startswith("disk full")
        raise PneumoViewError(f"disk full: {root}" if full else exc.reason) from exc
    except Exception as exc:
        from safetensors import SafetensorError

        from pneumoview.inference.bundle import write_failure_reason

        if not isinstance(exc, (OSError, SafetensorError)):
            raise
        if _is_complete(paths):  # another process finished first
            return paths
        raise PneumoViewError(write_failure_reason(exc, root)) from exc
    return paths
