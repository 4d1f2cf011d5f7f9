"""Render the ILO reading form and the agreement dashboard offscreen into docs/ (synthetic readings).

    .venv/bin/python scripts/reading_screenshots.py [--output-dir docs]

A temporary results database gets twelve made-up studies (no patient data), model results and
the readings of three readers; nothing outside the temporary folder is touched.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPED = {"primary_shape": "q", "secondary_shape": "t", "zones": frozenset({"RU", "LU", "RM"})}


def _fill(repo, store) -> None:
    from pneumoview.reading.ilo import PROFUSION, PleuralThickening, Reading
    from pneumoview.store import ImageInfo

    rng = random.Random(7)
    for name in ("Dr Ada Okafor", "Dr Ben Lindqvist", "Dr Chen Wei"):
        repo.sign_in(name)
    for i in range(12):
        uid = f"1.2.826.0.1.3680043.10.1.{i + 1}"
        truth = rng.choice(range(len(PROFUSION)))
        info = ImageInfo(image_key=f"{uid}.1", path=f"/clinic/{i}.dcm", study_uid=uid, patient_id=f"W-{i:04d}")
        p = min(0.99, max(0.01, truth / 11 + rng.uniform(-0.2, 0.2)))
        store.save_result(
            info.image_key,
            image=info,
            probability=p,
            threshold=0.5,
            label="pneumoconiosis" if p >= 0.5 else "normal",
            model_name="PneumoLLM",
        )
        for reader in ("Dr Ada Okafor", "Dr Ben Lindqvist"):
            level = min(len(PROFUSION) - 1, max(0, truth + rng.choice((-1, 0, 0, 1))))
            if i == 0:  # the first study: the two readers disagree (0/1 vs 1/1), a third arbitrates
                level = 2 if reader == "Dr Ada Okafor" else 4
            profusion = PROFUSION[level]
            extra = SHAPED if level >= 3 else {}
            repo.submit(uid, reader, Reading(film_quality=1, profusion=profusion, **extra))
    uid = "1.2.826.0.1.3680043.10.1.1"
    repo.submit(
        uid,
        "Dr Chen Wei",
        Reading(
            film_quality=2,
            film_quality_reason="scapulae overlap the lung fields",
            profusion="1/1",
            large_opacities="0",
            plaques=PleuralThickening(sites={"in_profile": frozenset({"L"})}, extent={"L": 2}, width={"L": "b"}),
            symbols=frozenset({"em"}),
            comments="compare with the 2024 film",
            **SHAPED,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["PNEUMOVIEW_HOME"] = tempfile.mkdtemp(prefix="pneumoview-reading-shots-")
    from PySide6.QtWidgets import QApplication

    from pneumoview.reading.repository import ReadingRepository
    from pneumoview.store import ResultStore
    from pneumoview.ui.agreement_dialog import AgreementDialog
    from pneumoview.ui.reading_dialogs import ReadingDialog

    app = QApplication.instance() or QApplication(sys.argv[:1])
    with ResultStore() as store:
        repo = ReadingRepository(store)
        _fill(repo, store)
        shots = []
        form = ReadingDialog(repo, "1.2.826.0.1.3680043.10.1.1", "Dr Chen Wei")
        form.resize(1280, 800)
        shots.append((form, "reading-form.png"))
        dashboard = AgreementDialog.from_repository(repo)
        dashboard.resize(1280, 800)
        shots.append((dashboard, "agreement-dashboard.png"))
        for widget, name in shots:
            widget.show()
            for _ in range(5):
                app.processEvents()
            path = args.output_dir / name
            if not widget.grab().save(str(path)):
                raise SystemExit(f"reading_screenshots: cannot write {path}")
            print(path)
            widget.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
