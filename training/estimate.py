"""Rough time and memory estimates for a training run, shown before it starts (wizard, CLI).

Memory = frozen base weights in their dtype (or ~0.56 byte/parameter for a 4-bit decoder)
+ trainable parameters x 16 bytes (fp32 weight, gradient, two AdamW moments)
+ activations kept for the backward pass (gradients flow through the frozen towers to the
adapters of the early blocks), with or without gradient checkpointing. Parameter counts come
from the architecture built on the meta device (exact); the activation factors and the
throughputs are calibrated guesses, and the estimate says so.
"""

from __future__ import annotations

from typing import Any

#: Saved activation values per token per width unit per block (without / with checkpointing).
_ACT_FACTOR = {False: 18.0, True: 2.0}
#: Images per second for training (forward + backward) by (device type, size class): rough.
_THROUGHPUT = {("cpu", "tiny"): 40.0, ("cpu", "full"): 0.05, ("cuda", "tiny"): 2000.0, ("cuda", "full"): 10.0}


def estimate_run(
    architecture: Any,
    *,
    n_images: int,
    epochs: int,
    folds_run: int,
    of_folds: int,
    final_model: bool,
    device: str,
    batch_size: int = 16,
    base_dtype_bytes: int = 2,
    gradient_checkpointing: bool = False,
    decoder_4bit: bool = False,
) -> dict[str, Any]:
    """``{"memory_gb", "seconds", "trainable_parameters", "frozen_parameters", "notes"}``."""
    import torch

    from pneumoview.inference.config import load_config
    from pneumoview.inference.model import build_model, count_parameters

    config = (
        load_config(architecture)
        if isinstance(architecture, (str, bytes)) or hasattr(architecture, "is_file")
        else architecture
    )
    with torch.device("meta"):
        counts = count_parameters(build_model(config, device="meta"))
    vision_b = counts["vision"] * base_dtype_bytes
    decoder_b = counts["decoder"] * (0.56 if decoder_4bit else base_dtype_bytes)
    trainable_b = counts["trainable"] * 16
    v, d = config.vision, config.decoder
    tokens_v = (v.image_size // v.patch_size) ** 2 + 1
    factor = _ACT_FACTOR[gradient_checkpointing]
    act_b = (
        batch_size
        * base_dtype_bytes
        * factor
        * (tokens_v * v.width * v.layers + config.num_tokens * d.hidden_size * d.layers)
    )
    if gradient_checkpointing:  # one block is recomputed with all its activations at a time
        act_b += batch_size * base_dtype_bytes * _ACT_FACTOR[False] * tokens_v * v.width
    total = vision_b + decoder_b + trainable_b + act_b + 0.5e9 * (device == "cuda")  # CUDA context
    size_class = "full" if counts["decoder"] > 1e9 else "tiny"
    ips = _THROUGHPUT[(("cuda" if device == "cuda" else "cpu"), size_class)]
    train_per_fold = n_images * (of_folds - 1) / of_folds
    images = epochs * (folds_run * (train_per_fold + n_images / of_folds / 3) + (n_images if final_model else 0))
    return {
        "memory_gb": round(total / 1e9, 2),
        "seconds": round(images / ips, 1),
        "seconds_per_epoch": round(train_per_fold / ips, 2),
        "trainable_parameters": counts["trainable"],
        "frozen_parameters": counts["frozen"],
        "notes": "rough estimate: parameter counts are exact, activation size and speed are calibrated guesses",
    }
