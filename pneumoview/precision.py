"""The one precision vocabulary: what the frozen towers compute in, and how the decoder is quantised.

Torch-free, so settings, the CLI, the settings dialog and the planner
(:mod:`pneumoview.inference.plans`) all offer and accept exactly these values. Every value here
builds a plan on the CPU (``Quantisation.NF4`` only on a CUDA GPU with bitsandbytes, where the
planner says so in a :class:`~pneumoview.errors.ConfigError`; the settings dialog and the CLI
offer it only there).

* :class:`Precision` -- compute dtype of the frozen backbones: ``auto`` (the planner picks), ``bf16``,
  ``fp16``, ``fp32``.
* :class:`Quantisation` -- the LLaMA decoder's linear layers: ``auto`` (the planner picks: none, or
  8-bit where memory is short), ``none``, ``int8`` (CPU: int8 weights through PyTorch's x86/fbgemm
  quantised linear; CUDA: bitsandbytes LLM.int8), ``int4`` (CPU only: 4-bit groups of 128 through
  PyTorch's ``_weight_int4pack_mm_for_cpu``), ``nf4`` (CUDA + bitsandbytes only).
"""

from __future__ import annotations

from enum import Enum


class Precision(str, Enum):
    """Compute dtype of the frozen towers (values as stored in settings and given on the CLI)."""

    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"

    @classmethod
    def parse(cls, value: str | Precision) -> Precision:
        """``value`` as a Precision; also accepts torch's spellings (``bfloat16``, ``float32``...)."""
        text = value.value if isinstance(value, Precision) else str(value).strip().lower()
        text = _ALIASES.get(text, text)
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"precision must be one of {', '.join(choices(cls))}, not {value!r}") from None


class Quantisation(str, Enum):
    """How the LLaMA decoder's linear layers are stored (activations stay in the precision)."""

    AUTO = "auto"
    NONE = "none"
    INT8 = "int8"
    INT4 = "int4"
    NF4 = "nf4"

    @classmethod
    def parse(cls, value: str | Quantisation | None) -> Quantisation:
        """``value`` as a Quantisation (None and ``""`` mean ``none``)."""
        if value is None or value == "":
            return cls.NONE
        text = value.value if isinstance(value, Quantisation) else str(value).strip().lower()
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"quantisation must be one of {', '.join(choices(cls))}, not {value!r}") from None

    @property
    def bits(self) -> int | None:
        """Bits per stored weight, None for ``auto`` / ``none``."""
        return {"int8": 8, "int4": 4, "nf4": 4}.get(self.value)


#: Quantisations that run on the CPU (the rest of the vocabulary needs CUDA).
CPU_QUANTISATIONS = (Quantisation.AUTO, Quantisation.NONE, Quantisation.INT8, Quantisation.INT4)
#: Quantisations that run on a CUDA GPU (through bitsandbytes).
CUDA_QUANTISATIONS = (Quantisation.AUTO, Quantisation.NONE, Quantisation.INT8, Quantisation.NF4)

_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}


def choices(enum: type[Precision | Quantisation], *, device: str = "any") -> list[str]:
    """The values to offer for ``enum`` (``device`` "cpu" / "cuda" narrows quantisations to those that work there)."""
    if enum is Quantisation and device == "cpu":
        return [q.value for q in CPU_QUANTISATIONS]
    if enum is Quantisation and device.startswith("cuda"):
        return [q.value for q in CUDA_QUANTISATIONS]
    return [member.value for member in enum]


def legacy_precision(value: str) -> tuple[str, str | None]:
    """Split an older settings value: ``"int8"`` / ``"nf4"`` were offered as a *precision*; they are
    quantisations. Returns ``(precision, quantisation or None)``."""
    text = str(value).strip().lower()
    if text in (Quantisation.INT8.value, Quantisation.INT4.value, Quantisation.NF4.value):
        return Precision.AUTO.value, text
    return text, None
