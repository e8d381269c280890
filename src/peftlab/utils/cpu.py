"""The same seed, the same numbers on AVX2 and AVX-512, Intel and AMD CPUs (``train.reproducible``).

torch's CPU build picks its code by the CPU it finds: MKL (matmuls), oneDNN (convolutions) and ATen's vectorized
kernels (softmax, GELU, layer norm, reductions) each have AVX2 and AVX-512 versions that round differently, so one
seed trains to other weights on the two kinds of CPU this project runs on (the MNIST base: 95.84% vs 95.38%). Each
library reads an environment variable that caps it at AVX2 code, once, when it first runs: ``pin_arithmetic`` sets
them before torch is imported. Measured on an AVX512-BF16 machine: pinned, a pretraining and a LoRA run gave the
AVX2 machines' numbers exactly (see docs/run-directory.md, "Numbers across CPUs"). Across vendors: MKL honours its
AVX2 branch on Intel CPUs only (an AMD CPU computes in AUTO), and under it an Intel Xeon's training step parted
from AMD EPYCs' at the first biased Linear (benchmarks/step_probe.py); MKL's COMPATIBLE branch, honoured on both,
gave every entry of the Xeon's steps, so it is the pin's branch (about 2 to 2.5 times a step's CPU time: ``peftlab
bench --only pin``), and a pinned run computes its Linear products through oneDNN at AVX2 instead
(``models.products``: the same bits on both vendors at about 0.55 of COMPATIBLE's step), a quantized base's
backward products too since 2026-11-30. PyTorch's unfused CPU AdamW parted them too (its square root is MKL's
vector math), so a pinned run takes the fused one (``training.runtime.fused_adamw``; benchmarks/arith_hashes.py).

This module never imports torch: it must run before torch is.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys

from peftlab.utils.errors import ConfigError
from peftlab.utils.provenance import cpu_model, cpu_vendor

# Intel's documented switches: MKL's conditional numerical reproducibility, oneDNN's ISA cap, ATen's dispatch
PINNED = {"MKL_CBWR": "COMPATIBLE,STRICT", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def applies() -> bool:
    """The switches exist for x86-64 CPUs only."""
    return platform.machine().lower() in ("x86_64", "amd64")


def arithmetic_pinned() -> bool:
    """The switches are set in this process's environment (what its children inherit), which says nothing of
    whether a torch imported before they were set took them: ``pin_took`` asks the libraries."""
    return not applies() or all(os.environ.get(name) == value for name, value in PINNED.items())


# A pinned run's products go through oneDNN at AVX2 (models.products), a quantized base's backward products
# (bitsandbytes' int8 layers, peftlab's 4-bit ones) too since 2026-11-30, when an AMD EPYC's records of them agreed
# with an Intel Xeon's (benchmarks/pin_candidates.sh): recorded as provenance.arithmetic.products =
# PRODUCTS_ONEDNN_QUANTIZED. PRODUCTS_SWITCH (not a config field) computes as an earlier pin did, for its archives
# and its unfinished studies: "onednn" the pin of 2026-11-29 (PRODUCTS_ONEDNN, a quantized base's backward in MKL's
# COMPATIBLE branch), PRODUCTS_MKL the one before it (every product in MKL's COMPATIBLE branch; products: None)
PRODUCTS_SWITCH = "PEFTLAB_PIN_PRODUCTS"
PRODUCTS_ONEDNN = "oneDNN AVX2"
PRODUCTS_ONEDNN_QUANTIZED = "oneDNN AVX2, quantized bases' backward too"
PRODUCTS_MKL = "mkl"
PRODUCTS_CHOICES = {
    "": PRODUCTS_ONEDNN_QUANTIZED,
    "onednn-quantized": PRODUCTS_ONEDNN_QUANTIZED,
    "onednn": PRODUCTS_ONEDNN,
    PRODUCTS_MKL: None,
}
PRODUCTS_PIN = PRODUCTS_CHOICES[""]  # what a pinned run computes where the switch is unset


def products_switch(products: str | None) -> str | None:
    """The switch's value under which a pinned run computes the recorded ``products`` (None: MKL's), None for
    products no value computes (a record of another version)."""
    return next((value for value, computed in PRODUCTS_CHOICES.items() if value and computed == products), None)


def base_products(products: str | None) -> str | None:
    """The products a base's pretraining computes where its run records ``products``: a pretraining is full
    fine-tuning, never on a quantized base (``FullConfig.quantizable``), so the pin's are the pin's of 2026-11-29
    there (their step records' pretraining entries agree, and a study under the pin, then a candidate, retrained
    the cached base to the same sha256, 2026-11-30): a cached base of either serves both."""
    return PRODUCTS_ONEDNN if products == PRODUCTS_ONEDNN_QUANTIZED else products


def pinned_products(reproducible: bool) -> str | None:
    """The products a run with ``train.reproducible=reproducible`` computes in this environment: the pin's
    (PRODUCTS_PIN) for a pinned x86 run unless PRODUCTS_SWITCH asks for an earlier pin's (PRODUCTS_ONEDNN, or MKL's:
    None); None (the CPU's own arithmetic) unpinned. Another value of the switch is a one-line error."""
    asked = os.environ.get(PRODUCTS_SWITCH, "")
    if asked not in PRODUCTS_CHOICES:
        raise ConfigError(
            f"environment variable {PRODUCTS_SWITCH}={asked!r}: expected onednn-quantized (the pin's products, as "
            f"unset), onednn (the pin of 2026-11-29's) or {PRODUCTS_MKL} (MKL's, the pin's before 2026-11-29)"
        )
    return PRODUCTS_CHOICES[asked] if reproducible and applies() else None


# MKL's branch under the pin, as its verbose line says (provenance.mkl_branch), on Intel and AMD CPUs alike
PINNED_MKL_BRANCHES = ("COMPATIBLE,STRICT",)
# ATen's dispatch under ATEN_CPU_CAPABILITY=avx2 (torch.backends.cpu.get_cpu_capability), or a CPU below it
PINNED_CAPABILITIES = ("AVX2", "DEFAULT")


def reported_pinned(mkl_branch: str | None, capability: str | None) -> bool:
    """Whether what the libraries report is the pin: MKL's branch (None: no MKL to ask) and ATen's CPU capability.
    Not the environment: a switch set after torch ran is in the environment and not in the arithmetic (MKL reads
    MKL_CBWR at its first call, ATen its capability when torch is imported)."""
    if not applies():
        return False
    return (mkl_branch is None or mkl_branch in PINNED_MKL_BRANCHES) and capability in PINNED_CAPABILITIES


def pin_took() -> bool:
    """In a process whose torch is imported: the switches are set and MKL and ATen report them."""
    import torch

    from peftlab.utils.provenance import mkl_branch

    return arithmetic_pinned() and reported_pinned(mkl_branch(), torch.backends.cpu.get_cpu_capability())


def torch_runs_unpinned() -> bool:
    """torch is imported in this process and its arithmetic is not the pin (a kernel whose first cell imported
    torch): only a process started with the switches trains pinned (``child_environment``)."""
    return applies() and "torch" in sys.modules and not pin_took()


def child_environment() -> dict[str, str]:
    """This process's environment with the switches set: a process started with it is pinned from its start."""
    return {**os.environ, **PINNED}


TOO_LATE = (
    "train.reproducible=true needs the CPU arithmetic pinned before torch is imported, and this process's torch "
    "runs unpinned (switches set after it ran do not take): train through peftlab.train or peftlab.run_study, "
    "which train in a process started with the pin, or the peftlab command, or give train.reproducible=false"
)


def pin_arithmetic() -> None:
    """Set the switches for this process and the processes it starts before torch is imported; once torch runs,
    refuse unless MKL and ATen report the pin (``pin_took``)."""
    if not applies() or CHILDREN_PINNED:  # inside pinned_children: the processes that train start pinned
        return
    if "torch" not in sys.modules:
        os.environ.update(PINNED)
        return
    if not pin_took():
        raise ConfigError(TOO_LATE)


CHILDREN_PINNED: list[bool] = []  # set inside ``pinned_children``


@contextlib.contextmanager
def pinned_children():
    """The switches set in this process's environment while it starts the processes that train (a study's
    forkserver or spawned workers inherit it), and this process's own environment given back afterwards: for a
    process whose torch runs unpinned, which trains nothing itself."""
    with environment_set(PINNED):
        CHILDREN_PINNED.append(True)
        try:
            yield
        finally:
            CHILDREN_PINNED.pop()


@contextlib.contextmanager
def environment_set(values: dict[str, str]):
    """``values`` set in this process's environment, then each of those variables as it was (unset where it was)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def arithmetic_record(
    reproducible: bool,
    quant_cpu_kernel: str | None = None,
    mkl_branch: str | None = None,
    capability: str | None = None,
    products: str | None = None,
) -> dict:
    """What provenance says about the arithmetic: pinning asked for, pinned (the switches set and MKL's branch and
    ATen's CPU capability ``capability`` reporting them: ``reported_pinned``), the switches as set, the
    4-bit CPU kernel (``quant.cpu_kernel``; None without a 4-bit base), and what decides whether two
    pinned CPUs agree: the CPU's vendor and model, and the branch MKL computes in
    (``provenance.mkl_branch``: ``COMPATIBLE,STRICT`` pinned on either vendor), and ``products``: where the
    step's products were computed other than by MKL (``models.products.products_record``; None: MKL's)."""
    return {
        "reproducible": reproducible,
        "pinned": arithmetic_pinned() and reported_pinned(mkl_branch, capability),
        "switches": {name: os.environ.get(name) for name in PINNED},
        "quant_cpu_kernel": quant_cpu_kernel,
        "cpu_vendor": cpu_vendor(),
        "cpu_model": cpu_model(),
        "mkl_branch": mkl_branch,
        "products": products,
    }


# a study's local runs sharing this machine's cores, set by its executor (``runs_at_once``): a GPU run's default
# decoding workers are its share of them (``data.loading.default_num_workers``)
RUNS_AT_ONCE_ENV = "PEFTLAB_RUNS_AT_ONCE"


def runs_at_once(workers: int):
    """``$PEFTLAB_RUNS_AT_ONCE`` set to ``workers`` while a study's local runs share this machine's cores, then
    as it was: a GPU run's default decoding workers are its share of them (``data.loading.default_num_workers``).
    A forkserver's worker takes it with the study's other changes; a long-lived spawned one keeps the count of
    the phase that spawned it."""
    return environment_set({RUNS_AT_ONCE_ENV: str(workers)})
