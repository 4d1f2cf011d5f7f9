"""Offline loaders for PneumoLLM's frozen base weights, one import for callers.

The work lives in smaller modules: :mod:`~pneumoview.inference.clip_weights` (CLIP ViT-L/14 visual
tower: OpenAI TorchScript with its SHA-256 checked, open_clip state dicts, safetensors),
:mod:`~pneumoview.inference.llama_weights` (LLaMA decoder: Hugging Face folders, Meta's
consolidated release), :mod:`~pneumoview.inference.fingerprints` (content fingerprints, file
SHA-256) and :mod:`~pneumoview.inference.weights_common` (the loaded-weights record, safe
``torch.load``). Nothing here contacts a model hub (the offline switches are set once, in
:mod:`pneumoview.inference`'s ``__init__``, before anything can import transformers), and nothing
is unpickled beyond ``torch.load(weights_only=True)`` except OpenAI's TorchScript archive, opened
only after its SHA-256 matches OpenAI's published hash.
"""

from __future__ import annotations

from pneumoview.inference.clip_weights import (
    OPENAI_CLIP_SHA256,
    clip_visual_shape,
    load_clip_visual,
    read_clip_visual,
)
from pneumoview.inference.fingerprints import (
    FINGERPRINT_EDGE,
    FINGERPRINT_SAMPLES,
    FINGERPRINT_VERSION,
    fingerprint_state,
    sha256_file,
)
from pneumoview.inference.llama_weights import (
    LLAMA_LAYER_TENSORS,
    load_llama_decoder,
    peek_llama_config,
    read_llama_decoder,
)
from pneumoview.inference.weights_common import DEMO_WEIGHTS_KEY, LoadedWeights

__all__ = [
    "DEMO_WEIGHTS_KEY",
    "FINGERPRINT_EDGE",
    "FINGERPRINT_SAMPLES",
    "FINGERPRINT_VERSION",
    "LLAMA_LAYER_TENSORS",
    "OPENAI_CLIP_SHA256",
    "LoadedWeights",
    "clip_visual_shape",
    "fingerprint_state",
    "load_clip_visual",
    "load_llama_decoder",
    "peek_llama_config",
    "read_clip_visual",
    "read_llama_decoder",
    "sha256_file",
]
