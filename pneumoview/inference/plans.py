"""Device / precision / quantisation plan for running PneumoLLM, chosen before anything is loaded.

A :class:`Plan` says where the model runs and in which dtypes, and why. :func:`choose_plan` is a
pre-flight: it estimates the memory each option needs from the architecture (parameter counts
on the meta device, bytes per parameter, activations for the batch size) and compares it with
the memory free on the device (``torch.cuda.mem_get_info`` on CUDA, ``psutil`` on the host).

* CUDA: both towers in bf16 (fp16 where the GPU has no bf16); when that does not fit, the LLaMA
  decoder's linear layers in 8-bit (``int8``) or 4-bit NF4 (``nf4``) through bitsandbytes, for
  8-12 GB cards (the vision tower stays bf16/fp16). bitsandbytes is optional (``pip install
  pneumoview[gpu]``) and CUDA-only; its import is guarded.
* CPU: the decoder in bf16 (half the memory of fp32 and, being memory-bound, faster). The ViT
  in bf16 too where the CPU has bf16 instructions (AVX512-BF16 / AMX: measured 1.8-2.5x faster
  than fp32 on this project's AMD EPYC dev box), else in fp32 -- the fastest mix measured on a
  CPU without them (emulated bf16 is slower than fp32 for the compute-bound ViT). When the host's
  free memory is short, the decoder's linear layers in ``int8`` (then ``int4``), quantised while
  they load (:mod:`pneumoview.inference.quant_cpu`); both can also be asked for.
* MPS (Apple): fp16 (bf16 support on MPS depends on the macOS version).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from dataclasses import dataclass

import torch
from torch import nn

from pneumoview.errors import ConfigError, InsufficientMemoryError
from pneumoview.inference.config import PneumoLLMConfig
from pneumoview.precision import Precision, Quantisation, choices

DEVICES = ("auto", "cuda", "cpu", "mps")
#: The precision vocabulary (:mod:`pneumoview.precision`), as plain strings.
PRECISIONS = tuple(choices(Precision))
QUANTISATIONS = tuple(choices(Quantisation))
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_NAMES = {v: k for k, v in _DTYPES.items()}
#: Bytes per decoder linear-layer weight, quantised: int8 (+ one fp32 scale per row, ~0), NF4
#: (4 bits + one absmax per 64-value block, itself 8-bit with nested quantisation: ~0.53 bytes),
#: CPU int4 (4 bits + a bf16 scale and zero per 128 values: ~0.53 bytes).
_QUANT_BYTES = {"int8": 1.0, "nf4": 0.53, "int4": 0.53}
_QUANT_WORDS = {"int8": "8-bit", "nf4": "4-bit NF4", "int4": "4-bit"}
GIB = 1024**3


@dataclass(frozen=True)
class Plan:
    """How the model runs: device, dtypes of the frozen towers, decoder quantisation, and why."""

    device: str  # "cuda", "cuda:1", "cpu", "mps"
    vision_dtype: torch.dtype
    decoder_dtype: torch.dtype  # the compute dtype when quantised
    quantisation: str | None  # None, "int8", "nf4" (CUDA) or "int4" (CPU): decoder linear layers only
    estimated_bytes: int  # weights + activations for ``batch_size``
    available_bytes: int | None  # free device memory measured by the pre-flight (None = unknown)
    batch_size: int
    reason: str

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    def summary(self) -> str:
        """What computes the result: device and dtypes, the same on every run of this plan (provenance)."""
        decoder = _NAMES[self.decoder_dtype]
        if self.quantisation == "int8" and self.device_type == "cpu":  # the kernel is part of what computes it
            from pneumoview.inference.quant_cpu import int8_kernel_name

            decoder = f"{_QUANT_WORDS[self.quantisation]} ({decoder} compute, {int8_kernel_name()})"
        elif self.quantisation:
            decoder = f"{_QUANT_WORDS[self.quantisation]} ({decoder} compute)"
        return f"{self.device}: CLIP {_NAMES[self.vision_dtype]}, LLaMA {decoder}"

    def describe(self) -> str:
        """One line for logs, the CLI and the settings dialog: :meth:`summary`, memory and why."""
        free = f" of {self.available_bytes / GIB:.1f} GB free" if self.available_bytes else ""
        return f"{self.summary()}; needs ~{self.estimated_bytes / GIB:.1f} GB{free} - {self.reason}"

    def to_dict(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        d["vision_dtype"], d["decoder_dtype"] = _NAMES[self.vision_dtype], _NAMES[self.decoder_dtype]
        return d


# ----------------------------------------------------------------------------------------------
# probes (each replaceable in tests by passing the value explicitly to choose_plan)


def bitsandbytes_available() -> bool:
    """True when bitsandbytes can be imported (it is optional and only useful with CUDA)."""
    return importlib.util.find_spec("bitsandbytes") is not None


def cuda_free_bytes(device: str = "cuda") -> int:
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def host_available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def cpu_has_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AVX512-BF16 or AMX), where bf16 is fast."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        if fn is not None and fn():
            return True
    return False


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


# ----------------------------------------------------------------------------------------------
# memory estimate


@functools.lru_cache(maxsize=8)
def _parameter_split(config_json: str) -> dict[str, int]:
    """Parameter counts by part, from a meta-device build (instant, nothing allocated)."""
    import json

    from pneumoview.inference.config import config_from_dict
    from pneumoview.inference.model import build_model

    config = config_from_dict(json.loads(config_json))
    model = build_model(config, device="meta")
    decoder_linear = sum(m.weight.numel() for m in model.decoder.modules() if isinstance(m, nn.Linear))
    decoder_total = sum(p.numel() for p in model.decoder.parameters())
    vision = sum(p.numel() for p in model.visual.parameters())
    trainable = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("visual.", "decoder.")))
    return {
        "vision": vision,
        "decoder_linear": decoder_linear,
        "decoder_other": decoder_total - decoder_linear,
        "trainable": trainable,
    }


def parameter_split(config: PneumoLLMConfig) -> dict[str, int]:
    """{"vision", "decoder_linear", "decoder_other", "trainable"} parameter counts for ``config``."""
    import json

    return dict(_parameter_split(json.dumps(config.to_dict(), sort_keys=True)))


def activation_bytes(config: PneumoLLMConfig, batch_size: int, dtype: torch.dtype) -> int:
    """Peak activations of one inference batch (no autograd), generously: the ViT's residual
    stream, attention scores and MLP hidden of one block at a time, a few times over."""
    v = config.vision
    tokens = (v.image_size // v.patch_size) ** 2 + 1
    width_bytes = torch.finfo(dtype).bits // 8
    vit = tokens * (6 * v.width + int(v.mlp_ratio * v.width)) + v.heads * tokens * tokens
    d = config.decoder
    dec = config.num_tokens * (6 * d.hidden_size + 2 * d.intermediate_size)
    return int(batch_size * 2 * (vit + dec) * width_bytes)


def estimate_bytes(
    config: PneumoLLMConfig,
    *,
    vision_dtype: torch.dtype,
    decoder_dtype: torch.dtype,
    quantisation: str | None,
    batch_size: int,
) -> int:
    """Bytes needed on the device: weights (as planned) + trainables (fp32) + batch activations."""
    split = parameter_split(config)
    dsize = torch.finfo(decoder_dtype).bits // 8
    linear_bytes = _QUANT_BYTES[quantisation] if quantisation else dsize
    weights = (
        split["vision"] * (torch.finfo(vision_dtype).bits // 8)
        + split["decoder_linear"] * linear_bytes
        + split["decoder_other"] * dsize
        + split["trainable"] * 4
    )
    act = activation_bytes(config, batch_size, max(vision_dtype, decoder_dtype, key=lambda t: torch.finfo(t).bits))
    return int(weights + act)


# ----------------------------------------------------------------------------------------------
# the pre-flight


def resolve_device(device: str, *, cuda: bool | None = None, mps: bool | None = None) -> str:
    """``auto`` -> cuda if present, else mps, else cpu; an explicit device that is absent -> ConfigError."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    mps = mps_available() if mps is None else mps
    if device == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if device.startswith("cuda") and not cuda:
        raise ConfigError("device 'cuda' was asked for, but no CUDA GPU is available (use --device cpu or auto)")
    if device == "mps" and not mps:
        raise ConfigError("device 'mps' was asked for, but Apple's Metal backend is not available")
    return device


