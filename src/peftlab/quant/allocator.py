"""Where a freed tensor's memory goes: back to the system, or into glibc's heap (``train.malloc``).

On Linux, torch's CPU tensors come from glibc's ``malloc``. By default glibc raises its mmap
threshold to the size of the largest block it has freed (up to 32 MiB), so after a step's first
large free every activation, gradient and dequantized weight below that size is carved from a heap
that keeps what is freed and reuses it badly. Measured on ViT-L/16 at batch 4 with gradient
checkpointing (issue 38, benchmarks/README.md): a QLoRA step whose live tensors peak at 177 MiB
above the built model grew the process by 770-800 MiB, LoRA's (448 MiB live) by 700-740 MiB.

``lean`` fixes the threshold at 1 MiB: a block of 1 MiB or more is its own mapping and goes back to
the system when freed, so a step's peak is about its live tensors (QLoRA's 175-184 MiB, LoRA's
436-443 MiB above the built model in the same measure; a 4 MiB threshold left QLoRA's at 664-739
MiB: its 3 MiB activations were the heap's). Every such block is then new memory, zeroed by the
kernel page by page when first written, and that costs time: in fresh processes
(``benchmarks/malloc_step.py``) the ViT-L QLoRA step took 1.12x as long (1.35-1.40x before 4-bit layers
dequantized into a reused buffer, peftlab.quant.step), ViT-L LoRA 1.14-1.18x, a deit_small LoRA step at
batch 32 1.19-1.29x. So ``system`` (glibc's own rule) is the default, and
``lean`` is for a run that must fit. Elsewhere (macOS, musl) both name the system's allocator.

glibc cannot go back to its own rule in a process once the threshold is fixed: a ``system`` run after
a ``lean`` one in the same process records the threshold it still has. An allocator preloaded in
glibc's place (``LD_PRELOAD=.../libjemalloc.so.2``) is named in the record and left alone.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import sys
from pathlib import Path

import torch

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MADV_DONTNEED = 4  # madvise's advice (sys/mman.h, Linux)
LEAN_MMAP_THRESHOLD = 1 << 20

_fixed: int | None = None  # the threshold this process fixed, None while glibc's own rule holds


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """glibc, or None off Linux and where ``mallopt`` is not glibc's."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        return libc
    except (OSError, AttributeError):
        return None


def configure(mode: str) -> dict:
    """Apply ``train.malloc`` to this process; returns ``record(mode)``. Nothing is changed where another
    allocator was preloaded (``LD_PRELOAD``): glibc's ``mallopt`` would not reach it."""
    global _fixed
    libc = glibc()
    if libc is not None and preloaded() is None and mode == "lean" and _fixed != LEAN_MMAP_THRESHOLD:
        if libc.mallopt(M_MMAP_THRESHOLD, LEAN_MMAP_THRESHOLD) == 1:
            _fixed = LEAN_MMAP_THRESHOLD
    return record(mode)


def record(mode: str) -> dict:
    """What the run's provenance says of ``train.malloc``: the mode, the allocator that serves ``malloc``
    (glibc and its version, a preloaded one by its file name, or the system's), and the mmap threshold
    this process fixed (None: the allocator's own rule)."""
    libc = glibc()
    allocator = preloaded() or (f"glibc {libc.gnu_get_libc_version().decode()}" if libc is not None else "system")
    return {"mode": mode, "allocator": allocator, "mmap_threshold": _fixed}


@functools.cache
def preloaded() -> str | None:
    """The file name of an allocator mapped into this process in glibc's place (jemalloc, tcmalloc,
    mimalloc: preloaded with ``LD_PRELOAD``), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name = line.rsplit("/", 1)[-1] if "/" in line else ""
        if name.startswith(("libjemalloc", "libtcmalloc", "libmimalloc")):
            return name
    return None


def release_freed_memory() -> None:
    """Give the heap's free memory back to the system (``malloc_trim``): after a quantized base is
    built, glibc otherwise keeps the freed fp32 weights (a ViT-L nf4 base kept 1.1 GiB through training)."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def let_go(mapped: torch.Tensor | None) -> None:
    """After a Linear is quantized, its fp32 weight out of resident memory. ``mapped``: the weight when
    transformers left it in its mapped file, whose pages quantizing read are dropped; None when peftlab
    read it from its file (``peftlab.quant.load``) and the caller has let go of it, so the heap is
    trimmed (freed copies between kept layers fragment it)."""
    if mapped is None:
        release_freed_memory()
    else:
        drop_file_pages(mapped)


def drop_file_pages(tensor: torch.Tensor) -> int:
    """Take the pages of ``tensor``'s bytes out of this process's resident memory when they lie in a
    private mapping of a file, as transformers maps a safetensors file (its tensors point into it); the
    bytes dropped. Used on a weight once its quantized copy is made: the file's pages it touched
    otherwise stay resident (an HF ViT-B's 330 MiB after its nf4 base was made). A clean page is read
    from the file again if touched. Only whole pages inside the tensor are dropped; anonymous memory,
    where ``madvise`` would zero the bytes, never is."""
    libc = glibc()
    if libc is None or tensor.device.type != "cpu" or tensor.numel() == 0:
        return 0
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    if not in_private_file_mapping(start, end):
        return 0
    page = mmap.PAGESIZE
    low, high = -(-start // page) * page, end // page * page
    if high <= low:
        return 0
    return high - low if libc.madvise(low, high - low, MADV_DONTNEED) == 0 else 0


def in_private_file_mapping(start: int, end: int) -> bool:
    """[start, end) lies in one private mapping of a regular file (/proc/self/maps)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= start < high:
            path = fields[5].strip() if len(fields) == 6 else ""
            return end <= high and fields[1].endswith("p") and fields[4] != "0" and path.startswith("/")
    return False
