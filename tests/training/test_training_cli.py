"""End to end through the CLI: the pipeline learns, writes a new bundle, resumes exactly, cancels cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from training.cli import main as training_main
from training.synthetic import make_synthetic_dataset, small_config_file

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated PNEUMOVIEW_HOME (registry, cache) for each test."""
    path = tmp_path / "home"
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(path))
    return path


def _common(csv: Path, cfg: Path, *extra: str) -> list[str]:
    return [
        str(csv),
        "--random-base",
        "0",
        "--architecture",
        str(cfg),
        "--batch-size",
        "4",
        "--grad-accum",
        "1",
        "--lr",
        "2e-3",
        "--warmup-epochs",
        "0.5",
        "--threads",
        "1",
        *extra,
    ]


@pytest.mark.slow
def test_pipeline_learns_a_synthetic_task_within_a_minute(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture
) -> None:
    from pneumoview.cli import main as pneumoview_main
    from pneumoview.registry import ModelRegistry

    csv = make_synthetic_dataset(tmp_path / "syn", n_patients=20, images_per_patient=2, seed=1)
    cfg = small_config_file(tmp_path / "tiny64.json")
    out = tmp_path / "bundle"
    start = time.perf_counter()
    rc = pneumoview_main(
        ["train", *_common(csv, cfg, "--folds", "2", "--epochs", "4", "--no-final", "--out", str(out))]
    )
    elapsed = time.perf_counter() - start
    assert rc == 0
    card = json.loads((out / "model_card.json").read_text())
    auc = card["summary"]["auc"]["mean"]
    print(f"synthetic 2-fold CV AUC {auc:.3f} in {elapsed:.1f} s")
    assert auc >= 0.9
    assert all(f["metrics"]["auc"] >= 0.8 for f in card["folds"])
    # Learnt, not lucky: a random head can rank these images well by chance, but only training
    # calibrates the argmax and drives the loss down.
    assert card["summary"]["accuracy"]["mean"] >= 0.9
    for f in card["folds"]:
        assert f["history"][-1]["train_loss"] < 0.5 * f["history"][0]["train_loss"]
    assert elapsed < 60
    # Negative control: the same run without learning (lr 0) must not pass the same bar.
    control = tmp_path / "control"
    assert (
        pneumoview_main(
            [
                "train",
                *_common(
                    csv,
                    cfg,
                    "--folds",
                    "2",
                    "--epochs",
                    "1",
                    "--no-final",
                    "--lr",
                    "0",
                    "--warmup-epochs",
                    "0",
                    "--no-register",
                    "--out",
                    str(control),
                ),
            ]
        )
        == 0
    )
    control_card = json.loads((control / "model_card.json").read_text())
    assert control_card["summary"]["accuracy"]["mean"] < 0.75
    # The new bundle: manifest + tensors + model card + figures; registered, not active.
    for name in ("manifest.json", "weights.safetensors", "model_card.json", "roc.png", "confusion.png", "curves.png"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["metrics"]["auc"] == pytest.approx(auc)
    assert manifest["base_fingerprints"] == card["base_fingerprints"] and manifest["base_fingerprints"]["clip"]
    assert manifest["training"]["data_file_list_sha256"] == card["data"]["file_list_sha256"]
    assert card["split"]["seed"] == 0 and len(card["split"]["val_patients"]) == 2
    assert card["library_versions"]["torch"]
    registry = ModelRegistry()
    assert [e.model_id for e in registry.list()] == [manifest["model_id"]]
    assert registry.active() is None
    assert not (tmp_path / "bundle.run").exists()  # checkpoints removed after success
    # Never overwrite: the same --out again is refused (exit 2, one line).
    capsys.readouterr()
    assert pneumoview_main(["train", *_common(csv, cfg, "--folds", "2", "--epochs", "1", "--out", str(out))]) == 2
    assert "never overwrites" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_after_stops_equals_an_uninterrupted_run(tmp_path: Path, home: Path) -> None:
    csv = make_synthetic_dataset(tmp_path / "syn", n_patients=8, images_per_patient=2, seed=2)
    cfg = small_config_file(tmp_path / "tiny64.json")
    args = ["--folds", "2", "--epochs", "3", "--final", "--json-progress"]
    assert training_main(_common(csv, cfg, *args, "--out", str(tmp_path / "a"), "--activate")) == 0
    out_b = tmp_path / "b"
    assert training_main(_common(csv, cfg, *args, "--out", str(out_b), "--stop-after-epochs", "2")) == 130
    assert (tmp_path / "b.run" / "checkpoint.safetensors").is_file() and not out_b.exists()
    assert training_main(_common(csv, cfg, *args, "--out", str(out_b), "--stop-after-epochs", "3")) == 130
    assert (tmp_path / "b.run" / "fold0.safetensors").is_file()
    assert training_main(_common(csv, cfg, *args, "--out", str(out_b))) == 0
    a = load_file(str(tmp_path / "a" / "weights.safetensors"))
    b = load_file(str(out_b / "weights.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] == b[key]).all(), key
    card_a = json.loads((tmp_path / "a" / "model_card.json").read_text())
    card_b = json.loads((out_b / "model_card.json").read_text())
    assert [f["metrics"] for f in card_a["folds"]] == [f["metrics"] for f in card_b["folds"]]
    assert card_a["weights_from"] == "final"
    # B was compared with the active model (A) on the same folds.
    assert card_b["compared_with"]["model_id"] == card_a["model_id"]
    assert len(card_b["comparison_with_active"]["folds"]) == 2
    # The split recorded in A's manifest is reused exactly, whatever --split-seed says.
    out_c = tmp_path / "c"
    assert (
        training_main(
            _common(
                csv,
                cfg,
                "--folds",
                "2",
                "--epochs",
                "1",
                "--no-final",
                "--split-seed",
                "99",
                "--split-from",
                str(tmp_path / "a"),
                "--out",
                str(out_c),
                "--json-progress",
            )
        )
        == 0
    )
    card_c = json.loads((out_c / "model_card.json").read_text())
    assert card_c["split"] == card_a["split"]
    assert (
        training_main(
            _common(
                csv,
                cfg,
                "--folds",
                "2",
                "--epochs",
                "1",
                "--no-final",
                "--split-seed",
                "99",
                "--out",
                str(tmp_path / "d"),
                "--json-progress",
            )
        )
        == 0
    )
    card_d = json.loads((tmp_path / "d" / "model_card.json").read_text())
    assert card_d["split"]["val_patients"] != card_a["split"]["val_patients"]


@pytest.mark.slow
def test_sigterm_keeps_the_checkpoint_and_a_rerun_resumes(tmp_path: Path, home: Path) -> None:
    csv = make_synthetic_dataset(tmp_path / "syn", n_patients=6, images_per_patient=2, seed=3)
    cfg = small_config_file(tmp_path / "tiny64.json")
    out = tmp_path / "bundle"
    argv = _common(csv, cfg, "--folds", "2", "--epochs", "30", "--no-final", "--json-progress", "--out", str(out))
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PNEUMOVIEW_HOME": str(home), "PYTHONPATH": pythonpath}
    proc = subprocess.Popen(
        [sys.executable, "-m", "training", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    events = []
    try:
        for line in proc.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "epoch":
                proc.send_signal(signal.SIGTERM)
                break
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    events += [json.loads(line) for line in rest.splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert events[-1]["event"] == "cancelled"
    assert {"data_summary", "estimate", "start", "step", "epoch"} <= {e["event"] for e in events}
    assert (tmp_path / "bundle.run" / "checkpoint.safetensors").is_file() and not out.exists()
    seen: list[dict] = []
    from training import cli

    original = cli._Progress.__call__
    cli._Progress.__call__ = lambda self, e: seen.append(e)  # type: ignore[method-assign]
    try:
        argv[argv.index("30")] = "2"
        rc = training_main(argv)
    finally:
        cli._Progress.__call__ = original  # type: ignore[method-assign]
    # The epoch count is part of the run's identity: a changed recipe is refused, not silently mixed.
    assert rc == 2
    argv[argv.index("2", argv.index("--epochs"))] = "30"
    cli._Progress.__call__ = lambda self, e: seen.append(e)  # type: ignore[method-assign]
    try:
        rc = training_main([*argv, "--stop-after-epochs", "1"])
    finally:
        cli._Progress.__call__ = original  # type: ignore[method-assign]
    assert rc == 130
    assert any(e["event"] == "resumed" and e["epoch"] >= 1 for e in seen)


@pytest.mark.slow
def test_a_demo_trained_bundle_predicts_in_the_engine_what_training_measured(tmp_path: Path, home: Path) -> None:
    """Training's validation scores == the inference engine's probabilities on the same files."""
    import csv as csv_module

    from pneumoview.inference.demo import ensure_demo_model
    from pneumoview.inference.engine import InferenceEngine
    from pneumoview.preprocess import prepare

    csv = make_synthetic_dataset(tmp_path / "syn", n_patients=6, images_per_patient=1, seed=5)
    out = tmp_path / "bundle"
    rc = training_main(
        [
            str(csv),
            "--demo",
            "--folds",
            "2",
            "--run-folds",
            "1",
            "--no-final",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--grad-accum",
            "1",
            "--threads",
            "1",
            "--json-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    card = json.loads((out / "model_card.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["demo"] is True and card["weights_from"] == "fold-0"
    fold = card["folds"][0]
    with csv.open(newline="") as fh:
        rows = list(csv_module.DictReader(fh))
    from training.privacy import load_patient_key, patient_hasher

    hash_id = patient_hasher(load_patient_key())  # the card lists keyed hashes, never raw IDs
    files = [csv.parent / r["path"] for r in rows if hash_id(r["patient_id"]) in set(fold["val_patients"])]
    demo = ensure_demo_model()
    engine = InferenceEngine.load(out, clip_path=demo.clip, llama_path=demo.llama, device="cpu", precision="fp32")
    probabilities = [p.probability for p in engine.predict([prepare(f).crop for f in files])]
    assert probabilities == pytest.approx(fold["val_scores"], abs=1e-5)


def test_precision_options_use_the_apps_vocabulary() -> None:
    """``--mixed-precision`` / ``--base-dtype`` take pneumoview.precision's values (and the old spellings)."""
    import argparse

    from pneumoview.precision import Precision, choices
    from training.cli import configure

    parser = argparse.ArgumentParser()
    configure(parser)
    for value in choices(Precision):
        args = parser.parse_args(["data", "--mixed-precision", value, "--base-dtype", value])
        assert args.mixed_precision == value == args.base_dtype
    args = parser.parse_args(["data", "--mixed-precision", "no", "--base-dtype", "bfloat16"])
    assert (args.mixed_precision, args.base_dtype) == ("fp32", "bf16")
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "--base-dtype", "int8"])