def _host_plan(
    config: PneumoLLMConfig,
    dev: str,
    precision: str,
    quantisation: str,
    batch_size: int,
    free_bytes: int | None,
    cpu_bf16: bool | None,
) -> Plan:
    """CPU / MPS: dtypes by instruction set; on the CPU, int8 / int4 decoder linears when asked or short of RAM."""
    kind = torch.device(dev).type
    if kind == "cpu":
        if precision == "auto" and (cpu_has_bf16() if cpu_bf16 is None else cpu_bf16):
            vision = decoder = torch.bfloat16
            why = "CPU with bf16 instructions (AVX512-BF16/AMX): both towers bf16"
        elif precision == "auto":
            vision, decoder = torch.float32, torch.bfloat16
            why = "CPU without bf16 instructions: ViT fp32 + decoder bf16, the fastest mix measured there"
        else:
            vision = decoder = _DTYPES[precision]
            why = f"CPU, {precision} as asked"
    else:  # mps
        if quantisation not in ("auto", "none"):
            raise ConfigError(f"{quantisation} is not available on Apple's GPU: use --device cpu or quantisation none")
        vision = decoder = torch.float16 if precision == "auto" else _DTYPES[precision]
        why = f"Apple GPU, {_NAMES[vision]}"
    free = host_available_bytes() if free_bytes is None else free_bytes

    def need(quant: str | None) -> int:
        return estimate_bytes(
            config, vision_dtype=vision, decoder_dtype=decoder, quantisation=quant, batch_size=batch_size
        )

    quant: str | None = None
    if kind == "cpu" and quantisation in ("int8", "int4", "nf4"):
        quant = "int4" if quantisation == "nf4" else quantisation
        why += f"; LLaMA linears {_QUANT_WORDS[quant]} as asked" + (
            " (NF4 needs a CUDA GPU: the CPU's 4-bit kernel instead)" if quantisation == "nf4" else ""
        )
    elif kind == "cpu" and quantisation == "auto" and need(None) > free:
        quant = "int8" if need("int8") <= free else "int4"
        why += (
            f"; only {free / GIB:.1f} GB of RAM free (bf16 needs ~{need(None) / GIB:.1f} GB): "
            f"LLaMA linears {_QUANT_WORDS[quant]}"
        )
    if quant is not None:
        from pneumoview.inference.quant_cpu import check_cpu_mode

        check_cpu_mode(quant)
    estimate = need(quant)
    if estimate > free:
        why += f" (warning: needs ~{estimate / GIB:.1f} GB, only {free / GIB:.1f} GB of RAM free: expect swapping)"
    return Plan(dev, vision, decoder, quant, estimate, free, batch_size, why)


