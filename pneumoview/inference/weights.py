"""Offline loaders for PneumoLLM's frozen base weights (CLIP ViT-L/14 visual tower, LLaMA decoder).

Nothing here contacts a model hub: every loader reads a local file or folder, the Hugging
Face offline switches are set before ``transformers`` can be imported through this package,
and nothing is ever unpickled beyond ``torch.load(weights_only=True)`` except OpenAI's
TorchScript archive, which is opened only after its SHA-256 matches OpenAI's published hash.

CLIP, in any of the forms users have (only ``visual.*`` is kept, prefix stripped, i.e. the
keys of open_clip's ``VisionTransformer``: ``conv1.weight``, ``transformer.resblocks.0.ln_1.weight``...):

* OpenAI's ``ViT-L-14.pt`` -- a TorchScript archive; SHA-256 checked, then ``torch.jit.load``;
* an open_clip state dict (``.bin``/``.pt``/``.pth``, optionally wrapped in ``{"state_dict": ...}``
  with DDP's ``module.`` prefix) -- ``torch.load(weights_only=True, mmap=True)``;
* ``.safetensors``.

LLaMA (keys of Hugging Face's ``LlamaModel`` without ``model.``: ``layers.N.self_attn.q_proj.weight``,
``norm.weight``; token embeddings, LM head and stored rotary buffers are never loaded):

* a Hugging Face folder: ``config.json`` + ``*.safetensors`` shards (or ``pytorch_model*.bin``);
* Meta's original release: ``params.json`` + ``consolidated.NN.pth`` (one or several model-parallel
  shards, merged), with the rotary q/k permutation that makes Meta's interleaved rotary pairs
  match Hugging Face's half-split ``rotate_half`` attention.

Memory: tensors are read in their stored dtype one at a time and converted to the requested
dtype immediately, so peak host memory is about the size of the weights in the target dtype
(plus one tensor), never an fp32 copy of a half-precision model.

Fingerprints (:func:`fingerprint_state`) identify base weights by *content*, not by file: see
that function for exactly what they cover. Every bundle records the fingerprints of the base
weights it was trained on, and the engine refuses other base weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Never contact a model hub, whoever imports transformers / huggingface_hub after us.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402  (after the offline switches on purpose)

from pneumoview.errors import WeightsError  # noqa: E402
from pneumoview.hashing import file_sha256  # noqa: E402

Tensor = torch.Tensor

#: SHA-256 of OpenAI's CLIP TorchScript archives, as published in their download URLs
#: (``https://openaipublic.azureedge.net/clip/models/<sha256>/<name>.pt``).
OPENAI_CLIP_SHA256: dict[str, str] = {
    "ViT-L-14.pt": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    "ViT-L-14-336px.pt": "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
    "ViT-B-16.pt": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
    "ViT-B-32.pt": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
}

#: Fingerprint format tag; change it whenever :func:`fingerprint_state` changes.
FINGERPRINT_VERSION = "pvfp1"
#: Elements sampled (evenly strided) from each tensor for the fingerprint, plus its first/last few.
FINGERPRINT_SAMPLES = 4096
FINGERPRINT_EDGE = 64

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

ProgressFn = Callable[[int, int], None]
#: Marks the demo model's random base weights: safetensors metadata value "1" / config.json ``true``.
DEMO_WEIGHTS_KEY = "pneumoview_demo"


@dataclass
class LoadedWeights:
    """Base weights read from disk, ready for :func:`pneumoview.inference.model.load_base_weights`.

    ``fingerprint`` is computed on the tensors as stored (before any dtype conversion), so the
    same file gives the same fingerprint whatever precision the engine runs in.
    """

    state: dict[str, Tensor]
    config: dict
    fingerprint: str
    source_format: str  # "openai-torchscript", "torch-state-dict", "safetensors", "hf-folder", "meta-consolidated"
    source_dtype: torch.dtype | None
    path: Path
    notes: list[str] = field(default_factory=list)
    demo: bool = False  # the random demo weights (marked in their files), never a real model


    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state.values())


# ----------------------------------------------------------------------------------------------
# Fingerprints


def _tensor_digest(key: str, tensor: Tensor) -> bytes:
    """SHA-256 of one tensor's name, shape and a sample of its values (cast to float32)."""
    h = hashlib.sha256()
    h.update(key.encode())
    h.update(repr(tuple(tensor.shape)).encode())
    flat = tensor.detach().reshape(-1)
    n = flat.numel()
    if n <= FINGERPRINT_SAMPLES + 2 * FINGERPRINT_EDGE:
        sample = flat
    else:
        idx = torch.linspace(0, n - 1, FINGERPRINT_SAMPLES, dtype=torch.float64).round().long()
        sample = torch.cat([flat[:FINGERPRINT_EDGE], flat[idx], flat[-FINGERPRINT_EDGE:]])
    if sample.is_floating_point():
        sample = sample.to(device="cpu", dtype=torch.float32)
    else:
        sample = sample.to(device="cpu", dtype=torch.int64)
    h.update(sample.contiguous().numpy().tobytes())
    return h.digest()


