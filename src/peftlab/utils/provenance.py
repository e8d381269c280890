"""What makes a result reproducible: code version, packages, hardware, threads."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import platform
import sys
from pathlib import Path

from peftlab.utils.programs import ProgramTimeout, run_program

PACKAGES = (
    "peftlab",
    "torch",
    "torchvision",
    "timm",
    "peft",
    "safetensors",
    "numpy",
    "pandas",
    "scipy",
    "transformers",
    "bitsandbytes",
)


log = logging.getLogger(__name__)
GIT_SECONDS = 10
GIT_FIX = "the result records no git commit; check the checkout (`git status`) or how git is set up"


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parent
    try:
        out = run_program(["git", *args], seconds=GIT_SECONDS, fix=GIT_FIX, cwd=repo)
    except OSError:
        return None
    except ProgramTimeout as err:
        log.warning(str(err))
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> tuple[str | None, bool | None]:
    """(commit sha, whether tracked files differ from it) of the peftlab checkout, if any."""
    sha = _git("rev-parse", "HEAD")
    if sha is None:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return sha, bool(status)


def package_versions() -> dict[str, str | None]:
    """Python's version and each of ``PACKAGES``' installed one (None: not installed), read once a process for its
    import path: a run's record names what its process imports, and every lookup searched the whole path (43 CPU ms
    for a run of the tests' tiny ViT, about a tenth of it)."""
    return dict(installed_versions(tuple(sys.path)))


@functools.lru_cache(maxsize=4)
def installed_versions(path: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return tuple(versions.items())


@functools.lru_cache(maxsize=4)
def cpuinfo(path: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields in Linux's /proc/cpuinfo (``model name``, ``cpu family``, ``flags``, ...); empty
    elsewhere. Read once a process (a machine with many cores spends milliseconds on each read): not to be changed."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep and fields:
            break  # the blank line after the first processor
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_vendor() -> str | None:
    """The CPU's vendor as it names itself (``GenuineIntel``, ``AuthenticAMD``; Linux's /proc/cpuinfo)."""
    return cpuinfo().get("vendor_id")


def cpu_generation(fields: dict[str, str] | None = None) -> str | None:
    """The x86 CPU's family, model and stepping numbers ("family 23 model 1 stepping 2"; None where /proc/cpuinfo
    has none). A virtual machine's model name can hide the generation ("AMD EPYC"), and two generations with the
    same instruction sets give the same bits at different speeds: an AVX2-only EPYC whose cores split each 256-bit
    FMA in two ran the default study's products at half the rate of one that does not (benchmarks/README.md)."""
    fields = cpuinfo() if fields is None else fields
    numbers = [fields.get(key) for key in ("cpu family", "model", "stepping")]
    return None if None in numbers else "family {} model {} stepping {}".format(*numbers)


# MKL's code branches as its verbose mode names them (mkl_service.h's MKL_CBWR_* numbers; MKL stores the branch it
# computes in: AVX,STRICT is kept as SSE4_2,STRICT on a CPU where MKL has no AVX branch), and its STRICT flag
MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 7: "SSE4_1", 8: "SSE4_2", 10: "AVX2", 12: "AVX512"}
MKL_STRICT = 0x10000


def mkl_branch() -> str | None:
    """The code branch MKL computes in, as its verbose line for a matmul names it (its ``CNR:`` field):
    ``COMPATIBLE,STRICT`` under train.reproducible's pin on either vendor (the former pin's AVX2 branch is
    ``AUTO,STRICT`` on an AMD CPU: MKL takes no instruction-set branch there), ``OFF`` unpinned. None without MKL or off
    Linux. Read from MKL's own record of it (``mkl_serv_cbwr_get``, which the verbose line prints); a number this
    table does not name is asked of the verbose line itself (``verbose_mkl_branch``), which first measures the CPU's
    clock for half a second on average, spinning, once a process: a study's every run paid it."""
    import sys

    import torch

    if not sys.platform.startswith("linux") or not torch.backends.mkl.is_available():
        return None
    code = mkl_branch_code()
    name = None if code is None else MKL_BRANCHES.get(code & ~MKL_STRICT)
    if name is None:
        return verbose_mkl_branch()
    return name + (",STRICT" if code & MKL_STRICT else "")


def mkl_branch_code() -> int | None:
    """``mkl_serv_cbwr_get(MKL_CBWR_ALL)`` of the MKL inside torch (libtorch_cpu); None where it is not there."""
    import ctypes

    import torch

    try:
        get = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so")).mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    return get(-1)  # MKL_CBWR_ALL: the branch and the STRICT flag


def verbose_mkl_branch() -> str | None:
    """``mkl_branch`` as MKL's verbose line for one small matmul says it. MKL prints to the C stdout: it is caught on a
    temporary file for the one matmul."""
    import ctypes
    import re
    import sys
    import tempfile

    import torch

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as caught:
        try:
            os.dup2(caught.fileno(), 1)
            # float32 on the CPU: MKL's sgemm, past any mode that routes products elsewhere (models.products)
            with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON), torch._C.DisableTorchFunction():
                torch.ones(64, 64) @ torch.ones(64, 64)
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        caught.seek(0)
        found = re.search(r"CNR:(\S+)", caught.read().decode(errors="replace"))
    return found.group(1) if found else None


# The CPU features that change which kernels run (and so the numbers of the same seed): MKL, oneDNN
# and ATen pick AVX2 or AVX-512 code, bitsandbytes its bf16 4-bit kernel on avx512_bf16.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu_flags() -> list[str]:
    """Which of ``CPU_FLAGS`` this CPU has (Linux's /proc/cpuinfo; empty elsewhere)."""
    present = set(cpuinfo().get("flags", "").split())
    return [flag for flag in CPU_FLAGS if flag in present]


def hardware(device) -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_generation": cpu_generation(),
        "cpu_flags": cpu_flags(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        # the GPUs this process was given (a local study's worker: its one GPU, study.executors.gpus)
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if getattr(device, "type", None) == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        # which physical GPU, whatever index CUDA_VISIBLE_DEVICES gave it here (None where torch does not say)
        info["gpu_uuid"] = str(getattr(torch.cuda.get_device_properties(device), "uuid", None) or "") or None
    return info
