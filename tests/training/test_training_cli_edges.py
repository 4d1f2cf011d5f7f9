"""The training CLI at its edges: bad arguments, divergence, full or unwritable disks, and no PHI in any output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from bundle_support import small_filesystem
from safetensors.torch import load_file
from training_support import tiny_training_argv

import training.base
import training.datacheck
from training.cli import main as training_main
from training.synthetic import make_synthetic_dataset, small_config_file


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(path))
    return path


@pytest.fixture()
def data(tmp_path: Path) -> tuple[Path, Path]:
    csv = make_synthetic_dataset(tmp_path / "syn", n_patients=8, images_per_patient=1, seed=1)
    return csv, small_config_file(tmp_path / "tiny64.json")


def _argv(csv: Path, cfg: Path, *extra: str) -> list[str]:
    return tiny_training_argv(csv, cfg, "--batch-size", "2", "--no-register", *extra)


def _one_line(err: str) -> str:
    """The one line the CLI printed (progress bars and third-party import warnings left aside)."""
    assert "Traceback" not in err, err
    lines = [line.split("\r")[-1] for line in err.splitlines()]
    lines = [line for line in lines if line.strip() and "it/s" not in line and not re.match(r"[WI]\d{4} ", line)]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--folds", "0"], "folds must be a whole number from 2 to 100, not 0"),
        (["--lr", "nan"], "lr must be a finite number >= 0, not nan"),
        (["--lr", "inf"], "lr must be a finite number >= 0, not inf"),
        (["--weight-decay", "-1"], "weight decay must be a finite number >= 0"),
        (["--epochs", "0"], "epochs must be a whole number of at least 1"),
        (["--batch-size", "0"], "batch size must be a whole number of at least 1"),
        (["--run-folds", "3"], "run_folds must be between 1 and 2"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_arguments_are_refused_before_data_or_model(
    tmp_path: Path,
    home: Path,
    data: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    extra: list[str],
    message: str,
) -> None:
    touched: list[str] = []
    monkeypatch.setattr(training.datacheck, "validate", lambda *a, **k: touched.append("data"))
    monkeypatch.setattr(training.base, "build_base_model", lambda *a, **k: touched.append("model"))
    out = tmp_path / "out"
    assert training_main(_argv(*data, *extra, "--out", str(out))) == 2
    assert message in _one_line(capsys.readouterr().err)
    assert touched == [] and not out.exists() and not (tmp_path / "out.run").exists()


def test_output_in_place_of_a_file_and_home_as_a_file_are_one_line(
    tmp_path: Path,
    home: Path,
    data: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    assert training_main(_argv(*data, "--out", str(blocker / "bundle"))) == 2
    assert (
        _one_line(capsys.readouterr().err)
        == f"training: error: cannot write {blocker}: a file is in the way, not a folder"
    )
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(blocker))
    assert training_main(_argv(*data, "--out", str(tmp_path / "b"))) == 2
    assert "training: error: cannot write" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_full_disk_while_writing_the_bundle_is_one_line_and_leaves_no_partial_folder(
    tmp_path: Path,
    home: Path,
    data: tuple[Path, Path],
    capsys: pytest.CaptureFixture,
) -> None:
    with small_filesystem(tmp_path / "full", "64k") as full:  # the bundle needs ~140 KB
        out = full / "bundle"
        rc = training_main(_argv(*data, "--out", str(out), "--work-dir", str(tmp_path / "work")))
        line = _one_line(capsys.readouterr().err)
        assert rc == 2
        assert line.startswith("training: error: disk full: ") and str(out) in line
        assert list(full.iterdir()) == []  # neither the bundle nor its hidden staging folder


def test_a_read_only_output_disk_is_refused_before_training(
    tmp_path: Path,
    home: Path,
    data: tuple[Path, Path],
    capsys: pytest.CaptureFixture,
) -> None:
    with small_filesystem(tmp_path / "ro", "64k", read_only=True) as read_only:
        assert training_main(_argv(*data, "--out", str(read_only / "bundle"))) == 2
        line = _one_line(capsys.readouterr().err)
        assert line.startswith(f"training: error: cannot write {read_only}") and "Read-only file system" in line


def test_a_diverging_run_stops_with_one_line_and_keeps_a_finite_checkpoint(
    tmp_path: Path,
    home: Path,
    data: tuple[Path, Path],
    capsys: pytest.CaptureFixture,
) -> None:
    out = tmp_path / "out"
    rc = training_main(_argv(*data, "--epochs", "3", "--lr", "1e6", "--warmup-epochs", "0", "--out", str(out)))
    line = _one_line(capsys.readouterr().err)
    assert rc == 2
    assert line.startswith("training: error: training diverged at epoch 2 step 1; last good checkpoint kept")
    assert not out.exists()
    checkpoint = load_file(str(tmp_path / "out.run" / "checkpoint.safetensors"))
    assert checkpoint and all(bool(np.isfinite(t.float().numpy()).all()) for t in checkpoint.values())


@pytest.mark.slow
def test_no_patient_id_folder_name_or_path_in_anything_training_leaves(
    tmp_path: Path,
    home: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    """Recognisable PatientIDs and a patient-named folder: grep every file left (bundle, card, figures,
    registry, settings, cache, work folder of an interrupted run, leftover temp files) and the JSON log."""
    csv = make_synthetic_dataset(tmp_path / "QXSMITHJOHN" / "syn", n_patients=8, images_per_patient=2, seed=7)
    from PIL import Image

    rows = csv.read_text().splitlines()
    patched = [rows[0]]
    for i, row in enumerate(rows[1:]):
        path, label, pid = row.split(",")
        patched.append(f"{path},{label},{'' if i == 0 else 'QXPID-' + pid}")  # row 0: no ID -> file-based ID
    normal_pid = next(r for r in patched[2:] if ",normal," in r).split(",")[2]
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(csv.parent / "images" / "extra.png")
    patched.append(f"images/extra.png,pneumoconiosis,{normal_pid}")  # this patient is now under both labels
    (csv.parent / "images" / "broken.png").write_bytes(b"\x89PNG broken")
    patched.append(f"images/broken.png,pneumoconiosis,{normal_pid}")
    csv.write_text("\n".join(patched) + "\n")
    cfg = small_config_file(tmp_path / "tiny64.json")
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = tiny_training_argv(
        csv,
        cfg,
        "--batch-size",
        "4",
        "--json-progress",
        "--cache-dir",
        str(cache),
        "--out",
        str(out),
        epochs=2,
        final=True,
    )
    assert training_main([*argv, "--stop-after-epochs", "1"]) == 130  # interrupted: the work folder stays
    (tmp_path / "out.run" / ".split.json.abc.tmp").write_text("left by a killed run")
    work_files = _grep_files(tmp_path / "out.run", tmp_path / "QXSMITHJOHN")
    assert training_main([*argv, "--keep-work-dir"]) == 0
    log = capsys.readouterr().out
    events = [json.loads(line) for line in log.splitlines()]
    summary = next(e for e in events if e["event"] == "data_summary")
    assert summary["summary"]["unreadable"] == 1 and summary["summary"]["mixed_patients"] == 1
    assert "QXSMITHJOHN" in summary["text"]  # the local user is told which file to fix ...
    for event in events:  # ... and nothing else in the log names a patient or a path
        event.pop("text", None)
        assert b"QX" not in json.dumps(event).encode(), event
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"]["mixed_patient_hashes"][0].startswith("P-")
    assert all(p.startswith("P-") for fold in card["split"]["val_patients"] for p in fold)
    assert (tmp_path / "out.run" / "split.json").is_file()
    assert not (tmp_path / "out.run" / ".split.json.abc.tmp").exists()  # cleaned when the run started again
    assert work_files and _grep_files(tmp_path, tmp_path / "QXSMITHJOHN")


def _grep_files(root: Path, skip: Path) -> list[Path]:
    """Every file under ``root`` (outside ``skip``); asserts none holds the recognisable markers."""
    files = [p for p in root.rglob("*") if p.is_file() and skip not in p.parents]
    for path in files:
        content = path.read_bytes()
        for marker in (b"QXSMITHJOHN", b"QXPID", str(skip).encode()):
            assert marker not in content, f"{marker!r} in {path}"
        assert "QX" not in path.name, path
    return files
