"""Offline base-weight loaders: every file form users have, written here at tiny size, read through one code path."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pneumoview.errors import WeightsError
from pneumoview.inference import weights as W

# ------------------------------------------------------------------------------------------------
# tiny CLIP (open_clip's own CLIP class: visual + text tower, as in real checkpoints)


def tiny_clip() -> torch.nn.Module:
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(
        embed_dim=32,
        vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=16, patch_size=16, image_size=64),
        text_cfg=CLIPTextCfg(context_length=8, vocab_size=50, width=32, heads=2, layers=1),
        quick_gelu=True,
    )
    return model.eval()


@pytest.fixture(scope="module")
def clip_model() -> torch.nn.Module:
    return tiny_clip()


@pytest.fixture(scope="module")
def clip_visual_expected(clip_model) -> dict[str, torch.Tensor]:
    return {k[len("visual.") :]: v for k, v in clip_model.state_dict().items() if k.startswith("visual.")}


@pytest.fixture(scope="module")
def torchscript_clip(tmp_path_factory, clip_model) -> Path:
    """A TorchScript archive of a CLIP model, as OpenAI ships ViT-L-14.pt (zip with code/)."""
    path = tmp_path_factory.mktemp("ts") / "ViT-L-14.pt"
    scripted = torch.jit.script(clip_model)
    torch.jit.save(scripted, str(path))
    return path


def _assert_same_state(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].shape == value.shape, key
        assert torch.equal(got[key].float(), value.float()), key


def test_clip_safetensors_keeps_visual_only(tmp_path, clip_model, clip_visual_expected):
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in clip_model.state_dict().items()}, str(path))
    loaded = W.read_clip_visual(path)
    assert loaded.source_format == "safetensors"
    _assert_same_state(loaded.state, clip_visual_expected)
    assert not any(k.startswith(("visual.", "token_embedding", "ln_final", "text_projection")) for k in loaded.state)
    assert loaded.config == {"width": 64, "layers": 2, "patch_size": 16, "image_size": 64, "output_dim": 32}


def test_clip_open_clip_state_dict_bin_and_wrapped_checkpoint(tmp_path, clip_model, clip_visual_expected):
    plain = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(clip_model.state_dict(), plain)
    wrapped = tmp_path / "epoch_32.pt"  # open_clip training checkpoint: {"state_dict": {"module.visual...."}}
    torch.save({"epoch": 32, "state_dict": {f"module.{k}": v for k, v in clip_model.state_dict().items()}}, wrapped)
    a, b = W.read_clip_visual(plain), W.read_clip_visual(wrapped)
    assert a.source_format == b.source_format == "torch-state-dict"
    _assert_same_state(a.state, clip_visual_expected)
    _assert_same_state(b.state, clip_visual_expected)
    assert a.fingerprint == b.fingerprint


def test_clip_torchscript_with_matching_hash_loads(torchscript_clip, clip_visual_expected):
    digest = hashlib.sha256(torchscript_clip.read_bytes()).hexdigest()
    loaded = W.read_clip_visual(torchscript_clip, expected_sha256=digest)
    assert loaded.source_format == "openai-torchscript"
    _assert_same_state(loaded.state, clip_visual_expected)


def test_clip_torchscript_with_wrong_hash_is_refused(torchscript_clip):
    # Named like OpenAI's file, but its hash is not OpenAI's published b8cca3fd...
    with pytest.raises(WeightsError) as info:
        W.read_clip_visual(torchscript_clip)
    assert "SHA-256" in info.value.reason and "b8cca3fd41ae0c99" in info.value.reason
    with pytest.raises(WeightsError):
        W.read_clip_visual(torchscript_clip, expected_sha256="0" * 64)


def test_clip_torchscript_unverified_only_when_user_allows(torchscript_clip, clip_visual_expected):
    loaded = W.read_clip_visual(torchscript_clip, allow_unverified=True)
    _assert_same_state(loaded.state, clip_visual_expected)
    assert any("unverified" in n for n in loaded.notes)


def test_clip_fingerprint_is_of_content_not_file_form(tmp_path, clip_model, torchscript_clip):
    sd = clip_model.state_dict()
    st = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    fp16 = tmp_path / "clip-fp16.safetensors"
    save_file({k: v.half().contiguous() for k, v in sd.items()}, str(fp16))
    fp16_upcast = tmp_path / "clip-fp16-as-fp32.safetensors"
    save_file({k: v.half().float().contiguous() for k, v in sd.items()}, str(fp16_upcast))
    ts = W.read_clip_visual(torchscript_clip, allow_unverified=True)
    assert W.read_clip_visual(st).fingerprint == ts.fingerprint
    # An exact fp32 up-cast of fp16 weights is the same weights; a lossy fp32 -> fp16 cast is not.
    assert W.read_clip_visual(fp16).fingerprint == W.read_clip_visual(fp16_upcast).fingerprint
    assert W.read_clip_visual(fp16).fingerprint != ts.fingerprint
    # Loading at another precision does not change the fingerprint (it is of the stored weights).
    half = W.read_clip_visual(st, dtype=torch.bfloat16)
    assert half.fingerprint == ts.fingerprint and half.state["conv1.weight"].dtype == torch.bfloat16


def test_fingerprint_detects_a_changed_weight(clip_visual_expected):
    base = W.fingerprint_state(clip_visual_expected)
    changed = {k: v.clone() for k, v in clip_visual_expected.items()}
    changed["ln_post.weight"][3] += 1e-3
    assert W.fingerprint_state(changed) != base
    renamed = dict(clip_visual_expected)
    renamed["ln_post.bias_"] = renamed.pop("ln_post.bias")
    assert W.fingerprint_state(renamed) != base
    assert base.startswith("pvfp1:") and len(base) == len("pvfp1:") + 64
    assert W.fingerprint_state(dict(reversed(list(clip_visual_expected.items())))) == base


def test_clip_refuses_pickles_with_code_and_non_clip_files(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1), "obj": Path("/etc")}, evil)  # a non-tensor object
    with pytest.raises(WeightsError, match="unpickle"):
        W.read_clip_visual(evil)
    other = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(WeightsError, match="no CLIP visual tower"):
        W.read_clip_visual(other)
    with pytest.raises(WeightsError, match="not found"):
        W.read_clip_visual(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError):
        W.read_clip_visual(garbage)


# ------------------------------------------------------------------------------------------------
# tiny LLaMA: Meta's original format, and Hugging Face's

PARAMS = {"dim": 64, "n_layers": 2, "n_heads": 4, "multiple_of": 32, "norm_eps": 1e-5, "vocab_size": -1}
INTERMEDIATE = 192  # 32 * ceil(int(2 * 4 * 64 / 3) / 32) = multiple_of rounding of Meta's formula


def meta_state(params=PARAMS, dtype=torch.float32, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random weights with Meta's names and layout (rotary pairs interleaved in wq/wk rows)."""
    g = torch.Generator().manual_seed(seed)
    d, inter, vocab = params["dim"], INTERMEDIATE, 40

    def r(*shape, scale=0.08):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    sd = {
        "tok_embeddings.weight": r(vocab, d),
        "norm.weight": 1 + r(d, scale=0.1),
        "output.weight": r(vocab, d),
        "rope.freqs": torch.zeros(d // params["n_heads"] // 2),
    }
    kv = d // params["n_heads"] * params.get("n_kv_heads", params["n_heads"])  # grouped-query attention
    for i in range(params["n_layers"]):
        p = f"layers.{i}."
        sd |= {
            p + "attention.wq.weight": r(d, d),
            p + "attention.wk.weight": r(kv, d),
            p + "attention.wv.weight": r(kv, d),
            p + "attention.wo.weight": r(d, d),
            p + "feed_forward.w1.weight": r(inter, d),
            p + "feed_forward.w2.weight": r(d, inter),
            p + "feed_forward.w3.weight": r(inter, d),
            p + "attention_norm.weight": 1 + r(d, scale=0.1),
            p + "ffn_norm.weight": 1 + r(d, scale=0.1),
        }
    return sd


def write_meta(folder: Path, sd: dict, params=PARAMS, shards: int = 1) -> Path:
    """Meta release layout; with shards > 1, split as Meta's model-parallel checkpoints are."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps(params))
    row_parallel = ("attention.wo.weight", "feed_forward.w2.weight", "tok_embeddings.weight")
    replicated = ("norm.weight", "rope.freqs")
    parts: list[dict] = [{} for _ in range(shards)]
    for key, value in sd.items():
        if key.endswith(replicated) or shards == 1:
            chunks = [value] * shards
        elif key.endswith(row_parallel):
            chunks = value.chunk(shards, dim=1)
        else:
            chunks = value.chunk(shards, dim=0)
        for part, chunk in zip(parts, chunks):
            part[key] = chunk.clone()
    for n, part in enumerate(parts):
        torch.save(part, folder / f"consolidated.{n:02d}.pth")
    return folder


def meta_reference_forward(sd: dict, params: dict, h: torch.Tensor) -> torch.Tensor:
    """Meta's llama/model.py (complex rotary on interleaved pairs, causal), from inputs embeddings."""
    d, n_heads, eps = params["dim"], params["n_heads"], params["norm_eps"]
    n_kv = params.get("n_kv_heads", n_heads)
    hd, (b, t, _) = d // n_heads, h.shape
    freqs = 1.0 / (10000.0 ** (torch.arange(0, hd, 2)[: hd // 2].float() / hd))
    freqs_cis = torch.polar(torch.ones(t, hd // 2), torch.outer(torch.arange(t).float(), freqs))

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def rope(x):  # [b, t, heads, hd]
        xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs_cis[None, :, None, :]).flatten(3)

    mask = torch.full((t, t), float("-inf")).triu(1)
    for i in range(params["n_layers"]):
        p = f"layers.{i}."
        x = rms(h, sd[p + "attention_norm.weight"])
        q = rope((x @ sd[p + "attention.wq.weight"].T).view(b, t, n_heads, hd)).transpose(1, 2)
        k = rope((x @ sd[p + "attention.wk.weight"].T).view(b, t, n_kv, hd))
        v = (x @ sd[p + "attention.wv.weight"].T).view(b, t, n_kv, hd)
        k = k.repeat_interleave(n_heads // n_kv, dim=2).transpose(1, 2)  # Meta's repeat_kv
        v = v.repeat_interleave(n_heads // n_kv, dim=2).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, dim=-1)
        h = h + (att @ v).transpose(1, 2).reshape(b, t, d) @ sd[p + "attention.wo.weight"].T
        x = rms(h, sd[p + "ffn_norm.weight"])
        ff = torch.nn.functional.silu(x @ sd[p + "feed_forward.w1.weight"].T) * (x @ sd[p + "feed_forward.w3.weight"].T)
        h = h + ff @ sd[p + "feed_forward.w2.weight"].T
    return rms(h, sd["norm.weight"])


def hf_decoder(config: dict, state: dict) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    cfg._attn_implementation = "eager"
    model = LlamaModel(cfg).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["embed_tokens.weight"] and unexpected == []
    return model


def test_meta_consolidated_matches_meta_attention_in_hf_layout(tmp_path):
    sd = meta_state()
    loaded = W.read_llama_decoder(write_meta(tmp_path / "llama-7b", sd))
    assert loaded.source_format == "meta-consolidated"
    assert loaded.config["hidden_size"] == 64 and loaded.config["intermediate_size"] == INTERMEDIATE
    assert loaded.config["num_hidden_layers"] == 2 and loaded.config["num_attention_heads"] == 4
    assert not any("embed" in k or "output" in k or "rope" in k for k in loaded.state)
    assert len(loaded.state) == 2 * 9 + 1
    h = torch.randn(2, 10, 64, generator=torch.Generator().manual_seed(3))
    expected = meta_reference_forward(sd, PARAMS, h)
    with torch.no_grad():
        got = hf_decoder(loaded.config, loaded.state)(inputs_embeds=h).last_hidden_state
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # Without the rotary permutation, Hugging Face's attention gives other numbers (the test can fail).
    unpermuted = dict(loaded.state)
    for i in range(2):
        unpermuted[f"layers.{i}.self_attn.q_proj.weight"] = sd[f"layers.{i}.attention.wq.weight"]
        unpermuted[f"layers.{i}.self_attn.k_proj.weight"] = sd[f"layers.{i}.attention.wk.weight"]
    with torch.no_grad():
        wrong = hf_decoder(loaded.config, unpermuted)(inputs_embeds=h).last_hidden_state
    assert not torch.allclose(wrong, expected, atol=1e-3)


def test_meta_grouped_query_attention_two_shards(tmp_path):
    """LLaMA-2-70B / LLaMA-3 style (n_kv_heads < n_heads): wk permuted per kv head, shards merged."""
    params = PARAMS | {"n_kv_heads": 2, "rope_theta": 10000.0}
    sd = meta_state(params)
    loaded = W.read_llama_decoder(write_meta(tmp_path / "gqa", sd, params=params, shards=2))
    assert loaded.config["num_key_value_heads"] == 2
    assert loaded.state["layers.0.self_attn.k_proj.weight"].shape == (32, 64)
    h = torch.randn(1, 10, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = hf_decoder(loaded.config, loaded.state)(inputs_embeds=h).last_hidden_state
    torch.testing.assert_close(got, meta_reference_forward(sd, params, h), rtol=1e-4, atol=1e-5)


def test_meta_two_shards_merge_to_the_single_shard_weights(tmp_path):
    sd = meta_state()
    one = W.read_llama_decoder(write_meta(tmp_path / "one", sd))
    two = W.read_llama_decoder(write_meta(tmp_path / "two", sd, shards=2) / "consolidated.01.pth")
    _assert_same_state(two.state, one.state)
    assert two.fingerprint == one.fingerprint
    assert any("2 consolidated shard" in n for n in two.notes)


def test_meta_bf16_loads_in_bf16_and_fp16_without_changing_fingerprint(tmp_path):
    folder = write_meta(tmp_path / "bf16", meta_state(dtype=torch.bfloat16))
    as_stored = W.read_llama_decoder(folder)
    as_fp16 = W.read_llama_decoder(folder, dtype=torch.float16)
    assert as_stored.source_dtype == torch.bfloat16
    assert {t.dtype for t in as_stored.state.values()} == {torch.bfloat16}
    assert {t.dtype for t in as_fp16.state.values()} == {torch.float16}
    assert as_stored.fingerprint == as_fp16.fingerprint


def test_hf_folder_sharded_safetensors_drops_embeddings_and_head(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=40,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
    )
    model = LlamaForCausalLM(cfg).eval()
    folder = tmp_path / "llama-hf"
    model.save_pretrained(folder, max_shard_size="50KB")
    assert len(list(folder.glob("*.safetensors"))) > 1 and (folder / "model.safetensors.index.json").is_file()
    state, config = W.load_llama_decoder(folder, torch.bfloat16)
    expected = {
        k[len("model.") :]: v
        for k, v in model.state_dict().items()
        if k.startswith("model.") and "embed_tokens" not in k
    }
    assert sorted(state) == sorted(expected)
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    assert config["num_key_value_heads"] == 2 and config["model_type"] == "llama"
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value.to(torch.bfloat16))
    # The HF decoder with these weights equals the HF model's own (same inputs_embeds).
    h = torch.randn(1, 10, 64)
    with torch.no_grad():
        ours = hf_decoder(config, {k: v.float() for k, v in W.load_llama_decoder(folder)[0].items()})
        torch.testing.assert_close(
            ours(inputs_embeds=h).last_hidden_state, model.model(inputs_embeds=h).last_hidden_state
        )


def test_same_weights_meta_and_hf_folder_have_the_same_fingerprint(tmp_path):
    meta = W.read_llama_decoder(write_meta(tmp_path / "meta", meta_state()))
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(meta.config))
    save_file({f"model.{k}": v for k, v in meta.state.items()}, str(folder / "model.safetensors"))
    hf = W.read_llama_decoder(folder / "config.json")
    assert hf.source_format == "hf-folder"
    assert hf.fingerprint == meta.fingerprint


def test_llama_errors_are_clear(tmp_path):
    with pytest.raises(WeightsError, match="not a LLaMA weights folder"):
        W.read_llama_decoder(tmp_path)
    with pytest.raises(WeightsError, match="not found"):
        W.read_llama_decoder(tmp_path / "absent")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(WeightsError, match="not a LLaMA-architecture"):
        W.read_llama_decoder(bert)
    # A truncated download: one layer's tensors missing.
    sd = meta_state()
    del sd["layers.1.feed_forward.w2.weight"]
    with pytest.raises(WeightsError, match=r"incomplete: missing layers\.1\.mlp\.down_proj\.weight"):
        W.read_llama_decoder(write_meta(tmp_path / "truncated", sd))
    # An index naming a shard that is not there.
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 1}))
    (hf / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}})
    )
    with pytest.raises(WeightsError, match="missing: model-00001-of-00002"):
        W.read_llama_decoder(hf)


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    import torch
    from pneumoview.inference.weights import read_llama_decoder

    def anon() -> int:  # anonymous resident memory (heap); file-backed mmap pages are reclaimable cache
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no RssAnon")

    peak, done = [anon()], threading.Event()
    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], anon()); time.sleep(0.002)
    t = threading.Thread(target=sample); rss0 = anon(); t.start()
    loaded = read_llama_decoder(sys.argv[1], dtype=torch.bfloat16)
    done.set(); t.join(); peak[0] = max(peak[0], anon())
    print(json.dumps({"anon0": rss0, "peak": peak[0], "nbytes": loaded.nbytes}))
    """
)


def write_fp32_hf_folder(folder: Path, d: int = 1024, inter: int = 2816, n: int = 4) -> None:
    """~200 MB of fp32 LLaMA shards (the worst case for a bf16 load: the target is half the size)."""
    cfg = {
        "model_type": "llama",
        "hidden_size": d,
        "intermediate_size": inter,
        "num_hidden_layers": n,
        "num_attention_heads": 8,
        "rms_norm_eps": 1e-6,
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    shapes = {
        "self_attn.q_proj.weight": (d, d),
        "self_attn.k_proj.weight": (d, d),
        "self_attn.v_proj.weight": (d, d),
        "self_attn.o_proj.weight": (d, d),
        "mlp.gate_proj.weight": (inter, d),
        "mlp.up_proj.weight": (inter, d),
        "mlp.down_proj.weight": (d, inter),
        "input_layernorm.weight": (d,),
        "post_attention_layernorm.weight": (d,),
    }
    for i in range(n):
        extra = {"model.norm.weight": torch.ones(d)} if i == n - 1 else {}
        tensors = {f"model.layers.{i}.{k}": torch.randn(s) for k, s in shapes.items()} | extra
        save_file(tensors, str(folder / f"model-{i:05d}-of-{n:05d}.safetensors"))


def test_llama_peak_memory_is_about_the_target_size_not_an_fp32_copy(tmp_path):
    """fp32 shards read as bf16: peak heap memory rises by about the bf16 size, far below the fp32 size.

    Sampled every 2 ms from /proc (RssAnon): what the loader allocates. The shard being read is
    memory-mapped; its pages are page cache (reclaimable, shared) and are not counted here.
    """
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc")
    write_fp32_hf_folder(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path)], capture_output=True, text=True, check=True, timeout=300
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    nbytes = r["nbytes"]  # bf16 result, ~101 MB; the fp32 files are ~202 MB
    assert 95e6 < nbytes < 110e6
    rise = r["peak"] - r["anon0"]
    # Allow one fp32 tensor in flight (11.5 MB) and allocator slack, but not a second copy of the weights.
    assert rise < 1.25 * nbytes, r


def test_peek_reads_the_config_without_the_weights(tmp_path):
    sd = meta_state()
    one = write_meta(tmp_path / "one", sd)
    two = write_meta(tmp_path / "two", sd, shards=2)
    full = W.read_llama_decoder(one).config
    assert W.peek_llama_config(one) == full
    assert W.peek_llama_config(two / "params.json") == full
    with pytest.raises(WeightsError, match="not a LLaMA weights folder"):
        W.peek_llama_config(tmp_path)


def test_sha256_file_is_the_real_digest_and_notices_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMOVIEW_HOME", str(tmp_path / "home"))
    path = tmp_path / "blob.bin"
    path.write_bytes(b"a" * 1000)
    assert W.sha256_file(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    path.write_bytes(b"b" * 1001)  # another size (and time): hashed again, not remembered
    assert W.sha256_file(path) == hashlib.sha256(b"b" * 1001).hexdigest()


def test_the_offline_switches_are_set_in_one_place_only():
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE: set by pneumoview/inference/__init__.py, nowhere else."""
    package = Path(W.__file__).resolve().parents[1]
    setters = sorted(
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if 'environ["HF_HUB_OFFLINE"]' in p.read_text(encoding="utf-8")
    )
    assert setters == ["inference/__init__.py"]
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
