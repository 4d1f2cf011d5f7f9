"""LLaMA decoder layers from a local folder (keys of Hugging Face's ``LlamaModel`` without ``model.``:
``layers.N.self_attn.q_proj.weight``, ``norm.weight``; token embeddings, LM head and stored rotary
buffers are never loaded):

* a Hugging Face folder: ``config.json`` + ``*.safetensors`` shards (or ``pytorch_model*.bin``);
* Meta's original release: ``params.json`` + ``consolidated.NN.pth`` (one or several model-parallel
  shards, merged), with the rotary q/k permutation that makes Meta's interleaved rotary pairs
  match Hugging Face's half-split ``rotate_half`` attention.

Each tensor is read in its stored dtype, fingerprinted, then passed through ``transform`` (default:
cast to the requested dtype / device) before the next is read, so peak host memory is about the
prepared decoder (bf16, or int8 / int4 when the transform quantises) plus one tensor -- or, when the
transform writes its entries elsewhere and keeps meta tensors (the engine's streamed prepared-weights
entry), about one tensor.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from pneumoview.errors import WeightsError
from pneumoview.inference.fingerprints import _combine_digests, _tensor_digest
from pneumoview.inference.weights_common import (
    DEMO_WEIGHTS_KEY,
    LoadedWeights,
    _convert,
    _torch_load,
    _unwrap_state_dict,
)

Tensor = torch.Tensor
ProgressFn = Callable[[int, int], None]
#: (name, tensor as stored) -> the entries to keep for it (e.g. a cast copy, or int8 + scale).
TransformFn = Callable[[str, Tensor], Mapping[str, Tensor]]

#: Meta consolidated -> Hugging Face LlamaModel names (per layer), and how shards are merged:
#: 0 = concatenated along dim 0 (column-parallel), 1 = along dim 1 (row-parallel), None = replicated.
_META_LAYER_KEYS: dict[str, tuple[str, int | None]] = {
    "attention.wq.weight": ("self_attn.q_proj.weight", 0),
    "attention.wk.weight": ("self_attn.k_proj.weight", 0),
    "attention.wv.weight": ("self_attn.v_proj.weight", 0),
    "attention.wo.weight": ("self_attn.o_proj.weight", 1),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", 0),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", 1),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", 0),
    "attention_norm.weight": ("input_layernorm.weight", None),
    "ffn_norm.weight": ("post_attention_layernorm.weight", None),
}
#: The nine tensors every decoder layer must have (Hugging Face names).
LLAMA_LAYER_TENSORS: tuple[str, ...] = tuple(name for name, _ in _META_LAYER_KEYS.values())


def _hf_decoder_key(key: str) -> str | None:
    """Hugging Face checkpoint key -> our LlamaModel key, or None to drop it."""
    key = key.removeprefix("model.")
    if key.startswith("layers.") and ".rotary_emb." not in key:
        return key
    if key == "norm.weight":
        return key
    return None  # embed_tokens, lm_head, rotary inv_freq buffers, anything else


def _meta_permute(w: Tensor, n_heads: int) -> Tensor:
    """Meta's interleaved rotary pairs -> Hugging Face's half-split layout, for wq / wk [out, in].

    ``w.view(H, hd//2, 2, in).transpose(1, 2).reshape(out, in)``: within each head, output rows
    (0,1),(2,3)... become rows (0, hd/2),(1, hd/2+1)..., which is what ``rotate_half`` pairs.
    """
    out_dim, in_dim = w.shape
    return w.view(n_heads, out_dim // n_heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def _check_decoder_complete(state: Mapping[str, Tensor], n_layers: int, path: Path) -> None:
    missing = [
        f"layers.{i}.{name}"
        for i in range(n_layers)
        for name in LLAMA_LAYER_TENSORS
        if f"layers.{i}.{name}" not in state
    ]
    if "norm.weight" not in state:
        missing.append("norm.weight")
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise WeightsError(
            f"LLaMA weights are incomplete: missing {', '.join(missing[:3])}{more} (a shard missing or truncated?)",
            path=path,
        )
    extra = sorted(k for k in state if (m := re.match(r"layers\.(\d+)\.", k)) and int(m.group(1)) >= n_layers)
    if extra:
        raise WeightsError(f"LLaMA weights have more layers than the config says ({extra[0]})", path=path)


def _hf_weight_files(folder: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, OSError) as exc:
                raise WeightsError(f"unreadable shard index: {exc}", path=index) from exc
            files = [folder / name for name in sorted(set(weight_map.values()))]
            absent = [f.name for f in files if not f.is_file()]
            if absent:
                raise WeightsError(f"shard(s) listed in the index are missing: {', '.join(absent)}", path=folder)
            return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        files = sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise WeightsError("no weight files (*.safetensors or pytorch_model*.bin) in this folder", path=folder)
    return files


def _iter_file_tensors(file: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, Tensor]]:
    """(key, tensor) pairs of one weight file in stored dtype, one tensor in memory at a time."""
    if file.suffix == ".safetensors":
        from pneumoview.inference.safetensors_mmap import iter_tensors

        yield from iter_tensors(file, wanted)  # each tensor its own map: no copy, no whole-file residency
    else:
        state = _unwrap_state_dict(_torch_load(file), file)
        for key in list(state):
            tensor = state.pop(key)
            if wanted(key):
                yield key, tensor


def _read_hf_folder(
    folder: Path,
    dtype: torch.dtype | None,
    progress: ProgressFn | None,
    device: str | torch.device | None,
    transform: TransformFn | None = None,
) -> LoadedWeights:
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"cannot read config.json: {exc}", path=config_path) from exc
    archs = config.get("architectures") or []
    if config.get("model_type") != "llama" and not any(str(a).startswith("Llama") for a in archs):
        raise WeightsError(
            f"not a LLaMA-architecture model (model_type={config.get('model_type')!r}); "
            "PneumoLLM needs LLaMA decoder layers",
            path=config_path,
        )
    n_layers = int(config.get("num_hidden_layers", -1))
    files = _hf_weight_files(folder)
    state: dict[str, Tensor] = {}
    digests: dict[str, bytes] = {}
    dtypes: dict[torch.dtype, int] = {}
    for i, file in enumerate(files):
        for key, tensor in _iter_file_tensors(file, lambda k: _hf_decoder_key(k) is not None):
            name = _hf_decoder_key(key)
            assert name is not None
            digests[name] = _tensor_digest(name, tensor)
            dtypes[tensor.dtype] = dtypes.get(tensor.dtype, 0) + tensor.numel()
            if transform is None:
                state[name] = _convert(tensor, dtype, device)
            else:
                state.update(transform(name, tensor))
            del tensor
        if progress is not None:
            progress(i + 1, len(files))
    _check_decoder_complete(state, n_layers, folder)
    return LoadedWeights(
        state=state,
        config=config,
        fingerprint=_combine_digests(digests),
        source_format="hf-folder",
        source_dtype=max(dtypes, key=dtypes.__getitem__) if dtypes else None,
        path=folder,
        demo=bool(config.get(DEMO_WEIGHTS_KEY)),
    )


def _meta_config(params: Mapping[str, Any], state: Mapping[str, Tensor]) -> dict:
    """A Hugging Face-style LlamaConfig dict from Meta's ``params.json`` (sizes read from the tensors)."""
    dim = int(params["dim"])
    n_heads = int(params["n_heads"])
    n_kv = int(params.get("n_kv_heads") or n_heads)
    intermediate = int(state["layers.0.mlp.gate_proj.weight"].shape[0])
    vocab = int(params.get("vocab_size") or -1)
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": dim,
        "intermediate_size": intermediate,
        "num_hidden_layers": int(params["n_layers"]),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "rms_norm_eps": float(params.get("norm_eps", 1e-6)),
        "rope_theta": float(params.get("rope_theta", 10000.0)),
        "max_position_embeddings": int(params.get("max_seq_len", 2048)),
        "vocab_size": vocab if vocab > 0 else 32000,
        "hidden_act": "silu",
    }


