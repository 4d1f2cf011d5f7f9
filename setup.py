"""Builds the one optional C extension (everything else is in pyproject.toml).

``pneumoview.inference._int8_cpu`` is the int8 CPU plan's batch kernel (AVX512-BF16). It is
optional: where it does not compile (no C compiler, another compiler or architecture) the install
goes on without it and the int8 plan runs ``torch._weight_int8pack_mm`` instead.
"""

import platform
import sys

from setuptools import Extension, setup

GCC_LIKE = sys.platform != "win32" and platform.machine().lower() in ("x86_64", "amd64")

setup(
    ext_modules=[
        Extension(
            "pneumoview.inference._int8_cpu",
            sources=["pneumoview/inference/_int8_cpu.c"],
            # OpenMP: the kernel runs on PyTorch's own libgomp thread pool (see the C file's header)
            extra_compile_args=["-O3", "-fopenmp"] if GCC_LIKE else [],
            extra_link_args=["-fopenmp"] if GCC_LIKE else [],
            optional=True,
        )
    ]
    if GCC_LIKE
    else [],
)
