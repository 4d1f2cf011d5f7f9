"""Importing the reference implementation's released checkpoint (layout in PNEUMOLLM-SPEC.md).

The synthetic checkpoints here are written with exactly the reference's tensor names and shapes
(built from the spec's patterns, not from our mapping), plus ``args`` as an ``argparse.Namespace``
and optimizer/scheduler state, and saved with ``torch.save`` as the reference does.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
from bundle_support import reference_tensors, save_reference_checkpoint

from pneumoview.errors import BundleError
from pneumoview.inference.bundle import import_reference_checkpoint
from pneumoview.inference.config import FULL_CONFIG, TINY_CONFIG, load_config
from pneumoview.inference.model import build_model, load_trainable_state_dict


def set_directly(model, ref: dict[str, torch.Tensor]) -> None:
    """Put the reference tensors into our modules by hand (the independent path)."""
    config = model.config
    with torch.no_grad():
        for i, adapter in enumerate(model.decoder_adapters):
            for part in ("conv_A", "conv_D"):
                getattr(adapter, part).weight.copy_(ref[f"layers.{i}.adapter_attn.{part}.weight"])
                getattr(adapter, part).bias.copy_(ref[f"layers.{i}.adapter_attn.{part}.bias"])
        for i, adapter in enumerate(model.vision_adapters):
            p = f"backbone.visual.transformer.resblocks.{i}.adapter_attn"
            for part in ("conv_A", "conv_D"):
                getattr(adapter, part).weight.copy_(ref[f"{p}.{part}.weight"])
                getattr(adapter, part).bias.copy_(ref[f"{p}.{part}.bias"])
        model.projection.linear1.weight.copy_(ref["adapter_proj.conv_A.weight"])
        model.projection.linear1.bias.copy_(ref["adapter_proj.conv_A.bias"])
        model.projection.linear2.weight.copy_(ref["adapter_proj.conv_B.weight"])
        model.projection.linear2.bias.copy_(ref["adapter_proj.conv_B.bias"])
        model.head.fc.weight.copy_(ref["adapter_output_cls.weight"])
        if config.use_engine:
            for part in ("linear1", "linear2"):
                getattr(model.engine, part).weight.copy_(ref[f"prompt_meta_net.{part}.weight"])
                getattr(model.engine, part).bias.copy_(ref[f"prompt_meta_net.{part}.bias"])


@pytest.mark.parametrize("use_engine", [True, False])
def test_imported_checkpoint_gives_the_same_logits_as_tensors_set_directly(tmp_path: Path, use_engine: bool) -> None:
    config = load_config(TINY_CONFIG).replace(use_engine=use_engine)
    ref = reference_tensors(config)
    path = save_reference_checkpoint(tmp_path / "checkpoint-best.pth", ref)

    state, args = import_reference_checkpoint(path, config=config)
    assert args["blr"] == 3e-4 and args["accum_iter"] == 2

    torch.manual_seed(0)
    direct = build_model(config)
    set_directly(direct, ref)
    torch.manual_seed(0)
    imported = build_model(config)  # same (random) base weights, fresh trainables
    load_trainable_state_dict(imported, state)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = direct(pixels)
        got = imported(pixels)
        fresh = build_model(config)(pixels)
    assert torch.equal(got, expected)
    assert not torch.allclose(got, fresh)  # the imported tensors matter


@pytest.mark.parametrize("use_engine", [True, False])
def test_full_size_reference_layout_imports(tmp_path: Path, use_engine: bool) -> None:
    """Full-size names and shapes from the spec (2.7 M floats, no backbone) import without a config."""
    config = load_config(FULL_CONFIG).replace(use_engine=use_engine)
    ref = reference_tensors(config)
    assert sum(t.numel() for t in ref.values()) == (2_704_000 if use_engine else 2_691_648)
    state, _ = import_reference_checkpoint(save_reference_checkpoint(tmp_path / "ckpt.pth", ref))
    assert len(state) == len(ref)
    assert torch.equal(state["decoder_adapters.31.conv_D.weight"], ref["layers.31.adapter_attn.conv_D.weight"])
    assert torch.equal(
        state["vision_adapters.0.conv_A.bias"], ref["backbone.visual.transformer.resblocks.0.adapter_attn.conv_A.bias"]
    )
    assert torch.equal(state["head.fc.weight"], ref["adapter_output_cls.weight"])
    assert all(t.dtype == torch.float32 for t in state.values())


def test_half_precision_checkpoint_is_read_as_float32(tmp_path: Path) -> None:
    config = load_config(TINY_CONFIG)
    ref = {k: v.half() for k, v in reference_tensors(config).items()}
    state, _ = import_reference_checkpoint(save_reference_checkpoint(tmp_path / "c.pth", ref), config=config)
    assert state["head.fc.weight"].dtype == torch.float32
    assert torch.equal(state["head.fc.weight"], ref["adapter_output_cls.weight"].float())


class _Payload:
    """Stands for anything a malicious pickle could carry."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_with_other_objects_is_refused_without_unpickling(tmp_path: Path) -> None:
    config = load_config(TINY_CONFIG)
    path = tmp_path / "evil.pth"
    torch.save({"model": reference_tensors(config), "args": argparse.Namespace(), "extra": _Payload()}, path)
    with pytest.raises(BundleError, match="^this file contains code, PneumoView will not load it") as info:
        import_reference_checkpoint(path, config=config)
    assert "weights_only" not in info.value.message and info.value.__cause__ is None


