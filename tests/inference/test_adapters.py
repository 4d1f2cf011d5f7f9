"""The adapter module: reference shapes, identity at init, grouped D, hooks that keep state-dict keys."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pneumoview.inference.adapters import Adapter, adapter_parameter_count, attach_adapters


def test_shapes_and_count_match_the_reference() -> None:
    adapter = Adapter(4096, hidden=8, groups=2)
    assert tuple(adapter.conv_A.weight.shape) == (8, 4096, 1)
    assert tuple(adapter.conv_A.bias.shape) == (8,)
    assert tuple(adapter.conv_D.weight.shape) == (4096, 4, 1)
    assert tuple(adapter.conv_D.bias.shape) == (4096,)
    n = sum(p.numel() for p in adapter.parameters())
    assert n == 32_776 + 20_480 == adapter_parameter_count(4096, 8, 2)
    assert sum(p.numel() for p in Adapter(1024).parameters()) == 8_200 + 5_120


def test_init_is_xavier_a_and_zero_d() -> None:
    torch.manual_seed(0)
    adapter = Adapter(256)
    assert adapter.conv_A.weight.abs().sum() > 0
    bound = (6.0 / (256 + 8)) ** 0.5  # xavier-uniform bound for fan_in=256, fan_out=8 (kernel 1)
    assert adapter.conv_A.weight.abs().max() <= bound
    assert torch.count_nonzero(adapter.conv_A.bias) == 0
    assert torch.count_nonzero(adapter.conv_D.weight) == 0
    assert torch.count_nonzero(adapter.conv_D.bias) == 0


def test_fresh_adapter_is_exactly_the_identity() -> None:
    adapter = Adapter(64).train()  # even with dropout active
    h = torch.randn(3, 11, 64)
    assert torch.equal(adapter(h), h)


def test_adapter_formula_and_groups() -> None:
    torch.manual_seed(1)
    d = 16
    adapter = Adapter(d, hidden=8, groups=2).eval()
    nn.init.normal_(adapter.conv_D.weight)
    nn.init.normal_(adapter.conv_D.bias)
    h = torch.randn(2, 5, d)
    a = h @ adapter.conv_A.weight[:, :, 0].T + adapter.conv_A.bias  # [2, 5, 8]
    w = adapter.conv_D.weight[:, :, 0]  # [d, 4]
    expected_d = torch.cat([a[..., :4] @ w[: d // 2].T, a[..., 4:] @ w[d // 2 :].T], dim=-1) + adapter.conv_D.bias
    torch.testing.assert_close(adapter(h), h + expected_d)


def test_dropout_only_in_training() -> None:
    torch.manual_seed(2)
    adapter = Adapter(32, dropout=0.5)
    nn.init.normal_(adapter.conv_D.weight)
    h = torch.randn(4, 7, 32)
    adapter.eval()
    assert torch.equal(adapter(h), adapter(h))
    adapter.train()
    assert not torch.equal(adapter(h), adapter(h))


def test_low_precision_input_is_computed_in_float32_and_returned_in_its_dtype() -> None:
    adapter = Adapter(32)
    nn.init.normal_(adapter.conv_D.weight)
    h = torch.randn(2, 3, 32)
    out = adapter.eval()(h.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and adapter.conv_A.weight.dtype == torch.float32
    torch.testing.assert_close(out.float(), adapter(h.to(torch.bfloat16).float()), atol=0.05, rtol=0.02)


def test_hook_replaces_the_norm_output_and_keeps_keys() -> None:
    torch.manual_seed(3)
    norm = nn.LayerNorm(8)
    keys_before = list(norm.state_dict())
    adapter = Adapter(8, hidden=4, groups=2).eval()
    nn.init.normal_(adapter.conv_D.weight)
    x = torch.randn(2, 3, 8)
    plain = norm(x)
    handles = attach_adapters([norm], [adapter])
    assert list(norm.state_dict()) == keys_before
    torch.testing.assert_close(norm(x), adapter(plain))
    handles[0].remove()
    assert torch.equal(norm(x), plain)


def test_attach_requires_one_adapter_per_norm() -> None:
    with pytest.raises(ValueError):
        attach_adapters([nn.LayerNorm(4)], [])
