"""PneumoLLM adapters: small trainable modules hooked onto the frozen encoders' pre-attention norms.

``adapter(h) = h + D(dropout(A(h)))`` with ``A`` a 1x1 Conv1d d -> 8 (Xavier-uniform weight,
zero bias) and ``D`` a 1x1 Conv1d 8 -> d with ``groups=2`` (zero weight, zero bias), so a fresh
adapter is the identity. The adapter is attached as a *forward hook* on the block's pre-attention
norm (``ln_1`` in CLIP, ``input_layernorm`` in LLaMA): the attention sees ``adapter(norm(x))``
while the residual stream and every backbone state-dict key stay exactly as pretrained (wrapping
the norm in a Sequential would rename them). The adapters themselves live in the PneumoLLM module
(``vision_adapters`` / ``decoder_adapters``) so their parameters are the model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

_M = TypeVar("_M", bound=nn.Module)


class Adapter(nn.Module):
    """Bottleneck adapter on [..., N, d] token tensors, computed in the adapter's own dtype (fp32).

    ``conv_A.weight`` [hidden, d, 1], ``conv_D.weight`` [d, hidden/groups, 1]: the shapes (and names)
    of the reference implementation's ``adapter_attn``.
    """

    def __init__(self, dim: int, hidden: int = 8, groups: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim = dim
        self.conv_A = nn.Conv1d(dim, hidden, kernel_size=1, groups=1, bias=True)
        self.conv_D = nn.Conv1d(hidden, dim, kernel_size=1, groups=groups, bias=True)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reference initialisation: A Xavier-uniform / zero bias; D all zeros (identity adapter)."""
        assert self.conv_A.bias is not None and self.conv_D.bias is not None  # built with bias=True
        nn.init.xavier_uniform_(self.conv_A.weight)
        nn.init.zeros_(self.conv_A.bias)
        nn.init.zeros_(self.conv_D.weight)
        nn.init.zeros_(self.conv_D.bias)

    def forward(self, h: Tensor) -> Tensor:
        """[B, N, d] (any float dtype) -> [B, N, d] in the input's dtype."""
        in_dtype = h.dtype
        x = h.to(self.conv_A.weight.dtype).transpose(-1, -2)  # [B, d, N]
        x = x + self.conv_D(self.dropout(self.conv_A(x)))
        return x.transpose(-1, -2).to(in_dtype)

    def hook(self, module: nn.Module, args: Any, output: Tensor) -> Tensor:
        """Forward-hook form: replaces the norm's output with ``adapter(output)``."""
        return self(output)


def attach_adapters(norms: Sequence[nn.Module], adapters: Sequence[Adapter] | nn.ModuleList) -> list[RemovableHandle]:
    """Hook ``adapters[i]`` onto ``norms[i]``; returns the hook handles (``handle.remove()`` detaches)."""
    if len(norms) != len(adapters):
        raise ValueError(f"{len(norms)} norms but {len(adapters)} adapters")
    handles = []
    for norm, adapter in zip(norms, adapters):
        assert isinstance(adapter, Adapter)  # a ModuleList from make_adapters holds only Adapters
        handles.append(norm.register_forward_hook(adapter.hook))
    return handles


def make_adapters(dim: int, count: int, *, hidden: int, groups: int, dropout: float) -> nn.ModuleList:
    """``count`` fresh (identity) adapters for width ``dim``, in float32."""
    return nn.ModuleList(
        Adapter(dim, hidden=hidden, groups=groups, dropout=dropout).to(torch.float32) for _ in range(count)
    )


def freeze(module: _M) -> _M:
    """Frozen backbone: no parameter requires a gradient."""
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def adapter_parameter_count(dim: int, hidden: int = 8, groups: int = 2) -> int:
    """Parameters of one adapter: A (d*hidden + hidden) + D (d*hidden/groups + d)."""
    return dim * hidden + hidden + dim * (hidden // groups) + dim
