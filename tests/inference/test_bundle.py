"""Model bundles: safetensors + manifest, exact round trip, atomic writes, clear refusals."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pneumoview import __version__
from pneumoview.errors import BundleError, FingerprintMismatchError
from pneumoview.inference.bundle import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    Manifest,
    check_bundle,
    check_fingerprints,
    load_bundle,
    read_manifest,
    save_bundle,
)
from pneumoview.inference.config import FULL_CONFIG, TINY_CONFIG, config_from_dict, load_config
from pneumoview.inference.model import (
    build_model,
    expected_trainable_shapes,
    load_trainable_state_dict,
    trainable_parameters,
    trainable_state_dict,
)

FINGERPRINTS = {"clip": "c" * 64, "llama": "d" * 64}


@pytest.fixture(scope="module")
def trained() -> tuple:
    torch.manual_seed(0)
    model = build_model(load_config(TINY_CONFIG))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in trainable_parameters(model):
            param.copy_(torch.randn(param.shape, generator=generator))
    return model, trainable_state_dict(model)


def make_manifest(**kwargs) -> Manifest:
    return Manifest.create(
        load_config(TINY_CONFIG),
        base_fingerprints=FINGERPRINTS,
        training={"epochs": 3, "metrics": {"auc": 0.75, "avg": 0.7}},
        **kwargs,
    )


def test_round_trip_is_exact(tmp_path: Path, trained: tuple) -> None:
    model, state = trained
    manifest = make_manifest(name="clinic A, Nov 2026")
    path = save_bundle(tmp_path / "bundle", state, manifest)
    assert sorted(p.name for p in path.iterdir()) == [MANIFEST_FILE, WEIGHTS_FILE]
    loaded_manifest, tensors = load_bundle(path)
    assert loaded_manifest == manifest
    assert sorted(tensors) == sorted(state)
    for key, value in state.items():
        assert tensors[key].dtype == torch.float32 and torch.equal(tensors[key], value), key
    # and the tensors give the same model
    other = build_model(load_config(TINY_CONFIG))
    load_trainable_state_dict(other, tensors)
    pixels = torch.randn(1, 3, 224, 224)
    other.load_state_dict(
        {**other.state_dict(), **{k: v for k, v in model.state_dict().items() if k.startswith(("visual.", "decoder."))}}
    )
    with torch.no_grad():
        assert torch.equal(other(pixels), model(pixels))


def test_manifest_records_everything(tmp_path: Path, trained: tuple) -> None:
    manifest = make_manifest(demo=True)
    save_bundle(tmp_path / "b", trained[1], manifest)
    data = json.loads((tmp_path / "b" / MANIFEST_FILE).read_text(encoding="utf-8"))
    config = load_config(TINY_CONFIG)
    assert data["architecture"] == TINY_CONFIG
    assert config_from_dict(data["config"]) == config
    assert data["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert data["preprocessing"]["std"] == [0.229, 0.224, 0.225]
    assert data["preprocessing"]["image_size"] == 224 and "margin" in data["preprocessing"]
    assert data["class_names"] == ["pneumoconiosis", "normal"]
    assert data["base_fingerprints"] == FINGERPRINTS
    assert data["training"]["metrics"]["auc"] == 0.75
    assert data["app_version"] == __version__
    assert datetime.fromisoformat(data["created"]).tzinfo is not None
    assert data["model_id"] and data["demo"] is True and data["format_version"] == 1
    assert len(data["weights_sha256"]) == 64
    assert read_manifest(tmp_path / "b") == load_bundle(tmp_path / "b")[0]


def test_write_is_atomic_and_never_overwrites_by_default(tmp_path: Path, trained: tuple) -> None:
    state = trained[1]
    target = tmp_path / "bundle"
    first = make_manifest()
    save_bundle(target, state, first)
    with pytest.raises(BundleError, match="already exists"):
        save_bundle(target, state, make_manifest())
    second = make_manifest(name="second")
    save_bundle(target, state, second, overwrite=True)
    assert read_manifest(target).name == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary or old directories left


def test_failed_save_leaves_nothing(tmp_path: Path, trained: tuple) -> None:
    state = dict(trained[1])
    state.pop("head.fc.weight")
    with pytest.raises(BundleError, match="missing.*head.fc.weight"):
        save_bundle(tmp_path / "bundle", state, make_manifest())
    assert list(tmp_path.iterdir()) == []


def test_corrupt_or_changed_weights_are_refused(tmp_path: Path, trained: tuple) -> None:
    path = save_bundle(tmp_path / "b", trained[1], make_manifest())
    weights = path / WEIGHTS_FILE
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="SHA-256"):
        load_bundle(path)


def rewrite_bundle(path: Path, *, tensors: dict | None = None, **manifest_changes: object) -> Path:
    """Replace a saved bundle's tensors and/or manifest fields, with a matching weights_sha256:
    a well-formed bundle whose content is wrong (what a buggy trainer or a hand edit produces)."""
    if tensors is not None:
        save_file(tensors, str(path / WEIGHTS_FILE))
    data = json.loads((path / MANIFEST_FILE).read_text())
    data["weights_sha256"] = hashlib.sha256((path / WEIGHTS_FILE).read_bytes()).hexdigest()
    data.update(manifest_changes)
    (path / MANIFEST_FILE).write_text(json.dumps(data))
    return path


def test_tensors_for_another_architecture_are_refused(tmp_path: Path, trained: tuple) -> None:
    path = save_bundle(tmp_path / "b", trained[1], make_manifest())
    tensors = load_file(str(path / WEIGHTS_FILE))
    tensors["head.fc.weight"] = torch.zeros(3, 64)
    rewrite_bundle(path, tensors=tensors)  # digest matches: only the shape check can catch it
    with pytest.raises(BundleError, match="wrong shapes.*head.fc.weight"):
        check_bundle(path)
    with pytest.raises(BundleError, match="wrong shapes.*head.fc.weight"):
        load_bundle(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(tmp_path: Path, trained: tuple, value: float) -> None:
    path = save_bundle(tmp_path / "b", trained[1], make_manifest())
    tensors = load_file(str(path / WEIGHTS_FILE))
    tensors["decoder_adapters.1.conv_D.weight"][0, 0, 0] = value
    rewrite_bundle(path, tensors=tensors)
    for check in (check_bundle, load_bundle):
        with pytest.raises(BundleError, match="NaN or infinite.*decoder_adapters.1.conv_D.weight"):
            check(path)


def test_non_finite_tensors_are_never_saved(tmp_path: Path, trained: tuple) -> None:
    state = dict(trained[1])
    state["head.fc.weight"] = state["head.fc.weight"].clone()
    state["head.fc.weight"][1, 2] = float("nan")
    with pytest.raises(BundleError, match="NaN or infinite.*head.fc.weight"):
        save_bundle(tmp_path / "b", state, make_manifest())
    assert list(tmp_path.iterdir()) == []


def test_a_manifest_without_weights_sha256_is_refused(tmp_path: Path, trained: tuple) -> None:
    path = rewrite_bundle(save_bundle(tmp_path / "b", trained[1], make_manifest()), weights_sha256="")
    with pytest.raises(BundleError, match="lacks weights_sha256"):
        load_bundle(path)
    data = json.loads((path / MANIFEST_FILE).read_text())
    del data["weights_sha256"]
    (path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="lacks weights_sha256"):
        check_bundle(path)


def test_swapped_class_names_are_refused(tmp_path: Path, trained: tuple) -> None:
    path = rewrite_bundle(
        save_bundle(tmp_path / "b", trained[1], make_manifest()), class_names=["normal", "pneumoconiosis"]
    )
    with pytest.raises(BundleError, match="class_names .* must be \\['pneumoconiosis', 'normal'\\]"):
        load_bundle(path)
    # swapped in the embedded architecture config as well: still refused (index 0 is the positive class)
    data = json.loads((path / MANIFEST_FILE).read_text())
    data["config"]["class_names"] = ["normal", "pneumoconiosis"]
    (path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="class_names must be"):
        check_bundle(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_size": 100000}, "image_size must be 224"),
        ({"image_size": "224"}, "image_size must be 224"),
        ({"margin": -0.1}, "margin must be empty or a number in \\[0, 0.5\\]"),
        ({"margin": float("nan")}, "margin"),
        ({"mean": [float("nan"), 0.4, 0.4]}, "mean must be 3 finite numbers"),
        ({"mean": [0.5, 0.5]}, "mean must be 3 finite numbers"),
        ({"std": [0.2, 0.0, 0.2]}, "std must be 3 finite numbers in \\(0, 10\\]"),
        ({"std": [0.2, float("inf"), 0.2]}, "std must be"),
    ],
)
def test_preprocessing_values_are_range_checked(tmp_path: Path, trained: tuple, change: dict, message: str) -> None:
    path = save_bundle(tmp_path / "b", trained[1], make_manifest())
    data = json.loads((path / MANIFEST_FILE).read_text())
    rewrite_bundle(path, preprocessing={**data["preprocessing"], **change})
    with pytest.raises(BundleError, match=f"bad preprocessing values: preprocessing {message}"):
        load_bundle(path)
    with pytest.raises(BundleError, match="preprocessing"):
        save_bundle(tmp_path / "c", trained[1], make_manifest(preprocessing={**data["preprocessing"], **change}))


def test_check_bundle_runs_without_torch(tmp_path: Path, trained: tuple) -> None:
    """Model Setup runs the full check in the GUI process, which never imports torch."""
    path = save_bundle(tmp_path / "b", trained[1], make_manifest())
    code = (
        "import sys; from pneumoview.inference.bundle import check_bundle; "
        f"m = check_bundle({str(path)!r}); print(m.architecture, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["pneumollm-tiny", "False"]


def test_missing_or_malformed_manifest(tmp_path: Path, trained: tuple) -> None:
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(tmp_path)
    path = save_bundle(tmp_path / "b", trained[1], make_manifest())
    (path / MANIFEST_FILE).write_text("{")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(path)
    (path / MANIFEST_FILE).write_text(json.dumps({"architecture": "x"}))
    with pytest.raises(BundleError, match="lacks"):
        load_bundle(path)
    data = make_manifest().to_dict()
    data["demo"] = "no"
    (path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="'demo' must be"):
        load_bundle(path)
    data = make_manifest().to_dict()
    data["format_version"] = 99
    (path / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="newer"):
        load_bundle(path)


def test_fingerprints_must_match() -> None:
    manifest = make_manifest()
    check_fingerprints(manifest, dict(FINGERPRINTS))  # same weights: fine
    with pytest.raises(FingerprintMismatchError) as info:
        check_fingerprints(manifest, {"clip": "c" * 64, "llama": "e" * 64})
    assert "llama" in info.value.reason and "clip" not in info.value.reason
    with pytest.raises(FingerprintMismatchError, match="clip: no fingerprint"):
        check_fingerprints(manifest, {"llama": "d" * 64})
    assert issubclass(FingerprintMismatchError, BundleError)


def test_expected_shapes_of_the_full_model_are_the_reference_sizes() -> None:
    shapes = expected_trainable_shapes(load_config(FULL_CONFIG))
    total = sum(int(torch.Size(s).numel()) for s in shapes.values())
    assert total == 2_704_000
    assert shapes["decoder_adapters.31.conv_D.weight"] == (4096, 4, 1)
    assert shapes["vision_adapters.23.conv_A.weight"] == (8, 1024, 1)
    assert shapes["projection.linear2.weight"] == (4096, 128)
