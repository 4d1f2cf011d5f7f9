"""Writing model results into a real ResultStore the way the app does (importable by name from any test)."""

from __future__ import annotations

import hashlib

from pneumoview.results import ImageIdentity, Provenance, analysed
from pneumoview.store import ImageInfo, ResultStore

CLASSES = ("pneumoconiosis", "normal")


def identity_for(name: str) -> ImageIdentity:
    """A stable identity for a test image called ``name`` (UID ``name``, hash of the name as its content)."""
    return ImageIdentity(name, hashlib.sha256(name.encode()).hexdigest(), f"/data/{name}.dcm")


def save_analysed(
    store: ResultStore,
    name: str,
    probability: float,
    *,
    threshold: float = 0.5,
    demo: bool = False,
    analysed_at: str = "",
    bundle_id: str = "model-1",
) -> str:
    """An analysed result for image ``name`` (recorded with its header row); returns its image key."""
    identity = identity_for(name)
    info = ImageInfo(image_key=identity.key, path=identity.path, sop_instance_uid=name)
    result = analysed(
        identity,
        probability,
        class_names=CLASSES,
        demo=demo,
        analysed_at=analysed_at,
        provenance=Provenance(bundle_id=bundle_id, bundle_name="PneumoLLM", threshold=threshold),
    )
    store.save(result, info)
    return identity.key
