"""``pneumoview models``: list / add / activate / rollback / show / remove / compare through the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from pneumoview import paths
from pneumoview.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_bundle(folder: Path, *, seed: int, model_id: str, metrics: dict) -> Path:
    folder.mkdir(parents=True)
    weights = folder / "weights.safetensors"
    save_file({"head.weight": np.random.default_rng(seed).standard_normal((2, 4)).astype(np.float32)}, str(weights))
    manifest = {"architecture": "pneumollm-tiny", "model_id": model_id, "name": model_id, "demo": False,
                "created": "2026-11-27T21:00:00+00:00", "training": {"metrics": metrics},
                "weights_file": "weights.safetensors", "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["models", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_whole_lifecycle(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "list")
    assert code == 0 and "no models in" in out and str(home / "data" / "models") in out

    code, out, _ = _run(capsys, "add", str(make_bundle(tmp_path / "a", seed=1, model_id="run-a", metrics={"auc": 0.81})),
                        "--activate", "--note", "first")
    assert code == 0
    first = out.split()[1]
    assert out.splitlines() == [f"added {first}", f"active: {first}"]
    code, out, _ = _run(capsys, "add", str(make_bundle(tmp_path / "b", seed=2, model_id="run-b", metrics={"auc": 0.88})))
    second = out.split()[1]

    code, out, _ = _run(capsys, "list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith(f"* {first}") and "auc=0.810" in lines[0]
    assert lines[1].startswith(f"  {second}")

    code, out, _ = _run(capsys, "activate", second)
    assert code == 0 and out.strip() == f"active: {second}"
    code, out, _ = _run(capsys, "list", "--json")
    listed = json.loads(out)
    assert [(e["id"], e["active"]) for e in listed] == [(first, False), (second, True)]

    code, out, _ = _run(capsys, "compare", first, second)
    assert code == 0 and "auc" in out and "0.8100" in out and "0.8800" in out

    code, out, _ = _run(capsys, "show", first, "--json")
    shown = json.loads(out)
    assert shown["note"] == "first" and shown["manifest"]["model_id"] == "run-a" and shown["active"] is False
    code, out, _ = _run(capsys, "show", first)
    assert "model_id: run-a" in out and "auc=0.810" in out

    code, out, _ = _run(capsys, "rollback")
    assert code == 0 and out.strip() == f"rolled back; active: {first}"

    code, out, err = _run(capsys, "remove", first)
    assert code == 2 and "is active" in err and out == ""
    code, out, _ = _run(capsys, "remove", second)
    assert code == 0
    code, out, _ = _run(capsys, "list", "--json")
    assert [e["id"] for e in json.loads(out)] == [first]


def test_errors_are_one_line_with_exit_code_2(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "activate", "no-such-model")
    assert code == 2 and err.startswith("pneumoview models: error: no model 'no-such-model'")
    code, _, err = _run(capsys, "rollback")
    assert code == 2 and "no earlier model" in err
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, "add", str(tmp_path / "empty"))
    assert code == 2 and "manifest.json is missing" in err
    assert len(err.strip().splitlines()) == 1


def test_root_option_points_at_another_registry(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other-registry"
    _run(capsys, "--root", str(other), "add", str(make_bundle(tmp_path / "a", seed=1, model_id="x", metrics={})))
    assert len(list((other / "bundles").iterdir())) == 1
    assert not (home / "data" / "models").exists()


def test_activation_warns_when_settings_override_the_registry(tmp_path: Path, home: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from pneumoview.settings import Settings, save_settings

    bundle = make_bundle(tmp_path / "a", seed=1, model_id="x", metrics={})
    code, out, err = _run(capsys, "add", str(bundle), "--activate")
    assert code == 0 and err == ""
    save_settings(Settings(active_bundle=str(tmp_path / "explicit-bundle")))
    code, out, err = _run(capsys, "activate", out.split()[1])
    assert code == 0 and "explicit-bundle" in err and "instead of the registry" in err


def test_runs_as_a_real_command(tmp_path: Path) -> None:
    env = {**os.environ, paths.HOME_ENV: str(tmp_path / "home"), "PYTHONPATH": str(REPO_ROOT)}
    bundle = make_bundle(tmp_path / "a", seed=1, model_id="cli", metrics={})
    proc = subprocess.run([sys.executable, "-m", "pneumoview", "models", "add", str(bundle), "--activate"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pneumoview", "models", "list"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("* ") and "cli" in proc.stdout
