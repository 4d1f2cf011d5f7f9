"""Which model the next analysis uses, resolved afresh each time it is asked (no Qt, no torch).

The facts live in two files that other processes may change while the app is open:

* the model registry's ``registry.json`` (:mod:`pneumoview.registry`): the active bundle, and
  whether the user chose the built-in demo model instead (``pneumoview models activate``, the
  model manager, the retraining wizard and *Use the Demo Model* all write it);
* the settings (:mod:`pneumoview.settings`): base-weight paths, device, precision, and an
  optional explicit bundle folder that wins over the registry's active bundle.

:func:`resolve_active_model` reads both and says what to load. The window calls it whenever an
analysis starts, so an activation made anywhere (another window, the CLI) is used by the very
next analysis, and a restarted app finds the same model.

A bundle whose manifest says ``demo: true`` (the demo model itself, or one trained on the demo
base weights with ``train --demo``) runs on the demo base weights; any other bundle needs the
CLIP and LLaMA paths from the settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pneumoview.errors import PneumoViewError
from pneumoview.settings import Settings

if TYPE_CHECKING:
    from pneumoview.registry import ModelRegistry

log = logging.getLogger(__name__)

DEMO = "demo"
BUNDLE = "bundle"


@dataclass(frozen=True)
class ActiveModel:
    """What to load. ``kind`` is ``"demo"`` (demo base weights; ``bundle`` None = the demo's own
    bundle) or ``"bundle"`` (``bundle`` on the settings' CLIP / LLaMA). ``missing`` says why it
    cannot run yet (empty when it can)."""

    kind: str
    bundle: Path | None = None
    clip_path: str = ""
    llama_path: str = ""
    registry_id: str | None = None
    name: str = ""
    missing: str = ""

    @property
    def demo(self) -> bool:
        return self.kind == DEMO

    @property
    def ready(self) -> bool:
        return not self.missing

    def describe(self) -> str:
        if self.kind == DEMO and self.bundle is None:
            return "the demo model (random weights: not a diagnosis)"
        what = self.name or (self.registry_id or str(self.bundle))
        return f"{what} (demo base weights: not a diagnosis)" if self.kind == DEMO else what


def _bundle_manifest(bundle: Path) -> dict:
    from pneumoview.inference.manifest import read_manifest_data

    return read_manifest_data(bundle)


def model_for_bundle(
    bundle: Path, settings: Settings, *, registry_id: str | None = None, manifest: dict | None = None
) -> ActiveModel:
    """How to run ``bundle``: on the demo base weights when its manifest says ``demo: true``,
    otherwise on the settings' CLIP / LLaMA (``missing`` says when they are not chosen)."""
    if manifest is None:
        try:
            manifest = _bundle_manifest(bundle)
        except PneumoViewError as exc:
            return ActiveModel(BUNDLE, bundle=bundle, name=bundle.name, missing=exc.message)
    name = str(manifest.get("name") or manifest.get("model_id") or bundle.name)
    if manifest.get("demo") is True:
        return ActiveModel(DEMO, bundle=bundle, registry_id=registry_id, name=name)
    missing = ""
    if not (settings.clip_path and settings.llama_path):
        missing = (
            f"the model {name!r} needs the CLIP ViT-L/14 and LLaMA-7B base weights: choose them in Model > Model Setup"
        )
    return ActiveModel(
        BUNDLE,
        bundle=bundle,
        clip_path=settings.clip_path or "",
        llama_path=settings.llama_path or "",
        registry_id=registry_id,
        name=name,
        missing=missing,
    )


def resolve_active_model(
    settings: Settings, registry: ModelRegistry | None = None, *, include_demo_choice: bool = True
) -> ActiveModel | None:
    """The model the next analysis should use, read afresh; None when there is none at all.

    Order: the demo choice recorded in the registry (unless ``include_demo_choice`` is False, as
    in Model Setup); else the settings' explicit bundle folder; else the registry's active bundle.
    An unreadable registry counts as empty (logged). ``registry`` defaults to ``ModelRegistry()``.
    """
    from pneumoview.registry import ModelRegistry

    reg = registry if registry is not None else ModelRegistry()
    try:
        demo_chosen = include_demo_choice and reg.demo_chosen()
    except PneumoViewError as exc:
        log.warning("model registry unreadable: %s", exc.message)
        demo_chosen = False
    if demo_chosen:
        return ActiveModel(DEMO)
    if settings.active_bundle:
        return model_for_bundle(Path(settings.active_bundle), settings)
    try:
        entry = reg.active()
    except PneumoViewError as exc:
        log.warning("model registry unreadable: %s", exc.message)
        return None
    if entry is None:
        return None
    return model_for_bundle(entry.path, settings, registry_id=entry.id, manifest=entry.manifest)
