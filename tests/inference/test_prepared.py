"""Prepared-weights cache: hit, invalidation (weights, plan, bundle fingerprints), corrupt entries
rebuilt, safetensors only; on tiny real-format weights (the demo model's files)."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from pneumoview.errors import FingerprintMismatchError, WeightsError
from pneumoview.inference import prepared, safetensors_mmap
from pneumoview.inference.engine import InferenceEngine

CACHED = "prepared weights mapped from the cache"


@pytest.fixture(scope="module")
def demo_source(tmp_path_factory):
    from pneumoview.inference.demo import ensure_demo_model

    return ensure_demo_model(tmp_path_factory.mktemp("prepared") / "demo")


@pytest.fixture()
def demo(demo_source, tmp_path, monkeypatch):
    """A private copy of the demo model's files and a private cache folder for each test."""
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    root = tmp_path / "demo"
    shutil.copytree(demo_source.root, root)
    from pneumoview.inference.demo import DemoPaths

    return DemoPaths.under(root)


def load(paths, **kw):
    kw = {"device": "cpu", "precision": "bf16", "quantisation": "int8"} | kw
    return InferenceEngine.load(paths.bundle, clip_path=paths.clip, llama_path=paths.llama, **kw)


CROPS = np.random.default_rng(3).random((3, 224, 224), dtype=np.float32)


def entries():
    folder = prepared.cache_dir()
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def test_second_load_maps_the_cache_and_gives_the_same_probabilities(demo):
    cold = load(demo)
    assert CACHED not in cold.report.notes and len(entries()) == 1
    warm = load(demo)
    assert CACHED in warm.report.notes
    assert warm.report.fingerprints == cold.report.fingerprints and warm.demo
    assert np.array_equal(warm.probabilities(CROPS), cold.probabilities(CROPS))
    assert warm.report.clip_format == "safetensors" and warm.report.llama_format == "hf-folder"


def test_plan_change_and_weight_change_invalidate(demo):
    load(demo)
    first = entries()
    other_plan = load(demo, quantisation="int4")
    assert CACHED not in other_plan.report.notes and entries() != first and len(entries()) == 1
    # Rewriting the LLaMA file (same content, new modification time) is another key: rebuilt.
    shard = demo.llama / "model.safetensors"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    assert CACHED not in load(demo, quantisation="int4").report.notes
    assert CACHED in load(demo, quantisation="int4").report.notes


def test_a_bundle_expecting_other_fingerprints_is_refused_even_from_the_cache(demo):
    load(demo)
    manifest_path = demo.bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["base_fingerprints"]["llama"] = "pvfp1:" + "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(FingerprintMismatchError):
        load(demo)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickle"])
def test_a_corrupt_entry_is_deleted_and_rebuilt_never_unpickled(demo, damage, monkeypatch):
    expected = load(demo).probabilities(CROPS)  # before the damage: the cold engine maps the entry it wrote
    (entry,) = entries()
    if damage == "truncate":
        data = entry.read_bytes()
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        entry.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    else:
        entry.write_bytes(pickle.dumps({"visual.x": torch.zeros(1)}))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load on a cache entry"))
    again = load(demo)
    assert CACHED not in again.report.notes
    assert np.array_equal(again.probabilities(CROPS), expected)
    assert CACHED in load(demo).report.notes  # rewritten


def test_writer_output_is_standard_safetensors_and_the_reader_checks_every_entry(tmp_path):
    from safetensors import safe_open

    tensors = {
        "a": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3),
        "b": torch.tensor([1, -2], dtype=torch.int8),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "x.safetensors"
    safetensors_mmap.save(path, tensors, {"k": "v"})
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"k": "v"}
        assert all(torch.equal(f.get_tensor(k), v) for k, v in tensors.items())
    back, meta = safetensors_mmap.load(path)
    assert meta == {"k": "v"} and all(torch.equal(back[k], v) for k, v in tensors.items())
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(WeightsError, match="does not fit the file"):
        safetensors_mmap.load(path)


def test_plans_using_the_files_as_stored_write_nothing(demo):
    load(demo, quantisation="none", precision="fp32")  # stored fp32 safetensors, used as stored
    assert entries() == []


def _hide_a_nan(llama_folder) -> str:
    """Put one NaN into the demo's LLaMA file where the sampled fingerprint does not look (so only the
    finite check can see it); returns the tensor's name."""
    from pneumoview.inference.fingerprints import FINGERPRINT_EDGE, FINGERPRINT_SAMPLES

    path = llama_folder / "model.safetensors"
    tensors = {k: v.clone() for k, v in safetensors_mmap.load(path)[0].items()}
    _header, metadata, _start = safetensors_mmap.read_header(path)
    name = "model.layers.1.mlp.up_proj.weight"
    flat = tensors[name].view(-1)
    sampled = set(torch.linspace(0, flat.numel() - 1, FINGERPRINT_SAMPLES, dtype=torch.float64).round().long().tolist())
    index = next(i for i in range(FINGERPRINT_EDGE, flat.numel()) if i not in sampled)
    flat[index] = float("nan")
    safetensors_mmap.save(path, tensors, metadata)
    return name


@pytest.mark.parametrize("quantisation", ["int8", "none"])
def test_non_finite_base_weights_are_refused_and_a_clean_check_is_remembered(demo, quantisation, monkeypatch):
    from pneumoview.inference import engine as engine_module

    checked: list[str] = []
    real = engine_module.check_finite
    monkeypatch.setattr(engine_module, "check_finite", lambda s, what, p: checked.append(what) or real(s, what, p))
    load(demo, quantisation=quantisation)
    first = list(checked)  # int8: the decoder is checked tensor by tensor as it streams into the cache
    load(demo, quantisation=quantisation)
    assert checked == first and first[0] == "CLIP" and set(first) == {"CLIP", "LLaMA"}  # remembered the 2nd time
    name = _hide_a_nan(demo.llama)  # the file changes: its identity too, so it is checked again
    with pytest.raises(WeightsError, match="NaN or infinite"):
        load(demo, quantisation=quantisation)
    assert checked[-1] == "LLaMA" and name.startswith("model.")
    assert len(entries()) == 1  # the clean files' entry (the demo's fp32 files are cast: cached), none for these