def test_unknown_names_wrong_shapes_and_non_checkpoints_are_refused(tmp_path: Path) -> None:
    config = load_config(TINY_CONFIG)
    ref = reference_tensors(config)
    with pytest.raises(BundleError, match="unknown tensor 'lora.weight'"):
        import_reference_checkpoint(
            save_reference_checkpoint(tmp_path / "a.pth", {**ref, "lora.weight": torch.zeros(1)}), config=config
        )
    bad = dict(ref)
    bad["adapter_output_cls.weight"] = torch.zeros(3, config.decoder.hidden_size)
    with pytest.raises(BundleError, match="wrong shapes"):
        import_reference_checkpoint(save_reference_checkpoint(tmp_path / "b.pth", bad), config=config)
    missing = dict(ref)
    missing.pop("layers.0.adapter_attn.conv_A.bias")
    with pytest.raises(BundleError, match="missing.*decoder_adapters.0.conv_A.bias"):
        import_reference_checkpoint(save_reference_checkpoint(tmp_path / "c.pth", missing), config=config)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BundleError):
        import_reference_checkpoint(junk, config=config)
    with pytest.raises(BundleError, match="not found"):
        import_reference_checkpoint(tmp_path / "absent.pth")
    no_model = tmp_path / "d.pth"
    torch.save({"args": argparse.Namespace()}, no_model)
    with pytest.raises(BundleError, match="no 'model'"):
        import_reference_checkpoint(no_model)


def test_reference_checkpoint_becomes_a_bundle(tmp_path: Path) -> None:
    from pneumoview.inference.bundle import bundle_from_reference_checkpoint, check_fingerprints, load_bundle

    config = load_config(TINY_CONFIG)
    ref = reference_tensors(config, seed=3)
    path = save_reference_checkpoint(tmp_path / "checkpoint-best.pth", ref)
    bundle = bundle_from_reference_checkpoint(path, tmp_path / "bundle", config=config)
    manifest, tensors = load_bundle(bundle)
    assert manifest.training["epoch"] == 41 and manifest.training["args"]["blr"] == 3e-4
    assert manifest.preprocessing["mean"] == [0.485, 0.456, 0.406]  # the reference's ImageNet statistics
    assert manifest.base_fingerprints == {}
    check_fingerprints(manifest, {"clip": "x", "llama": "y"})  # nothing recorded: nothing to refuse
    assert torch.equal(tensors["head.fc.weight"], ref["adapter_output_cls.weight"])


def test_distributed_wrapper_prefix_is_accepted(tmp_path: Path) -> None:
    config = load_config(TINY_CONFIG)
    ref = reference_tensors(config, seed=4)
    path = save_reference_checkpoint(tmp_path / "ddp.pth", {f"module.{k}": v for k, v in ref.items()})
    state, _ = import_reference_checkpoint(path, config=config)
    assert torch.equal(state["engine.linear2.bias"], ref["prompt_meta_net.linear2.bias"])