def _cuda_plan(
    config: PneumoLLMConfig,
    dev: str,
    precision: str,
    quantisation: str,
    batch_size: int,
    free_bytes: int | None,
    cuda_bf16: bool | None,
    bnb: bool | None,
) -> Plan:
    """CUDA: bf16 (fp16 without bf16) towers; 8-bit then NF4 LLaMA linears (bitsandbytes) when short."""
    bf16_ok = (
        (torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16) if precision in ("auto", "bf16") else False
    )
    if precision == "auto":
        dtype = torch.bfloat16 if bf16_ok else torch.float16
    else:
        dtype = _DTYPES[precision]
        if precision == "bf16" and not bf16_ok:
            raise ConfigError("this GPU has no bf16 support: use --precision fp16 or auto")
    if quantisation == "int4":
        quantisation = "nf4"  # the GPU's 4-bit kernel
    free = cuda_free_bytes(dev) if free_bytes is None else free_bytes
    bnb = bitsandbytes_available() if bnb is None else bnb
    options: list[str | None]
    if quantisation == "auto":
        options = [None, "int8", "nf4"]
    elif quantisation == "none":
        options = [None]
    else:
        options = [quantisation]
    if any(options) and not bnb and quantisation in ("int8", "nf4"):
        raise ConfigError(f"{quantisation} needs bitsandbytes, which is not installed (pip install pneumoview[gpu])")
    if dtype == torch.float32 and quantisation in ("int8", "nf4"):
        raise ConfigError("quantisation computes in bf16/fp16: drop --precision fp32")
    tried = []
    for quant in options:
        if quant is not None and not bnb:
            continue
        need = estimate_bytes(
            config, vision_dtype=dtype, decoder_dtype=dtype, quantisation=quant, batch_size=batch_size
        )
        tried.append(f"{quant or _NAMES[dtype]} ~{need / GIB:.1f} GB")
        if need <= free:
            if quant is None:
                why = f"full {_NAMES[dtype]} fits"
            else:
                why = f"full {_NAMES[dtype]} does not fit; LLaMA linears {quant} through bitsandbytes"
            return Plan(dev, dtype, dtype, quant, need, free, batch_size, why)
    hint = (
        ""
        if bnb or quantisation == "none"
        else " (installing bitsandbytes would allow 8-/4-bit: pip install pneumoview[gpu])"
    )
    raise InsufficientMemoryError(
        f"not enough GPU memory: {free / GIB:.1f} GB free, needs {' / '.join(tried) or 'more'}{hint}; "
        "close other GPU programs, lower the batch size, or use --device cpu"
    )


