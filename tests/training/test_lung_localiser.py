"""Training the lung localiser: numpy forward == torch forward, export, augmentation, a short fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pneumoview.dicom import lungs
from training.lung_localiser import (
    Augmenter,
    LocaliserConfig,
    LungUNet,
    MaskedSet,
    box_ious,
    export_arrays,
    group_folds,
    load_masked_set,
    predict_boxes,
    save_npz,
    train_localiser,
)


def _randomised_model(channels: tuple[int, ...], seed: int = 0) -> LungUNet:
    """A model in eval mode whose BatchNorm statistics are not the identity (so folding is tested)."""
    torch.manual_seed(seed)
    model = LungUNet(channels)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("channels,size", [((8, 16, 32, 48, 64), 96), ((4, 8, 12), 40)])
def test_numpy_forward_equals_torch_forward(tmp_path: Path, channels: tuple[int, ...], size: int) -> None:
    model = _randomised_model(channels)
    config = LocaliserConfig(input_size=size, channels=channels)
    path = save_npz(model, config, tmp_path / "w.npz")
    net = lungs.LungNet.from_npz(path)
    assert net.channels == channels and net.input_size == size
    x = lungs.standardise(np.random.default_rng(0).random((size, size), dtype=np.float32))
    with torch.no_grad():
        expected = model(torch.from_numpy(x)[None, None])[0, 0].numpy()
    got = net.logits(x)
    assert got.shape == expected.shape == (size, size)
    assert np.abs(got - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())


def test_export_holds_config_and_only_float32(tmp_path: Path) -> None:
    model = _randomised_model((4, 8))
    arrays = export_arrays(model, LocaliserConfig(input_size=32, channels=(4, 8)), {"note": "x"})
    assert arrays["config"].dtype == np.uint8
    assert all(v.dtype == np.float32 for k, v in arrays.items() if k != "config")
    assert "enc0.0.w" in arrays and "dec0.1.b" in arrays and "head.w" in arrays
    assert not any("running" in k or "bn" in k for k in arrays)


def _synthetic_set(n: int = 6, size: int = 64) -> MaskedSet:
    """Two dark ellipses ("lungs") on a bright body, with the matching masks."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images, masks = [], []
    for _ in range(n):
        cy, dx, ry, rx = (
            rng.uniform(0.45, 0.55),
            rng.uniform(0.18, 0.24),
            rng.uniform(0.25, 0.32),
            rng.uniform(0.1, 0.14),
        )
        m = (((yy - cy) / ry) ** 2 + ((xx - 0.5 + dx) / rx) ** 2 < 1) | (
            ((yy - cy) / ry) ** 2 + ((xx - 0.5 - dx) / rx) ** 2 < 1
        )
        images.append(np.where(m, 0.25, 0.8).astype(np.float32) + rng.normal(0, 0.03, (size, size)).astype(np.float32))
        masks.append(m.astype(np.float32))
    images_a, masks_a = np.stack(images).clip(0, 1), np.stack(masks)
    boxes = np.array([lungs.mask_box(m > 0.5) for m in masks_a])
    return MaskedSet(
        images_a,
        masks_a,
        images_a[:, ::2, ::2].copy(),
        boxes,
        np.full((n, 2), size),
        [f"g{i % 3}" for i in range(n)],
        [f"im{i}" for i in range(n)],
    )


def test_augmenter_batches_are_standardised_and_binary() -> None:
    config = LocaliserConfig(input_size=32, batch_size=8, negative_fraction=0.5)
    x, y = Augmenter(_synthetic_set(), config, seed=1).batch()
    assert x.shape == y.shape == (8, 1, 32, 32)
    assert torch.allclose(x.mean(dim=(2, 3)), torch.zeros(8, 1), atol=1e-4)
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    x2, _ = Augmenter(_synthetic_set(), config, seed=1).batch()
    assert torch.equal(x, x2)  # seeded: reproducible


def test_a_few_training_steps_reduce_the_loss() -> None:
    config = LocaliserConfig(input_size=32, channels=(4, 8, 16), steps=60, batch_size=8, lr=1e-2, seed=0, threads=1)
    model, losses = train_localiser(_synthetic_set(), config)
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    assert not model.training


def test_group_folds_keep_groups_together() -> None:
    groups = [f"g{i // 2}" for i in range(20)]
    folds = group_folds(groups, 5)
    assert sorted(np.concatenate(folds).tolist()) == list(range(20))
    for fold in folds:
        inside = {groups[i] for i in fold}
        outside = {groups[i] for i in range(20) if i not in set(fold.tolist())}
        assert not inside & outside


@pytest.mark.shared
@pytest.mark.slow
def test_load_masked_set_and_predict_with_the_shipped_weights(shared_data: Path) -> None:
    data = load_masked_set(shared_data / "cxr")
    assert len(data.names) == 60 and data.inputs.shape[1:] == (64, 64) and data.images.shape[1:] == (256, 256)
    assert len(set(data.groups)) == 34
    # the torch twin loaded with the shipped weights reproduces locate_lungs on the real set
    net = lungs.load_network()
    model = LungUNet(net.channels).eval()
    with torch.no_grad():
        for i, block in enumerate(model.enc):
            _load_block(block, net.params, f"enc{i}")
        for j, block in enumerate(model.dec):
            _load_block(block, net.params, f"dec{j}")
        model.head.weight.copy_(torch.from_numpy(net.params["head.w"]))
        model.head.bias.copy_(torch.from_numpy(net.params["head.b"]))
    ious = box_ious(predict_boxes(model, data, threshold=net.threshold), data.boxes)
    assert ious.mean() >= 0.85 and ious.min() >= 0.5


def _load_block(block: torch.nn.Sequential, params: dict[str, np.ndarray], prefix: str) -> None:
    """Folded weights into a conv+BN block: BN set to the identity."""
    for k in range(2):
        conv, bn = block[3 * k], block[3 * k + 1]
        conv.weight.copy_(torch.from_numpy(params[f"{prefix}.{k}.w"]))
        bn.weight.fill_(1.0)
        bn.bias.copy_(torch.from_numpy(params[f"{prefix}.{k}.b"]))
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)
