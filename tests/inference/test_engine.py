"""InferenceEngine on the tiny architecture: real files, real model code, real threads."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pneumoview.errors import BundleError, CancelledError, FingerprintMismatchError, WeightsError
from pneumoview.inference.bundle import Manifest, load_bundle, save_bundle
from pneumoview.inference.demo import ensure_demo_model
from pneumoview.inference.engine import InferenceEngine
from pneumoview.labels import DEMO_MARK as DEMO_LABEL

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return ensure_demo_model(tmp_path_factory.mktemp("demo") / "demo-model")


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """Six grey 'crops' with different content (gradients + noise), float32 [6, 224, 224] in [0, 1]."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:224, 0:224].astype(np.float32) / 223.0
    out = [
        np.clip(a * xx + (1 - a) * yy + 0.3 * rng.random((224, 224), dtype=np.float32) * b, 0, 1)
        for a, b in zip(np.linspace(0, 1, 6), np.linspace(0.1, 1, 6))
    ]
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def engine(demo) -> InferenceEngine:
    return InferenceEngine.load(demo.bundle, clip_path=demo.clip, llama_path=demo.llama, device="cpu")


def reference_probabilities(demo, crops: np.ndarray) -> np.ndarray:
    """Independent fp32 path: plain load_state_dict copies, numpy normalisation, softmax[:, 0]."""
    from pneumoview.inference.model import build_model, load_trainable_state_dict

    manifest, trained = load_bundle(demo.bundle)
    model = build_model(manifest.model_config(), device="cpu")
    visual = {k[len("visual.") :]: v for k, v in load_file(str(demo.clip)).items()}
    decoder = {k[len("model.") :]: v for k, v in load_file(str(demo.llama / "model.safetensors")).items()}
    model.visual.load_state_dict(visual)
    model.decoder.load_state_dict(decoder, strict=False)
    load_trainable_state_dict(model, trained)
    x = (np.repeat(crops[:, None], 3, axis=1) - IMAGENET_MEAN[None, :, None, None]) / IMAGENET_STD[None, :, None, None]
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(x.astype(np.float32)))
    return torch.softmax(logits, dim=-1)[:, 0].numpy()


def test_fp32_engine_equals_an_independent_forward(demo, crops):
    engine = InferenceEngine.load(
        demo.bundle, clip_path=demo.clip, llama_path=demo.llama, device="cpu", precision="fp32"
    )
    assert engine.plan.vision_dtype == engine.plan.decoder_dtype == torch.float32
    got = np.array([p.probability for p in engine.predict(crops, batch_size=4)])
    np.testing.assert_allclose(got, reference_probabilities(demo, crops), rtol=1e-5, atol=1e-6)
    assert got.std() > 1e-4  # the crops give different answers (the comparison means something)


def test_cpu_auto_plan_dtypes_are_applied_and_close_to_fp32(engine, demo, crops):
    from pneumoview.inference.plans import cpu_has_bf16

    assert engine.plan.device == "cpu" and engine.plan.quantisation is None
    expected_vision = torch.bfloat16 if cpu_has_bf16() else torch.float32
    assert engine.plan.vision_dtype == expected_vision
    assert engine.model.visual.conv1.weight.dtype == expected_vision
    assert engine.model.decoder.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert engine.model.head.fc.weight.dtype == torch.float32  # trained parts stay fp32
    got = np.array([p.probability for p in engine.predict(crops)])
    np.testing.assert_allclose(got, reference_probabilities(demo, crops), atol=2e-2)


def test_prediction_fields_threshold_and_demo_marking(engine, crops):
    probs = engine.probabilities(crops)
    threshold = float(np.median(probs))
    preds = engine.predict(crops, threshold=threshold)
    assert [p.positive for p in preds] == [bool(p >= threshold) for p in probs]
    for pred in preds:
        assert pred.threshold == threshold and pred.model_id == engine.manifest.model_id
        assert pred.demo and DEMO_LABEL in pred.label and "DEMO" in pred.model_name
        assert pred.class_name == ("pneumoconiosis" if pred.positive else "normal")
        assert pred.label == f"{DEMO_LABEL}: {pred.class_name}"
    assert engine.predict([]) == []


def test_batch_size_does_not_change_the_answers(engine, crops):
    one = [p.probability for p in engine.predict(crops, batch_size=1)]
    six = [p.probability for p in engine.predict(crops, batch_size=6)]
    np.testing.assert_allclose(one, six, atol=1e-3)


def test_progress_and_cancel_between_batches(engine, crops):
    seen: list[tuple[int, int]] = []
    engine.predict(crops, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(4, 6), (6, 6)]
    seen.clear()
    with pytest.raises(CancelledError, match="after 2 of 6"):
        engine.predict(crops, batch_size=2, progress=lambda d, t: seen.append((d, t)), cancel=lambda: bool(seen))
    assert seen == [(2, 6)]


