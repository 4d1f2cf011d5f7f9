"""8-bit and 4-bit LLaMA linear layers on the CPU, quantised tensor by tensor while the weights load.

A 7B decoder in bf16 is ~12.6 GB; its linear layers in int8 are ~6.3 GB and in 4 bit ~3.3 GB, which
leaves room for the app and the OS on a 16 GB clinic PC. Weights are quantised as each tensor is
read (:func:`state_transform`, given to the LLaMA reader), so the full bf16 decoder is never in
memory; the prepared tensors are plain int8 / uint8 / float tensors (safetensors-cacheable).

Kernels (taking the prepared tensors as they are stored, so that a warm start maps the
prepared-weights cache and assigns: no repacking):

* ``int8``: int8 weights [N, K], one bf16 scale per output row (symmetric), bf16 activations, no
  activation quantisation (each output row independent of the other rows of the batch), run by
  PneumoView's own AVX512-BF16 kernel (``_int8_cpu.c``, built by ``setup.py`` where a C compiler
  is): each 32 weights are widened to bf16 once and multiplied with up to 12 rows by VDPBF16PS.
  Where the kernel is not built, the processor lacks AVX512-BF16 or the input size is not a
  multiple of 32, ``torch._weight_int8pack_mm`` (which widens each weight again for every 4 rows
  and multiplies in fp32). 16 distinct 11008x4096 layers called in turn, 2 cores
  (``benchmarks/int8_kernels.py``): at 10 rows (a study's decoder tokens) own kernel 4.9 ms, bf16
  ``F.linear`` 9.1 ms, ``_weight_int8pack_mm`` 9.6 ms; at 1 / 4 / 7 rows 2.3 / 2.7 / 3.4 ms vs
  2.7 / 3.5 / 7.1 ms for ``_weight_int8pack_mm``; at 80 rows (batch 8) 37 ms, bf16 23 ms,
  ``_weight_int8pack_mm`` 63 ms -- there the kernel is compute-bound and bf16 wins. Replaced
  PyTorch's x86 dynamic quantised linear (``quantized.linear_dynamic``), whose fbgemm prepacking
  copied every weight on every start (~50 s of a 7B warm start); torchao's
  ``Int8WeightOnlyConfig`` dequantises per call in eager mode (47 ms vs 6.7 ms).
* ``int4``: 4-bit asymmetric groups of 128 (64, 32 where 128 does not divide the input size; int8
  where none does or the output size is not a multiple of 16) along the input dimension, packed by
  ``torch._convert_weight_to_int4pack_for_cpu`` and run by ``torch._weight_int4pack_mm_for_cpu``
  (bf16 activations; about as fast as bf16 at batch 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from pneumoview.errors import ConfigError
from pneumoview.inference.weights_common import release_freed_heap

try:  # built by setup.py where a C compiler is; optional (torch._weight_int8pack_mm runs without it)
    from pneumoview.inference import _int8_cpu
except ImportError:  # pragma: no cover - depends on the install
    _int8_cpu = None  # type: ignore[assignment]

#: Suffix of the per-row scale (int8) or scales-and-zeros (int4) stored beside a quantised weight.
SCALE_SUFFIX = "_qscale"
#: The decoder's linear weights (Hugging Face LlamaModel names, per layer).
LINEAR_NAMES = (
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)
INT4_GROUP = 128
#: Rows quantised at a time (bounds the float32 temporaries: 1024 x 11008 x 4 B = 45 MB).
QUANTISE_ROWS = 1024
#: Group sizes the CPU int4 kernel takes, largest first; a layer whose input size none divides stays int8.
INT4_GROUPS = (128, 64, 32)
CPU_MODES = ("int8", "int4")
#: ``torch._weight_int8pack_mm`` on the CPU needs the input size to be a multiple of this (it
#: crashes otherwise, torch 2.x): smaller layers are zero-padded along the input dimension.
INT8_K_MULTIPLE = 16
#: ... and the weight's data to be aligned to 16 bytes (the prepared-weights cache aligns to 64).
INT8_ALIGN = 16
#: The own int8 kernel takes input sizes that are multiples of this (LLaMA's 4096 and 11008 are).
OWN_KERNEL_K_MULTIPLE = 32
OWN_KERNEL_NAME = "PneumoView AVX512-BF16"


def own_kernel_available() -> bool:
    """True where the own int8 kernel is built and this processor has AVX512-BF16."""
    return _int8_cpu is not None and bool(_int8_cpu.available())


def int8_kernel_name() -> str:
    """The kernel that computes the int8 layers in this install, for provenance (``Plan.summary``)."""
    return f"{OWN_KERNEL_NAME} kernel" if own_kernel_available() else "torch._weight_int8pack_mm"


def int8_kernel_description() -> str:
    """Which int8 kernels this install runs, for the load report."""
    if own_kernel_available():
        return f"int8 kernel: {OWN_KERNEL_NAME} (torch._weight_int8pack_mm where an input size is not a multiple of 32)"
    why = "not built (no C compiler at install?)" if _int8_cpu is None else "this processor lacks AVX512-BF16"
    return f"int8 kernel: torch._weight_int8pack_mm (the {OWN_KERNEL_NAME} kernel: {why})"


def own_int8_matmul(flat: Tensor, qweight: Tensor, scale: Tensor) -> Tensor:
    """bf16 [M, K] @ (int8 [N, K] * bf16 scale [N])^T -> bf16 [M, N] through the own kernel
    (:func:`own_kernel_available` must hold). Products exact, fp32 accumulation, one rounding to bf16."""
    if _int8_cpu is None:
        raise ConfigError("the own int8 kernel is not built in this install")
    m, k = (int(s) for s in flat.shape)
    n = int(qweight.shape[0])
    if flat.dtype != torch.bfloat16 or qweight.dtype != torch.int8 or scale.dtype != torch.bfloat16:
        raise ConfigError(
            f"int8 kernel takes bf16 x, int8 W, bf16 scales, not {flat.dtype}, {qweight.dtype}, {scale.dtype}"
        )
    if tuple(qweight.shape) != (n, k) or tuple(scale.shape) != (n,) or k % OWN_KERNEL_K_MULTIPLE or m == 0:
        raise ConfigError(f"int8 kernel: x {tuple(flat.shape)}, W {tuple(qweight.shape)}, scales {tuple(scale.shape)}")
    if any(t.device.type != "cpu" for t in (flat, qweight, scale)):
        raise ConfigError("the own int8 kernel runs on the CPU")
    flat, qweight, scale = flat.contiguous(), qweight.contiguous(), scale.contiguous()
    out = torch.empty(m, n, dtype=torch.float32)
    _int8_cpu.linear(
        flat.data_ptr(), qweight.data_ptr(), scale.data_ptr(), out.data_ptr(), m, k, n, torch.get_num_threads()
    )
    return out.to(torch.bfloat16)


def is_linear_weight(name: str) -> bool:
    return name.startswith("layers.") and name.split(".", 2)[-1] in LINEAR_NAMES


def quantise_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """[N, K] float -> (int8 [N, K], float32 scale [N], bf16-exact), symmetric per output row: w ~= q * scale."""
    n = weight.shape[0]
    q = torch.empty(weight.shape, dtype=torch.int8)
    scale = torch.empty(n, dtype=torch.float32)
    for begin in range(0, n, QUANTISE_ROWS):  # float32 temporaries of a few rows, not of the whole matrix
        w = weight[begin : begin + QUANTISE_ROWS].detach().to(torch.float32, copy=True)  # div_ below: never the input
        # The kernel takes bf16 scales: round them first, so that q is the best fit for the scale used.
        rows = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).to(torch.bfloat16).float()
        q[begin : begin + QUANTISE_ROWS] = torch.round(w.div_(rows[:, None])).clamp_(-127, 127)
        scale[begin : begin + QUANTISE_ROWS] = rows
    return q, scale


def quantise_int4(weight: Tensor, group: int = INT4_GROUP) -> tuple[Tensor, Tensor]:
    """[N, K] float -> (packed uint8 [N, K/2] for the CPU int4 kernel, bf16 scales-and-zeros [K/group, N, 2]).

    Asymmetric per group: q = round((w - min) / s) in 0..15, w ~= (q - 8) * s + (min + 8 s).
    """
    n, k = weight.shape
    if k % group:
        raise ConfigError(f"int4 needs the input size ({k}) to be a multiple of {group}")
    w = weight.detach().float().reshape(n, k // group, group)
    low, high = w.amin(-1), w.amax(-1)
    scale = ((high - low) / 15.0).clamp_min(1e-12)
    q = torch.round((w - low[..., None]) / scale[..., None]).clamp_(0, 15).to(torch.int32).reshape(n, k)
    packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
    zeros = low + 8.0 * scale
    scales_and_zeros = torch.stack([scale, zeros], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    return packed, scales_and_zeros


class _InputGradient(torch.autograd.Function):
    """The quantised kernels have no derivative: this gives the one a gradient x activation map needs,
    with respect to the input (frozen weights get none): ``dL/dx = dL/dy W``, with ``W`` the layer's
    dequantised weight (``layer.dequantised()``, one transient bf16 [N, K] per layer and call)."""

    @staticmethod
    def forward(ctx, flat: Tensor, layer: CpuInt8Linear | CpuInt4Linear) -> Tensor:
        ctx.layer = layer
        return layer.matmul(flat)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad.to(torch.bfloat16) @ ctx.layer.dequantised(), None


def _quantised_forward(layer: CpuInt8Linear | CpuInt4Linear, x: Tensor) -> Tensor:
    """[..., K] any float dtype -> [..., N] in that dtype, computed in bf16 (differentiable in ``x``)."""
    shape = x.shape
    flat = x.reshape(-1, shape[-1]).to(torch.bfloat16)
    out = _InputGradient.apply(flat, layer) if flat.requires_grad else layer.matmul(flat)
    return out.reshape(*shape[:-1], layer.out_features).to(x.dtype)


class CpuInt8Linear(nn.Module):
    """``y = x W^T`` with W int8 per output row, through the own kernel where it is available and
    the input size a multiple of 32, else ``torch._weight_int8pack_mm`` (bf16).

    Keeps the int8 weight [N, K] and the bf16 scales [N] it is given (e.g. memory-mapped from the
    prepared-weights cache: nothing is copied). Input [..., K] in any float dtype (computed in
    bf16); output in the input's dtype.
    """

    def __init__(self, qweight: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = (int(s) for s in qweight.shape)
        self.pad = -self.in_features % INT8_K_MULTIPLE
        if self.pad:  # zero columns (a copy; only toy sizes: LLaMA's 4096 / 11008 are multiples of 16)
            qweight = torch.nn.functional.pad(qweight, (0, self.pad))
        elif qweight.data_ptr() % INT8_ALIGN or not qweight.is_contiguous():
            qweight = qweight.contiguous().clone()  # the kernel crashes on unaligned weights (maps are aligned)
        self.qweight: Tensor
        self.scale: Tensor
        self.register_buffer("qweight", qweight.contiguous(), persistent=False)
        self.register_buffer("scale", scale.to(torch.bfloat16).contiguous(), persistent=False)
        self.own_kernel = own_kernel_available() and (self.in_features + self.pad) % OWN_KERNEL_K_MULTIPLE == 0

    def matmul(self, flat: Tensor) -> Tensor:
        """bf16 [M, K] -> bf16 [M, N] through the kernel."""
        if self.pad:
            flat = torch.nn.functional.pad(flat, (0, self.pad))
        if self.own_kernel:
            return own_int8_matmul(flat, self.qweight, self.scale)
        return torch._weight_int8pack_mm(flat, self.qweight, self.scale)

    def dequantised(self) -> Tensor:
        """bf16 [N, K]: each ``q * scale`` rounded once to bf16, as the kernels' outputs are."""
        return self.qweight[:, : self.in_features].to(torch.bfloat16) * self.scale[:, None]

    def forward(self, x: Tensor) -> Tensor:
        return _quantised_forward(self, x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class CpuInt4Linear(nn.Module):
    """``y = x W^T`` with W in 4-bit groups, through ``torch._weight_int4pack_mm_for_cpu`` (bf16)."""

    def __init__(self, packed: Tensor, scales_and_zeros: Tensor, group: int = INT4_GROUP) -> None:
        super().__init__()
        self.out_features = int(packed.shape[0])
        self.in_features = int(scales_and_zeros.shape[0]) * group
        self.group = group
        self.packed: Tensor
        self.scales_and_zeros: Tensor
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(torch.bfloat16), persistent=False)

    def matmul(self, flat: Tensor) -> Tensor:
        """bf16 [M, K] -> bf16 [M, N] through the kernel."""
        return torch._weight_int4pack_mm_for_cpu(flat, self.packed, self.group, self.scales_and_zeros)

    def dequantised(self) -> Tensor:
        """bf16 [N, K], read back through the kernel (``W^T = I W^T``: the packing is the kernel's own)."""
        return self.matmul(torch.eye(self.in_features, dtype=torch.bfloat16)).t()

    def forward(self, x: Tensor) -> Tensor:
        return _quantised_forward(self, x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 groups of {self.group}"


def check_cpu_mode(mode: str) -> None:
    """ConfigError unless ``mode`` is a CPU quantisation this PyTorch has a kernel for."""
    if mode not in CPU_MODES:
        raise ConfigError(f"CPU quantisation must be one of {', '.join(CPU_MODES)}, not {mode!r}")
    kernel = "_weight_int8pack_mm" if mode == "int8" else "_weight_int4pack_mm_for_cpu"
    if not hasattr(torch, kernel):
        raise ConfigError(f"{mode} on the CPU needs torch.{kernel}, which this PyTorch build lacks")


def _int4_group(shape: tuple[int, ...]) -> int | None:
    """The largest int4 group that divides the input size, or None (int8) where none does or the
    output size is not a multiple of 16 (which the int4 packing needs)."""
    return next((g for g in INT4_GROUPS if shape[1] % g == 0), None) if shape[0] % 16 == 0 else None


def state_specs(
    mode: str, dtype: torch.dtype
) -> Callable[[str, torch.dtype, tuple[int, ...]], dict[str, tuple[torch.dtype, tuple[int, ...]]]]:
    """What :func:`state_transform` makes of a stored tensor, without the tensor: (name, stored dtype,
    shape) -> {entry name: (dtype, shape)} (the header of a prepared-weights entry written as it streams)."""
    check_cpu_mode(mode)

    def specs(name: str, stored: torch.dtype, shape: tuple[int, ...]) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        if is_linear_weight(name):
            n, k = shape
            group = _int4_group(shape)
            if mode == "int4" and group:
                return {name: (torch.uint8, (n, k // 2)), name + SCALE_SUFFIX: (torch.bfloat16, (k // group, n, 2))}
            return {name: (torch.int8, (n, k)), name + SCALE_SUFFIX: (torch.bfloat16, (n,))}
        return {name: (dtype if stored.is_floating_point else stored, shape)}

    return specs


def state_transform(mode: str, dtype: torch.dtype | None) -> Callable[[str, Tensor], dict[str, Tensor]]:
    """For the LLaMA reader: (name, stored tensor) -> prepared entries. Linear weights become
    ``name`` (int8 / packed uint8) + ``name + SCALE_SUFFIX``; everything else is cast to ``dtype``."""
    check_cpu_mode(mode)
    quantised = [0]

    def transform(name: str, tensor: Tensor) -> dict[str, Tensor]:
        if is_linear_weight(name):
            group = _int4_group(tuple(tensor.shape))
            if mode == "int4" and group:
                q, scale = quantise_int4(tensor, group)
            else:
                q, scale = quantise_int8(tensor)
                scale = scale.to(torch.bfloat16)  # exactly (bf16-rounded in quantise_int8) what the kernel takes
            quantised[0] += 1
            if quantised[0] % len(LINEAR_NAMES) == 0:  # once per decoder layer: as low as after every tensor
                release_freed_heap()  # (measured), cheaper; without it GBs of freed temporaries stay resident
            return {name: q, name + SCALE_SUFFIX: scale}
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        return {name: tensor}

    return transform


def install_quantised_linears(decoder: nn.Module, state: dict[str, Tensor], mode: str) -> int:
    """Replace each ``nn.Linear`` of the decoder by its CPU int8 / int4 layer built from ``state``
    (entries popped as they are used; the layers keep the tensors themselves, no copy). Returns the count."""
    check_cpu_mode(mode)
    replaced = 0
    for prefix, parent in list(decoder.named_modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            key = f"{prefix}.{child_name}.weight" if prefix else f"{child_name}.weight"
            try:
                q, scale = state.pop(key), state.pop(key + SCALE_SUFFIX)
            except KeyError as exc:
                raise ConfigError(f"{mode} weights lack {exc.args[0]}: prepared for another plan?") from exc
            int8 = q.dtype == torch.int8  # int4 plans keep int8 where the input size fits no int4 group
            want = (child.out_features, child.in_features if int8 else child.in_features // 2)
            if tuple(q.shape) != want or (not int8 and child.in_features % scale.shape[0]):
                raise ConfigError(f"{key}: quantised shape {tuple(q.shape)} does not fit {want}")
            layer = CpuInt8Linear(q, scale) if int8 else CpuInt4Linear(q, scale, child.in_features // scale.shape[0])
            setattr(parent, child_name, layer)
            del q, scale
            replaced += 1
    return replaced


def prepared_linear_keys(state: Mapping[str, Tensor]) -> list[str]:
    return [k for k in state if k.endswith(SCALE_SUFFIX)]
