"""From lung crops to the model's input tensor: the one normalisation inference and training share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pneumoview.errors import ConfigError
from pneumoview.inference.config import PreprocessingConfig


def _stats(preprocessing: PreprocessingConfig | Mapping[str, Any]) -> tuple[int, np.ndarray, np.ndarray]:
    if isinstance(preprocessing, PreprocessingConfig):
        size, mean, std = preprocessing.image_size, preprocessing.mean, preprocessing.std
    else:
        try:
            size, mean, std = preprocessing["image_size"], preprocessing["mean"], preprocessing["std"]
        except KeyError as exc:
            raise ConfigError(f"preprocessing lacks {exc.args[0]!r}") from exc
    mean_a = np.asarray(mean, dtype=np.float32).reshape(-1)
    std_a = np.asarray(std, dtype=np.float32).reshape(-1)
    if mean_a.shape != (3,) or std_a.shape != (3,) or np.any(std_a <= 0):
        raise ConfigError(f"preprocessing mean/std must be 3 numbers (std > 0), got {mean!r} / {std!r}")
    return int(size), mean_a, std_a


def preprocess_tensor(crops: np.ndarray, preprocessing: PreprocessingConfig | Mapping[str, Any]) -> Tensor:
    """Grey crops float32 [B, S, S] (or one [S, S]) in [0, 1] -> float32 [B, 3, S, S], normalised.

    The grey value is replicated to 3 channels, then ``(x - mean[c]) / std[c]`` with the
    statistics the model was trained with (ImageNet by default, as the reference).
    """
    array = np.asarray(crops)
    if array.ndim == 2:
        array = array[None]
    size, mean, std = _stats(preprocessing)
    if array.ndim != 3 or array.shape[1:] != (size, size):
        raise ValueError(f"expected grey crops of shape [B, {size}, {size}], got {list(np.shape(crops))}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"expected float crops in [0, 1], got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError("crops contain NaN or infinite values")
    grey = torch.from_numpy(np.ascontiguousarray(array)).unsqueeze(1)  # [B, 1, S, S]
    mean_t = torch.from_numpy(mean).view(1, 3, 1, 1)
    std_t = torch.from_numpy(std).view(1, 3, 1, 1)
    return (grey.expand(-1, 3, -1, -1) - mean_t) / std_t