def test_one_engine_shared_by_threads_never_runs_two_forwards_at_once(engine, crops):
    expected = [p.probability for p in engine.predict(crops, batch_size=2)]
    active, max_active = [0], [0]
    lock = threading.Lock()
    original = engine.model.forward

    def counting_forward(pixels):
        with lock:
            active[0] += 1
            max_active[0] = max(max_active[0], active[0])
        time.sleep(0.01)  # widen the window in which an unlocked engine would overlap
        try:
            return original(pixels)
        finally:
            with lock:
                active[0] -= 1

    engine.model.forward = counting_forward
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda _: [p.probability for p in engine.predict(crops, batch_size=2)], range(8)))
    finally:
        del engine.model.forward
    assert max_active[0] == 1
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-6)


def test_wrong_crops_are_refused_clearly(engine):
    from pneumoview.errors import ConfigError

    with pytest.raises(ConfigError, match="224"):
        engine.predict([np.zeros((100, 100), np.float32)])
    with pytest.raises(ConfigError, match="threshold"):
        engine.predict([np.zeros((224, 224), np.float32)], threshold=1.5)


def test_missing_weights_and_bundle_are_clear_errors(demo, tmp_path):
    with pytest.raises(WeightsError, match="no CLIP"):
        InferenceEngine.load(demo.bundle, clip_path=None, llama_path=demo.llama, device="cpu")
    with pytest.raises(WeightsError, match="no LLaMA"):
        InferenceEngine.load(demo.bundle, clip_path=demo.clip, llama_path=None, device="cpu")
    with pytest.raises(WeightsError, match="not found"):
        InferenceEngine.load(demo.bundle, clip_path=tmp_path / "ViT-L-14.pt", llama_path=demo.llama, device="cpu")
    with pytest.raises(BundleError):
        InferenceEngine.load(tmp_path, clip_path=demo.clip, llama_path=demo.llama, device="cpu")