def _some_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randint(-127, 127, (48, 64), dtype=torch.int8, generator=g),
        "w_qscale": torch.rand(48, generator=g).to(torch.bfloat16),
        "odd": torch.randn(3, 5, generator=g).to(torch.bfloat16),  # 30 bytes: not a multiple of the alignment
        "norm": torch.randn(64, generator=g).to(torch.bfloat16),
        "empty": torch.zeros(0, 4),
    }


def test_stream_writer_in_any_order_gives_the_bytes_of_the_whole_dict_writer(tmp_path):
    tensors, metadata = _some_tensors(), {"k": "v"}
    safetensors_mmap.save(tmp_path / "whole.safetensors", tensors, metadata)
    specs = {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}
    with open(tmp_path / "streamed.safetensors", "wb") as f:
        writer = safetensors_mmap.StreamWriter(f, specs, metadata)
        for name in reversed(list(tensors)):
            writer.write(name, tensors[name])
        writer.finish()
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "whole.safetensors").read_bytes()
    # Metadata known only at the end (room reserved): the same tensors, data 64-byte aligned, standard file.
    with open(tmp_path / "late.safetensors", "wb") as f:
        writer = safetensors_mmap.StreamWriter(f, specs, metadata_room=1000)
        for name, tensor in tensors.items():
            writer.write(name, tensor)
        writer.finish({"late": "x" * 900})
    back, meta = safetensors_mmap.load(tmp_path / "late.safetensors")
    assert meta == {"late": "x" * 900} and all(torch.equal(back[k], v) for k, v in tensors.items())
    assert safetensors_mmap.read_header(tmp_path / "late.safetensors")[2] % safetensors_mmap.ALIGN == 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "late.safetensors"), framework="pt") as st:
        assert all(torch.equal(st.get_tensor(k), v) for k, v in tensors.items())


def test_stream_writer_refuses_what_its_header_did_not_announce(tmp_path):
    tensors = _some_tensors()
    specs = {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}
    with open(tmp_path / "x.safetensors", "wb") as f:
        writer = safetensors_mmap.StreamWriter(f, specs, metadata_room=10)
        with pytest.raises(ValueError, match="not announced"):
            writer.write("other", torch.zeros(1))
        with pytest.raises(ValueError, match="announced"):
            writer.write("w", tensors["w"].float())
        writer.write("w", tensors["w"])
        with pytest.raises(ValueError, match="twice"):
            writer.write("w", tensors["w"])
        with pytest.raises(ValueError, match="never written"):
            writer.finish()
        for name in set(tensors) - {"w"}:
            writer.write(name, tensors[name])
        with pytest.raises(ValueError, match="more bytes than reserved"):
            writer.finish({"k": "v" * 100})


@pytest.mark.parametrize("stop", ["exception", "incomplete"])
def test_an_interrupted_streamed_entry_leaves_nothing(tmp_path, stop):
    tensors = _some_tensors()
    specs = {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}
    path = tmp_path / "cache" / "abc-def.safetensors"
    with pytest.raises((RuntimeError, ValueError)), prepared.stream_entry(path, specs, specs) as stream:
        stream.write_visual("w", tensors["w"])
        stream.write_decoder("w", tensors["w"])
        stream.info = {"demo": True}
        if stop == "exception":
            raise RuntimeError("read error mid-stream")
    assert list(path.parent.iterdir()) == []  # no entry, no temporary file


def test_cold_streamed_model_equals_the_in_memory_one_and_the_warm_one(demo):
    """The cold int8 start writes the cache as it reads and maps it; same logits as the in-memory read
    (no cache) and as the warm start."""
    in_memory = load(demo, prepared_cache=False)
    assert entries() == []
    cold = load(demo)
    assert CACHED not in cold.report.notes and len(entries()) == 1
    assert not any("could not" in n for n in cold.report.notes)
    warm = load(demo)
    assert CACHED in warm.report.notes
    with torch.no_grad():
        logits = [e.model(e._prepare(CROPS)) for e in (in_memory, cold, warm)]
    assert all(torch.equal(logits[0], other) for other in logits[1:])


def test_an_unwritable_cache_falls_back_to_reading_into_memory(demo, monkeypatch):
    def refuse(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors_mmap.StreamWriter, "write", refuse)
    fallback = load(demo)
    assert any("could not be written" in n for n in fallback.report.notes) and entries() == []
    monkeypatch.undo()
    assert np.array_equal(fallback.probabilities(CROPS), load(demo).probabilities(CROPS))


def test_a_killed_first_start_leaves_only_a_hidden_temporary_that_a_later_start_removes(demo):
    folder = prepared.cache_dir()
    folder.mkdir(parents=True)
    stale = folder / ".abc-def.safetensors.k3j2.tmp"  # what atomic_open leaves when the process is killed
    fresh = folder / ".abc-def.safetensors.x9q1.tmp"  # perhaps another process still writing
    for f in (stale, fresh):
        f.write_bytes(b"partial")
    hour_ago = stale.stat().st_mtime - 3700
    os.utime(stale, (hour_ago, hour_ago))
    assert entries() == []  # hidden: never taken for an entry
    load(demo)
    assert not stale.exists() and fresh.exists() and len(entries()) == 1
