"""Helpers shared by the reading tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import hashlib

from pneumoview.results import ImageIdentity, Provenance, analysed
from pneumoview.store import ImageInfo, ResultStore

CLASSES = ("pneumoconiosis", "normal")


def add_study(
    store: ResultStore,
    study_uid: str,
    probability: float | None = 0.83,
    *,
    n_images: int = 1,
    patient_id: str = "W-0001",
    patient_name: str = "Miner^Ann",
    demo: bool = False,
) -> list[str]:
    """Images of one study (and a model result for each when ``probability`` is given)."""
    keys = []
    for i in range(n_images):
        uid, path = f"{study_uid}.{i + 1}", f"/clinic/{study_uid}/{i + 1}.dcm"
        identity = ImageIdentity(uid, hashlib.sha256(path.encode()).hexdigest(), path)
        info = ImageInfo(
            image_key=identity.key,
            path=path,
            sop_instance_uid=uid,
            patient_id=patient_id,
            patient_name=patient_name,
            study_uid=study_uid,
            study_date="20260314",
            view_position="PA",
        )
        if probability is None:
            store.upsert_images([info])
        else:
            result = analysed(
                identity,
                probability - 0.1 * i,
                class_names=CLASSES,
                demo=demo,
                provenance=Provenance(bundle_name="PneumoLLM", threshold=0.5),
            )
            store.save(result, info)
        keys.append(info.image_key)
    return keys
