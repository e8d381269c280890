"""Where and how a run computes: threads, device, precision, TF32, fused AdamW, compile.

The recipe, its step and evaluation, the benchmarks and the memory preflight use these; none of them
imports the recipe for it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import psutil
import torch
from torch import nn

from peftlab.utils.errors import ConfigError
from peftlab.utils.files import one_line

# the intra-op threads of a reproducible run whose config names none: the count the shipped configs' expected
# results were measured with (2-core machines), whatever this machine has
REPRODUCIBLE_THREADS = 2


def run_threads(threads: int | None, reproducible: bool) -> int:
    """A run's intra-op threads: ``train.threads``; where it is null, ``OMP_NUM_THREADS`` when set (the user's
    own choice), else ``REPRODUCIBLE_THREADS`` for a reproducible run (``train.reproducible``) and this machine's
    physical cores for any other. The thread count changes floating-point reduction order, so a pinned run's bits
    follow it: they must come from its config, never from the machine it lands on (an 8- or 16-core laptop)."""
    if threads:
        return threads
    asked = omp_threads()
    return asked or (REPRODUCIBLE_THREADS if reproducible else default_threads())


def omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` when it is set to a positive integer (as torch itself reads it), else None."""
    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(asked) if asked.isdigit() and int(asked) > 0 else None


def default_threads() -> int:
    """Intra-op threads of a run whose config leaves ``train.threads`` null: ``OMP_NUM_THREADS``
    when it is set to a positive integer, else this machine's physical cores (those this process
    may use), the same whatever else runs beside it: never how many runs share the machine
    (``peftlab study --workers``).
    """
    if asked := omp_threads():
        return asked
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(psutil.cpu_count(logical=False) or usable, usable))


def mps_available() -> bool:
    """Whether Apple's Metal GPU (MPS) can be used here: Apple Silicon with a torch built for it."""
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def select_device(name: str) -> torch.device:
    """``train.device``: auto picks a CUDA GPU, then Apple's MPS, then the CPU; a device named that
    this machine lacks is a one-line ConfigError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} is invalid: no CUDA device is available here; use auto or cpu")
    if name == "mps" and not mps_available():
        raise ConfigError(
            "train.device='mps' is invalid: no Apple MPS device is available here (Apple Silicon, "
            "macOS 14 or later); use auto or cpu"
        )
    return torch.device(name)


def check_runtime(device_name: str, precision: str) -> None:
    """What train refuses about the device and precision on this machine, for ``peftlab validate``."""
    autocast(precision, select_device(device_name))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``train.precision: auto``: bf16 autocast on a CUDA GPU that supports it, fp32 elsewhere
    (a CPU without bf16 matrix units runs bf16 about 20x slower than fp32; on MPS no precision has
    been measured yet, so fp32)."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


# the autocast dtypes peftlab accepts on each device type: torch 2.14's autocast takes bf16 and fp16 on
# CUDA and MPS (the GradScaler that fp16 needs handles both); on a CPU bf16 only, as peftlab always took
# (fp16 there is unmeasured)
AUTOCAST = {"cuda": ("bf16", "fp16"), "mps": ("bf16", "fp16"), "cpu": ("bf16",)}
DEVICE_NAMES = {"cuda": "CUDA", "mps": "MPS", "cpu": "CPU"}


def autocast(precision: str, device: torch.device):
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    allowed = AUTOCAST.get(device.type, ())
    if precision not in allowed:
        expected = " or ".join(("fp32",) + allowed)
        raise ConfigError(
            f"train.precision={precision!r} is invalid on "
            f"{DEVICE_NAMES.get(device.type, device.type)}: expected {expected}"
        )
    if device.type == "mps" and precision == "bf16" and not torch.backends.mps.is_macos_or_newer(14, 0):
        raise ConfigError(
            "train.precision='bf16' is invalid on MPS before macOS 14 (Metal has no bf16 there): expected fp32 or fp16"
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def set_tf32(allowed: bool, device: torch.device) -> None:
    """``train.tf32``: TF32 matmuls and convolutions on CUDA (Ampere and later); a no-op on CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = allowed
        torch.backends.cudnn.allow_tf32 = allowed


# every fp32 matmul, convolution and RNN's precision (torch >= 2.9's per-backend settings): "ieee" is full fp32
FP32_OPERATIONS = ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv", "mkldnn.rnn")
# what full_fp32 restores: those and the levels above them (generic, CUDA, oneDNN), which "none" inherits
FP32_SETTINGS = ("", "cudnn", "mkldnn", *FP32_OPERATIONS)


def fp32_setting(name: str):
    """The ``torch.backends`` object holding the ``fp32_precision`` of ``name`` ("" the generic one)."""
    backend = torch.backends
    for part in filter(None, name.split(".")):
        backend = getattr(backend, part)
    return backend


