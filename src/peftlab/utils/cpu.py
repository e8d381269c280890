"""The same seed, the same numbers on AVX2 and AVX-512, Intel and AMD CPUs (``train.reproducible``).

torch's CPU build picks its code by the CPU it finds: MKL (matmuls), oneDNN (convolutions) and
ATen's vectorized kernels (softmax, GELU, layer norm, reductions) each have AVX2 and AVX-512
versions that round differently, so one seed trains to other weights on the two kinds of CPU
this project runs on (the MNIST base: 95.84% vs 95.38%). Each library reads an environment
variable that caps it at AVX2 code, once, when it first runs: ``pin_arithmetic`` sets them
before torch is imported. Measured on an AVX512-BF16 machine: pinned, a pretraining and a LoRA
run gave the AVX2 machines' numbers exactly (see docs/run-directory.md, "Numbers across CPUs").
Across vendors: MKL honours the AVX2 branch on Intel CPUs only, yet an AMD EPYC's matmuls gave an Intel
Xeon's bits pinned; PyTorch's unfused CPU AdamW did not (its square root is MKL's vector math), so a
pinned run takes the fused one (``training.runtime.fused_adamw``; benchmarks/arith_hashes.py).

This module never imports torch: it must run before torch is.
"""

from __future__ import annotations

import os
import platform
import sys

from peftlab.utils.errors import ConfigError
from peftlab.utils.provenance import cpu_model, cpu_vendor

# Intel's documented switches: MKL's conditional numerical reproducibility, oneDNN's ISA cap, ATen's dispatch
PINNED = {"MKL_CBWR": "AVX2,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def applies() -> bool:
    """The switches exist for x86-64 CPUs only."""
    return platform.machine().lower() in ("x86_64", "amd64")


def arithmetic_pinned() -> bool:
    return not applies() or all(os.environ.get(name) == value for name, value in PINNED.items())


def pin_arithmetic() -> None:
    """Set the switches for this process and the processes it starts; refuse once torch runs unpinned."""
    if arithmetic_pinned():
        return
    if "torch" in sys.modules:
        raise ConfigError(
            "train.reproducible=true needs the CPU arithmetic pinned before torch is imported: run it "
            "with the peftlab command, or set "
            + " ".join(f"{k}={v}" for k, v in PINNED.items())
            + " in the environment"
        )
    os.environ.update(PINNED)


def arithmetic_record(reproducible: bool, quant_cpu_kernel: str | None = None, mkl_branch: str | None = None) -> dict:
    """What provenance says about the arithmetic: pinning asked for, pinned, the switches as set, the
    4-bit CPU kernel (``quant.cpu_kernel``; None without a 4-bit base), and what decides whether two
    pinned CPUs agree: the CPU's vendor and model, and the branch MKL computes in
    (``provenance.mkl_branch``: MKL honours ``AVX2,STRICT`` on Intel CPUs only)."""
    return {
        "reproducible": reproducible,
        "pinned": applies() and arithmetic_pinned(),
        "switches": {name: os.environ.get(name) for name in PINNED},
        "quant_cpu_kernel": quant_cpu_kernel,
        "cpu_vendor": cpu_vendor(),
        "cpu_model": cpu_model(),
        "mkl_branch": mkl_branch,
    }