def _read_meta_folder(
    folder: Path,
    dtype: torch.dtype | None,
    progress: ProgressFn | None,
    device: str | torch.device | None,
    transform: TransformFn | None = None,
) -> LoadedWeights:
    params_path = folder / "params.json"
    try:
        params = json.loads(params_path.read_text())
        n_layers, n_heads = int(params["n_layers"]), int(params["n_heads"])
        n_kv = int(params.get("n_kv_heads") or n_heads)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"cannot read params.json: {exc}", path=params_path) from exc
    shard_files = sorted(folder.glob("consolidated.*.pth"))
    if not shard_files:
        raise WeightsError("no consolidated.*.pth beside params.json", path=folder)
    shards = [_unwrap_state_dict(_torch_load(f), f) for f in shard_files]  # memory-mapped, not read yet
    state: dict[str, Tensor] = {}
    digests: dict[str, bytes] = {}
    dtypes: dict[torch.dtype, int] = {}

    def put(name: str, tensor: Tensor) -> None:
        digests[name] = _tensor_digest(name, tensor)
        dtypes[tensor.dtype] = dtypes.get(tensor.dtype, 0) + tensor.numel()
        if transform is None:
            state[name] = _convert(tensor, dtype, device).contiguous()
        else:
            state.update(transform(name, tensor.contiguous()))

    for i in range(n_layers):
        for meta_name, (hf_name, cat_dim) in _META_LAYER_KEYS.items():
            key = f"layers.{i}.{meta_name}"
            parts = [s.pop(key) for s in shards if key in s]
            if not parts:
                continue  # reported by _check_decoder_complete
            if cat_dim is None or len(parts) == 1:
                tensor = parts[0]
            else:
                tensor = torch.cat(parts, dim=cat_dim)
            if meta_name == "attention.wq.weight":
                tensor = _meta_permute(tensor, n_heads)
            elif meta_name == "attention.wk.weight":
                tensor = _meta_permute(tensor, n_kv)
            put(f"layers.{i}.{hf_name}", tensor)
            del parts, tensor
        if progress is not None:
            progress(i + 1, n_layers + 1)
    if "norm.weight" in shards[0]:
        put("norm.weight", shards[0].pop("norm.weight"))
    del shards  # tok_embeddings, output, rope.freqs: never loaded
    _check_decoder_complete(state, n_layers, folder)
    if progress is not None:
        progress(n_layers + 1, n_layers + 1)
    return LoadedWeights(
        state=state,
        config=_meta_config(params, state),
        fingerprint=_combine_digests(digests),
        source_format="meta-consolidated",
        source_dtype=max(dtypes, key=dtypes.__getitem__) if dtypes else None,
        path=folder,
        notes=[f"{len(shard_files)} consolidated shard(s) merged"] if len(shard_files) > 1 else [],
    )


