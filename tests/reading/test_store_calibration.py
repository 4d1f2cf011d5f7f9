"""Calibration pairs from the store's final readings: a real SQLite store filled through the real
repository API (two readers, an arbiter where they disagree), real demo-model results on real
radiographs (``../shared/data/cxr``), and ``pneumoview calibrate --from-store`` end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from data_support import shared_path

from pneumoview.errors import CalibrationError
from pneumoview.reading.ilo import Reading, normal_reading
from pneumoview.reading.repository import ReadingRepository
from pneumoview.reading.store_calibration import pairs_from_store
from pneumoview.results import Provenance, analysed, identify
from pneumoview.store import ImageInfo, ResultStore

POSITIVE = Reading(
    film_quality=1, profusion="1/1", primary_shape="q", secondary_shape="q", zones=frozenset({"RU", "LU"})
)
UNREADABLE = Reading(film_quality=4, film_quality_reason="overexposed")
OTHER_MODEL = "fe" * 32


def study(i: int) -> str:
    return f"1.2.826.0.1.3680043.10.{i}"


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """The store, the demo bundle's fingerprint and, per study, the scores of its images (by hand)."""
    from pneumoview.inference.engine import InferenceEngine
    from pneumoview.service.analysis_worker import engine_provenance, predict_results

    home = tmp_path_factory.mktemp("home")
    db = tmp_path_factory.mktemp("db") / "results.sqlite3"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PNEUMOVIEW_HOME", str(home))
        engine = InferenceEngine.load_demo()
        images = sorted(p for p in shared_path("cxr", "images").iterdir() if p.suffix.lower() in {".png", ".jpg"})
        # study i gets image i; study 5 also image 20 (two radiographs: the higher score counts)
        plan = [(i, images[i]) for i in range(14)] + [(5, images[20])]
        batch = [(identify(path), engine.prepare(path)) for _i, path in plan]
        results = predict_results(engine, batch, engine_provenance(engine, 0.5))
        scores: dict[str, list[float]] = {}
        with ResultStore(db) as store:
            for (i, _path), (identity, _mi), result in zip(plan, batch, results, strict=True):
                info = ImageInfo(
                    image_key=identity.key,
                    path=identity.path,
                    patient_id=f"W-{i // 2}",  # two studies per worker: the bootstrap resamples workers
                    study_uid=study(i),
                )
                if i == 11:  # analysed by another model only
                    result = replace(result, provenance=replace(result.provenance, bundle_fingerprint=OTHER_MODEL))
                elif i == 12:  # no AI result at all
                    store.upsert_images([info])
                    continue
                store.save(result, info)
                scores.setdefault(study(i), []).append(float(result.probability))
            # A later result of another model on study 0's image: never mixed into this model's pairs.
            other = analysed(
                batch[0][0],
                0.999,
                class_names=engine.class_names,
                demo=True,
                provenance=Provenance(bundle_fingerprint=OTHER_MODEL, threshold=0.5),
            )
            store.save(other)
            repo = ReadingRepository(store)
            ada, ben, cy = (repo.sign_in(n) for n in ("Ada", "Ben", "Cy"))
            for i in range(5):  # agreed normal
                repo.submit(study(i), ada, normal_reading())
                repo.submit(study(i), ben, normal_reading())
            for i in range(5, 9):  # agreed 1/1
                repo.submit(study(i), ada, POSITIVE)
                repo.submit(study(i), ben, POSITIVE)
            repo.submit(study(9), ada, normal_reading())  # disagreement, no arbiter yet
            repo.submit(study(9), ben, POSITIVE)
            repo.submit(study(10), ada, normal_reading())  # disagreement settled by the arbiter: positive
            repo.submit(study(10), ben, POSITIVE)
            repo.submit(study(10), cy, POSITIVE)
            for i in (11, 12):  # final normal, but no result of the demo bundle
                repo.submit(study(i), ada, normal_reading())
                repo.submit(study(i), ben, normal_reading())
            repo.submit(study(13), ada, POSITIVE)  # one reader only
            # study 14: no image, graded unacceptable by both
            repo.submit(study(14), ada, UNREADABLE)
            repo.submit(study(14), ben, UNREADABLE)
        yield db, str(engine.manifest.weights_sha256), scores, home