def _combine_digests(digests: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()
    for key in sorted(digests):
        h.update(digests[key])
    return f"{FINGERPRINT_VERSION}:{h.hexdigest()}"


def fingerprint_state(state: Mapping[str, Tensor]) -> str:
    """Content fingerprint of a state dict: ``"pvfp1:<sha256 hex>"``.

    Covers, for every tensor (in sorted key order): its key, its shape, its first and last
    64 values and 4,096 values at evenly spaced positions, each cast to float32. It does not
    cover the storage dtype: a float16 tensor and its exact float32 up-cast give the same
    fingerprint (so OpenAI's fp16 archive and an fp32 re-save of it agree), while a lossy
    conversion (fp16 -> bf16, quantisation, fine-tuning) changes it. Weights read in another
    file format (Meta consolidated vs. a lossless Hugging Face conversion) give the same
    fingerprint because keys are normalised to Hugging Face names first. It is a sampled
    identity check against mix-ups, not a cryptographic hash of every byte.
    """
    return _combine_digests({key: _tensor_digest(key, t) for key, t in state.items()})


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a whole file, read in 4 MiB chunks.

    Remembered for this process by (resolved path, size, modification time): reloading the same
    890 MB CLIP archive does not hash it again, while a replaced or modified file is re-hashed.
    """
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _SHA256_CACHE:
        return _SHA256_CACHE[key]
    _SHA256_CACHE[key] = file_sha256(path, chunk=chunk)
    return _SHA256_CACHE[key]


# ----------------------------------------------------------------------------------------------
# Small helpers


def _torch_load(path: Path) -> object:
    """``torch.load`` that never unpickles code: weights_only, memory-mapped where possible."""
    mmap = zipfile.is_zipfile(path)  # mmap needs the zip format (torch >= 1.6 default)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            "refusing to unpickle this file: it holds more than tensors "
            f"(only weights_only=True loads are allowed): {exc}".splitlines()[0],
            path=path,
        ) from exc
    except (RuntimeError, ValueError, EOFError, OSError, AttributeError, TypeError) as exc:
        raise WeightsError(f"cannot read as a plain tensor file: {exc}".splitlines()[0], path=path) from exc


def _convert(tensor: Tensor, dtype: torch.dtype | None, device: str | torch.device | None = None) -> Tensor:
    """Tensor in ``dtype`` (floating point only) on ``device``; unchanged where nothing is asked."""
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    if device is not None and tensor.device != torch.device(device):
        tensor = tensor.to(device)
    return tensor


def _dominant_dtype(state: Mapping[str, Tensor]) -> torch.dtype | None:
    sizes: dict[torch.dtype, int] = {}
    for t in state.values():
        sizes[t.dtype] = sizes.get(t.dtype, 0) + t.numel()
    return max(sizes, key=sizes.__getitem__) if sizes else None


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a ``<name>/code/`` folder; torch.save files are not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in name for name in zf.namelist())


# ----------------------------------------------------------------------------------------------
# CLIP visual tower


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"expected a state dict (name -> tensor), found {type(obj).__name__}", path=path)
    state = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise WeightsError("the file holds no tensors", path=path)
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _keep_visual(state: Mapping[str, Tensor], path: Path) -> dict[str, Tensor]:
    visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    if visual:
        return visual
    if "conv1.weight" in state and "class_embedding" in state:  # already a bare visual tower
        return dict(state)
    if any(k.startswith("visual.trunk.") or k.startswith("trunk.") for k in state):
        raise WeightsError("this is a timm-based CLIP; PneumoLLM needs OpenAI's ViT-L/14 tower", path=path)
    raise WeightsError(
        "no CLIP visual tower in this file (no 'visual.*' tensors): is it a CLIP checkpoint?", path=path
    )


def clip_visual_shape(state: Mapping[str, Tensor]) -> dict[str, int]:
    """Architecture read back from a visual state dict: width, layers, patch_size, image_size, output_dim."""
    try:
        conv = state["conv1.weight"]  # [width, 3, patch, patch]
        pos = state["positional_embedding"]  # [1 + (image/patch)^2, width]
    except KeyError as exc:
        raise WeightsError(f"CLIP visual tower lacks {exc.args[0]!r}") from exc
    layers = 1 + max(
        (int(m.group(1)) for k in state if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))), default=-1
    )
    grid = round((pos.shape[0] - 1) ** 0.5)
    proj = state.get("proj")
    return {
        "width": int(conv.shape[0]),
        "layers": layers,
        "patch_size": int(conv.shape[-1]),
        "image_size": int(grid * conv.shape[-1]),
        "output_dim": int(proj.shape[1]) if proj is not None else 0,
    }


def read_clip_visual(
    path: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    expected_sha256: str | None = None,
    allow_unverified: bool = False,
    device: str | torch.device | None = None,
) -> LoadedWeights:
    """Read CLIP's visual tower from a local file (OpenAI TorchScript, open_clip state dict, safetensors).

    A TorchScript archive is opened only if its SHA-256 equals ``expected_sha256`` or, by default,
    one of OpenAI's published hashes (:data:`OPENAI_CLIP_SHA256`); ``allow_unverified=True`` is
    the user's explicit override. Raises :class:`WeightsError` with the reason otherwise.
    ``dtype`` / ``device``: each tensor is converted / moved as it is kept (None: as stored, CPU).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError("CLIP weights file not found", path=path)
    notes: list[str] = []
    demo = False
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                demo = (f.metadata() or {}).get(DEMO_WEIGHTS_KEY) == "1"
                raw = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - not a dict
        except (SafetensorError, OSError) as exc:
            raise WeightsError(f"cannot read safetensors file: {exc}", path=path) from exc
        fmt = "safetensors"
    elif _is_torchscript(path):
        digest = sha256_file(path)
        accepted = {expected_sha256.lower()} if expected_sha256 else set(OPENAI_CLIP_SHA256.values())
        if digest not in accepted:
            if not allow_unverified:
                known = OPENAI_CLIP_SHA256.get(path.name, OPENAI_CLIP_SHA256["ViT-L-14.pt"])
                wanted = expected_sha256 or known
                raise WeightsError(
                    f"SHA-256 {digest[:16]}... of this TorchScript archive does not match the published "
                    f"{wanted[:16]}...: the file is damaged or not OpenAI's (re-download it, or allow "
                    "unverified weights explicitly)",
                    path=path,
                )
            notes.append(f"unverified TorchScript archive accepted by the user (sha256 {digest})")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": still the format
                module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise WeightsError(f"cannot open TorchScript archive: {exc}", path=path) from exc
        raw = {k: v.detach() for k, v in module.state_dict().items()}
        del module
        fmt = "openai-torchscript"
    else:
        raw = _unwrap_state_dict(_torch_load(path), path)
        fmt = "torch-state-dict"
    visual = _keep_visual(raw, path)
    del raw
    fingerprint = fingerprint_state(visual)
    source_dtype = _dominant_dtype(visual)
    state = {k: _convert(v, dtype, device).contiguous() for k, v in visual.items()}
    return LoadedWeights(
        state=state,
        config=clip_visual_shape(state),
        fingerprint=fingerprint,
        source_format=fmt,
        source_dtype=source_dtype,
        path=path,
        notes=notes,
        demo=demo,
    )


def load_clip_visual(path: str | os.PathLike[str], **kwargs: object) -> dict[str, Tensor]:
    """State dict of CLIP's visual tower, keys without ``visual.`` (see :func:`read_clip_visual`)."""
    return read_clip_visual(path, **kwargs).state  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# LLaMA decoder


def _hf_decoder_key(key: str) -> str | None:
    """Hugging Face checkpoint key -> our LlamaModel key, or None to drop it."""
    if key.startswith("model."):
        key = key[len("model."):]
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
        f"layers.{i}.{name}" for i in range(n_layers) for name in LLAMA_LAYER_TENSORS if f"layers.{i}.{name}" not in state
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
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open is not a dict
                    if wanted(key):
                        yield key, f.get_tensor(key)
        except SafetensorError as exc:
            raise WeightsError(f"cannot read safetensors shard: {exc}", path=file) from exc
    else:
        state = _unwrap_state_dict(_torch_load(file), file)
        for key in list(state):
            tensor = state.pop(key)
            if wanted(key):
                yield key, tensor


def _read_hf_folder(
    folder: Path, dtype: torch.dtype | None, progress: ProgressFn | None, device: str | torch.device | None
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
            state[name] = _convert(tensor, dtype, device)
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


def _meta_config(params: Mapping[str, object], state: Mapping[str, Tensor]) -> dict:
    """A Hugging Face-style LlamaConfig dict from Meta's ``params.json`` (sizes read from the tensors)."""
    dim = int(params["dim"])  # type: ignore[arg-type]
    n_heads = int(params["n_heads"])  # type: ignore[arg-type]
    n_kv = int(params.get("n_kv_heads") or n_heads)  # type: ignore[arg-type]
    intermediate = int(state["layers.0.mlp.gate_proj.weight"].shape[0])
    vocab = int(params.get("vocab_size") or -1)  # type: ignore[arg-type]
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": dim,
        "intermediate_size": intermediate,
        "num_hidden_layers": int(params["n_layers"]),  # type: ignore[arg-type]
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "rms_norm_eps": float(params.get("norm_eps", 1e-6)),  # type: ignore[arg-type]
        "rope_theta": float(params.get("rope_theta", 10000.0)),  # type: ignore[arg-type]
        "max_position_embeddings": int(params.get("max_seq_len", 2048)),  # type: ignore[arg-type]
        "vocab_size": vocab if vocab > 0 else 32000,
        "hidden_act": "silu",
    }


def _read_meta_folder(
    folder: Path, dtype: torch.dtype | None, progress: ProgressFn | None, device: str | torch.device | None
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
        state[name] = _convert(tensor, dtype, device).contiguous()

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
) -> LoadedWeights:
    """Read LLaMA decoder layers from a Hugging Face folder or Meta's consolidated release.

    ``path`` is the folder (or a file inside it: ``config.json``, ``params.json``, a shard).
    ``dtype`` None keeps the stored dtype; otherwise each tensor is converted as it is read.
    ``device`` (e.g. "cuda") moves each tensor there as it is read, so host memory never holds
    the whole decoder; the fingerprint is still taken from the stored values.
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not folder.is_dir():
        raise WeightsError("LLaMA weights folder not found", path=path)
    if (folder / "config.json").is_file():
        return _read_hf_folder(folder, dtype, progress, device)
    if (folder / "params.json").is_file():
        return _read_meta_folder(folder, dtype, progress, device)
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