def choose_plan(
    config: PneumoLLMConfig,
    *,
    device: str = "auto",
    precision: str | Precision = "auto",
    quantisation: str | Quantisation = "auto",
    batch_size: int = 8,
    free_bytes: int | None = None,
    cuda: bool | None = None,
    mps: bool | None = None,
    cuda_bf16: bool | None = None,
    bnb: bool | None = None,
    cpu_bf16: bool | None = None,
) -> Plan:
    """Pick and justify a plan. Probes are measured unless given (``free_bytes``, ``cuda``, ...).

    ``precision`` / ``quantisation``: values of :class:`pneumoview.precision.Precision` /
    :class:`~pneumoview.precision.Quantisation` (or their strings). ``int4`` and ``nf4`` both mean
    "4-bit": the CPU's int4 kernel on the CPU, bitsandbytes NF4 on CUDA.

    Raises :class:`ConfigError` for impossible requests (CUDA absent, bitsandbytes missing for a
    quantised GPU plan) and :class:`InsufficientMemoryError` when even the smallest allowed GPU
    plan does not fit.
    """
    try:
        precision = Precision.parse(precision).value
        quantisation = Quantisation.parse(quantisation).value
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if batch_size < 1:
        raise ConfigError("batch size must be at least 1")
    dev = resolve_device(device, cuda=cuda, mps=mps)
    if torch.device(dev).type != "cuda":
        return _host_plan(config, dev, precision, quantisation, batch_size, free_bytes, cpu_bf16)
    return _cuda_plan(config, dev, precision, quantisation, batch_size, free_bytes, cuda_bf16, bnb)


# ----------------------------------------------------------------------------------------------
# quantisation (CUDA + bitsandbytes only)


def quantise_decoder_linears(decoder: nn.Module, mode: str, *, device: str, compute_dtype: torch.dtype) -> int:
    """Replace every ``nn.Linear`` of the decoder by a bitsandbytes 8-bit / NF4 layer on ``device``.

    Works layer by layer from CPU tensors, so the GPU never holds more than one layer in 16 bit.
    Returns the number of layers replaced. The adapters hook the norms, so they are unaffected.
    """
    if mode not in ("int8", "nf4"):
        raise ConfigError(f"unknown quantisation {mode!r}")
    if torch.device(device).type != "cuda":
        raise ConfigError("bitsandbytes quantisation needs a CUDA device")
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise ConfigError("bitsandbytes is not installed (pip install pneumoview[gpu])") from exc

    replaced = 0
    for parent in list(decoder.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            weight = child.weight.detach()
            if weight.is_meta:
                raise ConfigError(f"decoder weight {name} is not loaded; load base weights before quantising")
            if mode == "int8":
                layer = bnb.nn.Linear8bitLt(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    has_fp16_weights=False,
                    threshold=6.0,
                    device="meta",
                )
                layer.weight = bnb.nn.Int8Params(
                    weight.to(compute_dtype).cpu(), requires_grad=False, has_fp16_weights=False
                )
            else:
                layer = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=compute_dtype,
                    quant_type="nf4",
                    device="meta",
                )
                layer.weight = bnb.nn.Params4bit(
                    weight.to(compute_dtype).cpu(), requires_grad=False, quant_type="nf4", compress_statistics=True
                )
            if child.bias is not None:
                layer.bias = nn.Parameter(child.bias.detach().to(compute_dtype), requires_grad=False)
            layer = layer.to(device)  # quantises on the way to the GPU
            layer.requires_grad_(False)
            setattr(parent, name, layer)
            del child, weight
            replaced += 1
    return replaced