def legacy_setting(read):
    """A TF32 flag read through torch's older API, or None where torch refuses to answer (it raises on
    a state that mixed the older and the per-backend API)."""
    try:
        return read()
    except RuntimeError:
        return None


@contextlib.contextmanager
def full_fp32():
    """fp32 matmuls, convolutions and RNNs at full precision while it runs, whatever ``train.tf32`` (or
    anything else) set: TF32 off on CUDA (cuBLAS and cuDNN), no TF32 or bf16 on oneDNN, the matmul
    precision "highest". Every setting is restored afterwards, on an exception too.

    For comparisons of two models that should compute the same thing (the merge check): TF32 moves a
    ViT's logits by about 1e-4 (an H100), so with it on such a check measures TF32, not the models.
    """
    matmul = legacy_setting(torch.get_float32_matmul_precision)
    cudnn = legacy_setting(lambda: torch.backends.cudnn.allow_tf32)
    saved = {name: fp32_setting(name).fp32_precision for name in FP32_SETTINGS}
    try:
        torch.set_float32_matmul_precision("highest")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        for name in FP32_OPERATIONS:  # also where a level above says "tf32" and an operation inherits it
            fp32_setting(name).fp32_precision = "ieee"
        yield
    finally:  # the older API first: setting it rewrites the per-backend values restored after it
        if matmul is not None:
            torch.set_float32_matmul_precision(matmul)
        if cudnn is not None:
            torch.backends.cudnn.allow_tf32 = cudnn
        for name, value in saved.items():
            fp32_setting(name).fp32_precision = value


def tf32_allowed() -> bool:
    """Whether fp32 matmuls or convolutions may compute in TF32 on CUDA now (either cuBLAS's or cuDNN's
    flag; true on a CPU as well when the flags say so, though only CUDA reads them)."""
    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)


def fused_adamw(setting: bool | None, device: torch.device, reproducible: bool = False) -> bool:
    """``train.fused_adamw``: null means fused on CUDA, and on CPU where ``train.reproducible`` pins the
    arithmetic; else PyTorch's single-tensor AdamW. That one's ``sqrt`` goes through MKL's vector math,
    whose results depend on the CPU's vendor (on an AMD EPYC, whatever MKL_CBWR says, 16% of square roots
    land one ulp from the exact result, which an Intel Xeon's AVX2 branch gave); the fused kernel's is
    ATen's own square root instruction, exactly rounded on every CPU (benchmarks/arith_hashes.py,
    tests/test_arith_hashes.py)."""
    if setting is not None:
        return setting
    return device.type == "cuda" or (reproducible and device.type == "cpu")


def example_inputs(shape: tuple[int, ...], n: int, device: torch.device) -> torch.Tensor:
    """``n`` inputs of one input's ``shape`` for a probe: images (C x S x S) drawn from a normal, text
    (2 x L: ids, mask; ``peftlab.data.text.tokens``) token 0 at every position, every position attended."""
    if len(shape) == 2:
        x = torch.zeros(n, *shape, dtype=torch.long, device=device)
        x[:, 1] = 1
        return x
    return torch.randn(n, *shape, device=device)


def before_compile(model: nn.Module) -> None:
    """What a module caches eagerly before ``torch.compile`` traces it (``SplitQKV``'s fused frozen weight)."""
    for module in model.modules():
        prepare = getattr(module, "before_compile", None)
        if callable(prepare):
            prepare()


def compile_model(
    model: nn.Module, train_shape: tuple, eval_shape: tuple, device: torch.device, precision: str, mode: str = "default"
) -> dict:
    """``train.compile``: compile ``model`` in place (``nn.Module.compile``, inductor, torch.compile's ``mode``:
    train.compile_mode; reduce-overhead captures CUDA graphs on a GPU) and compile it
    now, on random batches in train mode (forward and backward) and in eval mode, so the compile
    time is reported apart and a model that cannot compile trains eagerly after one logged line
    instead of failing later. Gradients and random state are left as they were found."""
    start = time.perf_counter()
    before_compile(model)
    model.compile(mode=mode)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            with autocast(precision, device):
                out = model(example_inputs(train_shape[1:], train_shape[0], device))
            out.float().sum().backward()
            model.eval()
            with torch.no_grad(), autocast(precision, device):
                model(example_inputs(eval_shape[1:], eval_shape[0], device))
        record = {"used": True, "error": None}
    except Exception as err:
        model._compiled_call_impl = None  # what nn.Module.compile set: the module is eager again
        record = {"used": False, "error": one_line(err)[:300]}
        print(
            f"peftlab: train.compile: the model did not compile, training eagerly ({record['error']})",
            file=sys.stderr,
            flush=True,
        )
    finally:
        model.train()
        for param in model.parameters():
            param.grad = None
    return {**record, "mode": mode, "seconds": time.perf_counter() - start}


def out_of_memory(err: BaseException) -> bool:
    """CUDA's out-of-memory error, or the CPU allocator failing to allocate."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
    )