@pytest.mark.slow
def test_pairs_by_hand_one_per_final_study_of_this_bundle_only(filled) -> None:
    db, fingerprint, scores, _home = filled
    with ResultStore(db) as store:
        pairs = pairs_from_store(store, fingerprint)
    expected = {study(i): (max(scores[study(i)]), i >= 5) for i in [*range(9), 10]}
    got = {u: (s, p) for u, s, p in zip(pairs.studies, pairs.scores.tolist(), pairs.positive.tolist(), strict=True)}
    assert got == expected  # stored floats come back exactly (JSON keeps every digit)
    assert len(scores[study(5)]) == 2 and got[study(5)][0] == max(scores[study(5)])  # the higher of two images
    assert got[study(0)][0] != 0.999  # the other model's later result was not taken
    assert got[study(10)][1] is True  # the arbiter decided
    s = pairs.summary
    assert (s["source"], s["n"], s["n_positive"], s["n_negative"]) == ("store", 10, 5, 5)
    assert s["excluded"] == {
        "pending": 1,
        "needs_arbitration": 1,
        "unreadable": 1,
        "no_ai_result": 1,
        "other_models_only": 1,
    }
    assert s["studies_with_readings"] == 15 and s["excluded_total"] == 5 and s["n_patients"] == 6
    assert "W-0" not in json.dumps(s) and study(0) not in json.dumps(s)  # counts and a hash only


@pytest.mark.slow
def test_too_few_pairs_or_one_class_is_a_clear_error(filled) -> None:
    db, fingerprint, _scores, _home = filled
    with ResultStore(db) as store:
        with pytest.raises(CalibrationError, match=r"10 studies .* at least 11 .*1 pending, 1 needs arbitration"):
            pairs_from_store(store, fingerprint, minimum=11)
        with pytest.raises(CalibrationError, match="0 studies"):
            pairs_from_store(store, OTHER_MODEL[::-1])  # a bundle that analysed nothing here
        with pytest.raises(CalibrationError, match="one class only"):
            pairs_from_store(store, OTHER_MODEL, minimum=1)  # its studies 0 and 11 are both final normal


@pytest.mark.slow
def test_cli_from_store_writes_the_figures_and_says_the_source(filled, tmp_path, monkeypatch, capsys) -> None:
    from pneumoview.cli import main

    db, fingerprint, scores, home = filled
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(home))
    out = tmp_path / "c.json"
    args = ["calibrate", "--from-store", "--database", str(db), "--demo", "--target-sensitivity", "0.8"]
    assert main([*args, "--json", str(out), "--plot", str(tmp_path / "c.png"), "--bootstrap", "200", "-q"]) == 0
    data = json.loads(out.read_text())
    assert data["bundle_fingerprint"] == fingerprint and data["n"] == 10 and data["demo"] is True
    assert data["data_summary"]["source"] == "store" and data["data_summary"]["excluded_total"] == 5
    assert sorted(data["scores"]) == pytest.approx(sorted(max(scores[study(i)]) for i in [*range(9), 10]))
    assert np.sum(data["positive"]) == 5 and (tmp_path / "c.png").stat().st_size > 0
    # Too few final readings: one line, exit 2, no JSON.
    empty = tmp_path / "empty.sqlite3"
    ResultStore(empty).close()
    capsys.readouterr()
    assert main([*args[:3], str(empty), *args[4:], "--json", str(tmp_path / "no.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0 studies with a final reading" in err[0] and not (tmp_path / "no.json").exists()


def test_cli_data_and_from_store_are_mutually_exclusive(tmp_path, capsys, monkeypatch) -> None:
    from pneumoview.cli import main

    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path))
    target = ["--demo", "--target-sensitivity", "0.9", "--json", str(tmp_path / "x.json")]
    for extra in (["--from-store", str(tmp_path)], [], [str(tmp_path), "--database", str(tmp_path / "db")]):
        assert main(["calibrate", *extra, *target]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("DATA" in err[0] or "--from-store" in err[0]), err
    assert main(["calibrate", "--from-store", "--database", str(tmp_path / "none.db"), *target]) == 2
    assert "no such results database" in capsys.readouterr().err
