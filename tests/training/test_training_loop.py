"""Loop pieces: schedule, parameter groups, loss, checkpoints (atomic, no pickle)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from bundle_support import small_filesystem

from pneumoview.errors import BundleError
from training.checkpoint import (
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    restore_rng,
    rng_tensors,
    save_checkpoint,
)
from training.loop import TrainConfig, bce_one_hot_loss, epoch_order, lr_at, param_groups


def test_lr_warmup_then_cosine_to_floor() -> None:
    kw = {"total_steps": 100, "warmup_steps": 10, "lr": 3e-4, "warmup_lr": 5e-7, "min_lr": 1e-7}
    assert lr_at(0, **kw) == pytest.approx(5e-7)
    assert lr_at(5, **kw) == pytest.approx(5e-7 + (3e-4 - 5e-7) / 2)
    assert lr_at(10, **kw) == pytest.approx(3e-4)
    assert lr_at(55, **kw) == pytest.approx(1e-7 + (3e-4 - 1e-7) * 0.5)
    assert lr_at(100, **kw) == pytest.approx(1e-7)
    values = [lr_at(s, **kw) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_param_groups_no_decay_on_biases_and_1d() -> None:
    from pneumoview.inference.config import load_config
    from pneumoview.inference.model import build_model, trainable_parameters

    model = build_model(load_config("pneumollm-tiny"), device="meta")
    decay, no_decay = param_groups(model, 0.02)
    assert decay["weight_decay"] == 0.02 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(trainable_parameters(model))
    frozen = {id(p) for p in model.visual.parameters()} | {id(p) for p in model.decoder.parameters()}
    assert not frozen & {id(p) for g in (decay, no_decay) for p in g["params"]}


def test_bce_on_one_hot_pair_matches_formula() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3]])
    labels = torch.tensor([0, 1])
    sig = torch.sigmoid
    expected = (
        -(
            torch.log(sig(torch.tensor(2.0)))
            + torch.log(1 - sig(torch.tensor(-1.0)))
            + torch.log(1 - sig(torch.tensor(0.5)))
            + torch.log(sig(torch.tensor(0.3)))
        )
        / 4
    )
    assert bce_one_hot_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_epoch_order_is_a_pure_function() -> None:
    a = epoch_order(list(range(20)), seed=1, fold=0, epoch=3)
    assert a == epoch_order(list(range(20)), seed=1, fold=0, epoch=3)
    assert sorted(a) == list(range(20))
    assert a != epoch_order(list(range(20)), seed=1, fold=0, epoch=4)


def test_checkpoint_round_trip_with_optimizer_and_rng(tmp_path: Path) -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    b = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.AdamW(
        [{"params": [w], "weight_decay": 0.02}, {"params": [b], "weight_decay": 0.0}], lr=1e-2, betas=(0.9, 0.95)
    )
    for _ in range(3):
        (w.sum() ** 2 + b.sum()).backward()
        opt.step()
        opt.zero_grad()
    tensors, groups = optimizer_to_tensors(opt)
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, {**tensors, **rng_tensors(), "model.w": w.detach()}, {"epoch": 3, "param_groups": groups})
    expected_next = torch.rand(5)
    loaded, state = load_checkpoint(path)
    assert state["epoch"] == 3
    torch.testing.assert_close(loaded["model.w"], w.detach())
    w2 = torch.nn.Parameter(w.detach().clone())
    b2 = torch.nn.Parameter(b.detach().clone())
    opt2 = torch.optim.AdamW([{"params": [w2]}, {"params": [b2]}], lr=1.0)
    optimizer_from_tensors(opt2, loaded, state["param_groups"])
    assert opt2.param_groups[0]["betas"] == (0.9, 0.95) and opt2.param_groups[1]["weight_decay"] == 0.0
    for p, q, o1, o2 in ((w, w2, opt, opt2), (b, b2, opt, opt2)):
        torch.testing.assert_close(o1.state[p]["exp_avg_sq"], o2.state[q]["exp_avg_sq"])
    (w.sum() ** 2 + b.sum()).backward()
    (w2.sum() ** 2 + b2.sum()).backward()
    opt.step()
    opt2.step()
    torch.testing.assert_close(w, w2, rtol=0, atol=0)
    restore_rng(loaded)
    torch.testing.assert_close(torch.rand(5), expected_next)
    assert not list(tmp_path.glob(".*tmp"))


def test_damaged_checkpoint_is_a_bundle_error(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(BundleError, match="damaged"):
        load_checkpoint(path)


def test_presets() -> None:
    quick = TrainConfig.from_preset("quick")
    paper = TrainConfig.from_preset("paper", epochs=None)
    assert (quick.run_folds, quick.final_model) == (1, False) and quick.epochs <= 5
    assert (paper.epochs, paper.folds, paper.final_model) == (100, 5, True)
    assert (paper.lr, paper.betas, paper.weight_decay, paper.batch_size, paper.grad_accum) == (
        3e-4,
        (0.9, 0.95),
        0.02,
        16,
        2,
    )
    assert TrainConfig.from_preset("quick", epochs=7).epochs == 7
    assert math.isclose(paper.warmup_epochs, 2.0)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    from pneumoview.inference.config import load_config
    from pneumoview.inference.model import build_model, trainable_parameters
    from training.loop import enable_gradient_checkpointing

    torch.manual_seed(0)
    model = build_model(load_config("pneumollm-tiny"))
    model.train()
    pixels = torch.randn(2, 3, 224, 224)
    labels = torch.tensor([0, 1])

    def grads() -> list[torch.Tensor]:
        for p in trainable_parameters(model):
            p.grad = None
        torch.manual_seed(1)  # same dropout masks
        bce_one_hot_loss(model(pixels), labels).backward()
        return [p.grad.clone() for p in trainable_parameters(model)]

    plain = grads()
    enable_gradient_checkpointing(model)
    assert model.visual.transformer.grad_checkpointing
    checkpointed = grads()
    assert any(g.abs().sum() > 0 for g in plain)
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_trainable_start_depends_only_on_the_seed() -> None:
    from pneumoview.inference.model import trainable_state_dict
    from training.base import BaseSpec, build_base_model

    spec = BaseSpec(architecture="pneumollm-tiny", random_seed=3)
    torch.manual_seed(123)
    a = build_base_model(spec, device=torch.device("cpu"), base_dtype=torch.float32, trainable_seed=7)
    torch.manual_seed(456)  # e.g. generating demo weights moved the global RNG
    b = build_base_model(spec, device=torch.device("cpu"), base_dtype=torch.float32, trainable_seed=7)
    c = build_base_model(spec, device=torch.device("cpu"), base_dtype=torch.float32, trainable_seed=8)
    sa, sb, sc = (trainable_state_dict(m.model) for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.fingerprints == b.fingerprints == c.fingerprints  # same random backbones (seed 3)


def test_a_checkpoint_on_a_full_disk_is_a_storage_error_and_leaves_no_temp_file(tmp_path: Path) -> None:
    from pneumoview.errors import StorageError

    with small_filesystem(tmp_path / "full", "16k") as mnt:
        with pytest.raises(StorageError) as info:
            save_checkpoint(mnt / "checkpoint.safetensors", {"w": torch.zeros(64, 1024)}, {"epoch": 1})
        assert info.value.message == f"disk full: {mnt / 'checkpoint.safetensors'}"
        assert list(mnt.iterdir()) == []
