"""Helpers shared by the reading tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

from pneumoview.store import ImageInfo, ResultStore


def add_study(store: ResultStore, study_uid: str, probability: float | None = 0.83, *, n_images: int = 1,
              patient_id: str = "W-0001", patient_name: str = "Miner^Ann", demo: bool = False) -> list[str]:
    """Images of one study (and a model result for each when ``probability`` is given)."""
    keys = []
    for i in range(n_images):
        info = ImageInfo(image_key=f"{study_uid}.{i + 1}", path=f"/clinic/{study_uid}/{i + 1}.dcm",
                         sop_instance_uid=f"{study_uid}.{i + 1}", patient_id=patient_id, patient_name=patient_name,
                         study_uid=study_uid, study_date="20260314", view_position="PA")
        if probability is None:
            store.upsert_images([info])
        else:
            store.save_result(info.image_key, image=info, probability=probability - 0.1 * i, threshold=0.5,
                              label="pneumoconiosis" if probability - 0.1 * i >= 0.5 else "normal",
                              model_name="PneumoLLM", demo=demo)
        keys.append(info.image_key)
    return keys