def test_other_base_weights_are_refused_with_the_fingerprints(demo, tmp_path):
    with safe_open(str(demo.clip), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    state["visual.ln_post.weight"] = state["visual.ln_post.weight"] + 0.01  # a fine-tuned CLIP, say
    other = tmp_path / "other-clip.safetensors"
    save_file(state, str(other))
    with pytest.raises(FingerprintMismatchError) as info:
        InferenceEngine.load(demo.bundle, clip_path=other, llama_path=demo.llama, device="cpu")
    message = info.value.message
    assert "other CLIP weights" in message and "pvfp1:" in message and str(other) in message


def _inverse_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Hugging Face rotary layout -> Meta's interleaved layout (inverse of the loader's permutation)."""
    out_dim, in_dim = w.shape
    return w.view(n_heads, 2, out_dim // n_heads // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def test_same_base_weights_as_meta_consolidated_and_torchscript_give_the_same_answers(demo, engine, crops, tmp_path):
    """The demo's LLaMA converted to Meta's format and its CLIP to a TorchScript archive: the
    fingerprints still match the bundle (content, not file form) and the predictions are the same."""
    hf_config = json.loads((demo.llama / "config.json").read_text())
    heads = hf_config["num_attention_heads"]
    meta_names = {
        "self_attn.q_proj": "attention.wq",
        "self_attn.k_proj": "attention.wk",
        "self_attn.v_proj": "attention.wv",
        "self_attn.o_proj": "attention.wo",
        "mlp.gate_proj": "feed_forward.w1",
        "mlp.down_proj": "feed_forward.w2",
        "mlp.up_proj": "feed_forward.w3",
        "input_layernorm": "attention_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    meta: dict[str, torch.Tensor] = {"tok_embeddings.weight": torch.zeros(5, hf_config["hidden_size"])}
    for key, value in load_file(str(demo.llama / "model.safetensors")).items():
        key = key[len("model.") :]
        for hf, m in meta_names.items():
            key = key.replace(f".{hf}.", f".{m}.")
        if key.endswith(("attention.wq.weight", "attention.wk.weight")):
            value = _inverse_permute(value, heads)
        meta[key] = value
    folder = tmp_path / "llama-meta"
    folder.mkdir()
    torch.save(meta, folder / "consolidated.00.pth")
    (folder / "params.json").write_text(
        json.dumps(
            {
                "dim": hf_config["hidden_size"],
                "n_layers": 2,
                "n_heads": heads,
                "norm_eps": hf_config["rms_norm_eps"],
                "vocab_size": -1,
            }
        )
    )

    from pneumoview.inference.towers import build_vision_tower

    class Clip(torch.nn.Module):
        def __init__(self, visual):
            super().__init__()
            self.visual = visual

        def forward(self, x):
            return self.visual(x)

    tower = build_vision_tower(engine.config.vision)  # plain open_clip tower, no adapter hooks
    tower.load_state_dict({k[len("visual.") :]: v for k, v in load_file(str(demo.clip)).items()})
    archive = tmp_path / "ViT-L-14.pt"
    torch.jit.save(torch.jit.script(Clip(tower)), str(archive))
    with pytest.raises(WeightsError, match="SHA-256"):  # not OpenAI's file
        InferenceEngine.load(demo.bundle, clip_path=archive, llama_path=folder, device="cpu")
    other = InferenceEngine.load(
        demo.bundle, clip_path=archive, llama_path=folder, device="cpu", allow_unverified_clip=True
    )
    assert other.report.llama_format == "meta-consolidated" and other.report.clip_format == "openai-torchscript"
    assert other.report.fingerprints == engine.report.fingerprints
    np.testing.assert_allclose(
        [p.probability for p in other.predict(crops)], [p.probability for p in engine.predict(crops)], atol=1e-6
    )


def test_a_bundle_without_fingerprints_loads_but_wrong_sizes_are_refused(demo, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_weights import tiny_clip

    manifest, trained = load_bundle(demo.bundle)
    bare = Manifest.create(manifest.model_config(), base_fingerprints={}, name="imported", demo=False)
    bundle = save_bundle(tmp_path / "imported", trained, bare)
    engine = InferenceEngine.load(bundle, clip_path=demo.clip, llama_path=demo.llama, device="cpu")
    assert any("not verified" in n for n in engine.report.notes)
    assert engine.demo  # demo base weights: marked DEMO although the manifest is not
    assert all(p.demo and DEMO_LABEL in p.label for p in engine.predict([np.zeros((224, 224), np.float32)]))
    small = tmp_path / "small-clip.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip().state_dict().items()}, str(small))
    with pytest.raises(WeightsError, match="not the tower architecture"):
        InferenceEngine.load(bundle, clip_path=small, llama_path=demo.llama, device="cpu")


def test_accelerator_normalisation_is_the_shared_preprocessing(engine, crops):
    """On a GPU the engine normalises on the device; same arithmetic as transforms.preprocess_tensor."""
    from pneumoview.inference.transforms import preprocess_tensor

    on_device = engine.normalise_on(crops, "cpu")
    torch.testing.assert_close(on_device, preprocess_tensor(crops, engine.manifest.preprocessing))
    with pytest.raises(ValueError, match="NaN"):
        engine.normalise_on(np.full((1, 224, 224), np.nan, np.float32), "cpu")


def test_a_llama_of_another_size_is_refused_by_its_config(demo, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    other = tmp_path / "llama-other"
    LlamaForCausalLM(
        LlamaConfig(vocab_size=10, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    ).save_pretrained(other)
    with pytest.raises(WeightsError, match="not the decoder architecture") as info:
        InferenceEngine.load(demo.bundle, clip_path=demo.clip, llama_path=other, device="cpu")
    assert "hidden 32" in info.value.reason and "needs 64" in info.value.reason


def test_bf16_meta_build_and_assign_equals_the_old_build_and_copy_path(demo, crops):
    """The engine builds on the meta device and assigns the memory-mapped tensors (no random init, no
    copy); the old way (real init on the CPU, then ``load_state_dict`` copies) gives the same logits."""
    from pneumoview.inference.model import build_model, load_trainable_state_dict

    engine = InferenceEngine.load(
        demo.bundle,
        clip_path=demo.clip,
        llama_path=demo.llama,
        device="cpu",
        precision="bf16",
        quantisation="none",
        prepared_cache=False,
    )
    assert engine.plan.vision_dtype == engine.plan.decoder_dtype == torch.bfloat16
    manifest, trained = load_bundle(demo.bundle)
    old = build_model(manifest.model_config(), device="cpu", base_dtype=torch.bfloat16)
    old.visual.load_state_dict({k[len("visual.") :]: v for k, v in load_file(str(demo.clip)).items()})
    decoder = {k[len("model.") :]: v for k, v in load_file(str(demo.llama / "model.safetensors")).items()}
    old.decoder.load_state_dict({k: v.to(torch.bfloat16) for k, v in decoder.items()}, strict=False)
    load_trainable_state_dict(old, trained)
    pixels = engine._prepare(crops)
    with torch.inference_mode():
        want, got = old.eval()(pixels).float(), engine.model(pixels).float()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert want.std(dim=0).max() > 1e-4  # different crops, different logits: the comparison means something
