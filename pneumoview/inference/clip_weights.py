"""CLIP ViT-L/14 visual tower from a local file, in any of the forms users have (only ``visual.*``
is kept, prefix stripped: the keys of open_clip's ``VisionTransformer``):

* OpenAI's ``ViT-L-14.pt`` -- a TorchScript archive; SHA-256 checked, then ``torch.jit.load``;
* an open_clip state dict (``.bin``/``.pt``/``.pth``, optionally wrapped in ``{"state_dict": ...}``
  with DDP's ``module.`` prefix) -- ``torch.load(weights_only=True, mmap=True)``;
* ``.safetensors``.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from pneumoview.errors import WeightsError
from pneumoview.inference.fingerprints import fingerprint_state, sha256_file
from pneumoview.inference.weights_common import (
    DEMO_WEIGHTS_KEY,
    LoadedWeights,
    _convert,
    _dominant_dtype,
    _torch_load,
    _unwrap_state_dict,
)

Tensor = torch.Tensor


#: SHA-256 of OpenAI's CLIP TorchScript archives, as published in their download URLs
#: (``https://openaipublic.azureedge.net/clip/models/<sha256>/<name>.pt``).
OPENAI_CLIP_SHA256: dict[str, str] = {
    "ViT-L-14.pt": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    "ViT-L-14-336px.pt": "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
    "ViT-B-16.pt": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
    "ViT-B-32.pt": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
}


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a ``<name>/code/`` folder; torch.save files are not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in name for name in zf.namelist())


def _keep_visual(state: Mapping[str, Tensor], path: Path) -> dict[str, Tensor]:
    visual = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    if visual:
        return visual
    if "conv1.weight" in state and "class_embedding" in state:  # already a bare visual tower
        return dict(state)
    if any(k.startswith(("visual.trunk.", "trunk.")) for k in state):
        raise WeightsError("this is a timm-based CLIP; PneumoLLM needs OpenAI's ViT-L/14 tower", path=path)
    raise WeightsError("no CLIP visual tower in this file (no 'visual.*' tensors): is it a CLIP checkpoint?", path=path)


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
        from pneumoview.inference import safetensors_mmap

        raw, metadata = safetensors_mmap.load(path)
        demo = metadata.get(DEMO_WEIGHTS_KEY) == "1"
        fmt = "safetensors"
    elif _is_torchscript(path):
        raw = _read_torchscript(path, expected_sha256, allow_unverified, notes)
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


def _read_torchscript(
    path: Path, expected_sha256: str | None, allow_unverified: bool, notes: list[str]
) -> dict[str, Tensor]:
    """The tensors of an OpenAI TorchScript archive whose SHA-256 is accepted (see :func:`read_clip_visual`);
    an unverified archive the user allowed adds a line to ``notes``."""
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
    return raw


def load_clip_visual(path: str | os.PathLike[str], **kwargs: object) -> dict[str, Tensor]:
    """State dict of CLIP's visual tower, keys without ``visual.`` (see :func:`read_clip_visual`)."""
    return read_clip_visual(path, **kwargs).state  # type: ignore[arg-type]