def read_llama_decoder(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    progress: ProgressFn | None = None,
    device: str | torch.device | None = None,
    transform: TransformFn | None = None,
) -> LoadedWeights:
    """Read LLaMA decoder layers from a Hugging Face folder or Meta's consolidated release.

    ``path`` is the folder (or a file inside it: ``config.json``, ``params.json``, a shard).
    ``dtype`` None keeps the stored dtype; otherwise each tensor is converted as it is read.
    ``device`` (e.g. "cuda") moves each tensor there as it is read, so host memory never holds
    the whole decoder; the fingerprint is still taken from the stored values.
    ``transform(name, stored tensor)`` replaces the cast when given: its entries are kept instead
    (e.g. :func:`pneumoview.inference.quant_cpu.state_transform`'s int8 weight + scale).
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not folder.is_dir():
        raise WeightsError("LLaMA weights folder not found", path=path)
    if (folder / "config.json").is_file():
        return _read_hf_folder(folder, dtype, progress, device, transform)
    if (folder / "params.json").is_file():
        return _read_meta_folder(folder, dtype, progress, device, transform)
    raise WeightsError(
        "not a LLaMA weights folder: expected config.json + *.safetensors (Hugging Face) "
        "or params.json + consolidated.*.pth (Meta)",
        path=folder,
    )


def peek_llama_config(path: str | os.PathLike[str]) -> dict:
    """The HF-style config of a LLaMA folder without reading its weights (to check sizes first)."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if (folder / "config.json").is_file():
        try:
            return json.loads((folder / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise WeightsError(f"cannot read config.json: {exc}", path=folder / "config.json") from exc
    if (folder / "params.json").is_file():
        try:
            params = json.loads((folder / "params.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise WeightsError(f"cannot read params.json: {exc}", path=folder / "params.json") from exc
        shards = sorted(folder.glob("consolidated.*.pth"))
        if not shards:
            raise WeightsError("no consolidated.*.pth beside params.json", path=folder)
        first = _unwrap_state_dict(_torch_load(shards[0]), shards[0])  # memory-mapped: only shapes are read
        w1 = first.get("layers.0.feed_forward.w1.weight")
        if w1 is None:
            raise WeightsError("consolidated shard lacks layers.0.feed_forward.w1.weight", path=shards[0])
        try:
            return _meta_config(params, {"layers.0.mlp.gate_proj.weight": torch.empty(w1.shape[0] * len(shards), 0)})
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"cannot read params.json: {exc}", path=folder / "params.json") from exc
    raise WeightsError(
        "not a LLaMA weights folder: expected config.json + *.safetensors (Hugging Face) "
        "or params.json + consolidated.*.pth (Meta)",
        path=folder,
    )


def load_llama_decoder(
    path: str | os.PathLike[str], dtype: torch.dtype | None = None
) -> tuple[dict[str, Tensor], dict]:
    """(state dict with Hugging Face LlamaModel keys, HF-style config dict); see :func:`read_llama_decoder`."""
    loaded = read_llama_decoder(path, dtype=dtype)
    return loaded.state, loaded.config
