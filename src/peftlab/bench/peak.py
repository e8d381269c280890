"""The matmul peak every throughput figure is measured against, and the ceiling it must stay under."""

from __future__ import annotations

import statistics

import torch

from peftlab.bench.common import DTYPES, spread
from peftlab.training import metrics


def cpu_ceiling_gflops(dtype: str) -> dict:
    """The CPU's theoretical fp32 ceiling where Linux tells enough: cores (the threads used) x
    vector lanes (AVX-512: 16, AVX2: 8 fp32) x 2 (a fused multiply-add) x 2 FMA units (assumed:
    the count cannot be read) x the boost clock (cpufreq's cpuinfo_max_freq). Where the flags or
    the boost clock cannot be read (a VM often hides cpufreq), or for bf16, ``gflops`` is None and
    ``why`` says what was missing."""
    from peftlab.utils.provenance import cpuinfo

    if dtype != "fp32":
        return {"gflops": None, "why": f"no CPU ceiling is computed for {dtype}"}
    fields = cpuinfo()
    if not fields:
        return {"gflops": None, "why": "/proc/cpuinfo cannot be read"}
    flags = set(fields.get("flags", "").split())
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else None
    if lanes is None:
        return {"gflops": None, "why": "the CPU flags name neither AVX-512 nor AVX2 with FMA"}
    freq = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"
    try:  # the boost clock; /proc/cpuinfo's "cpu MHz" is the nominal or current one, and a ceiling from it is too low
        ghz = int(open(freq).read()) / 1e6
    except (OSError, ValueError):
        return {"gflops": None, "why": f"the boost clock cannot be read ({freq} is missing: cpufreq is hidden)"}
    cores = torch.get_num_threads()
    return {
        "gflops": cores * lanes * 2 * 2 * ghz,
        "cores": cores,
        "fp32_lanes": lanes,
        "fma_units": 2,
        "ghz": ghz,
        "assumed": "2 FMA units per core",
    }


# dense (no sparsity) spec-sheet peaks in GFLOP/s, by a name torch.cuda.get_device_name() contains;
# TF32 is the fp32 matmul figure when train.tf32 allows it (the bench's own setting)
GPU_PEAKS = {
    "H200": {"fp32": 494_700, "bf16": 989_400},
    "H100 PCIe": {"fp32": 378_000, "bf16": 756_000},
    "H100": {"fp32": 494_700, "bf16": 989_400},
    "A100": {"fp32": 156_000, "bf16": 312_000},
    "L4": {"fp32": 60_000, "bf16": 121_000},
}


def gpu_ceiling_gflops(dtype: str, name: str) -> dict:
    """The spec-sheet dense peak (TF32 for fp32 matmuls) of the GPU ``name``
    (``torch.cuda.get_device_name``); ``gflops`` None for a GPU not in ``GPU_PEAKS``."""
    for key, peaks in GPU_PEAKS.items():  # "H100 PCIe" before "H100": the first match wins
        if key in name:
            return {"gflops": peaks[dtype], "gpu": name, "source": "NVIDIA spec sheet, dense, TF32 for fp32"}
    return {"gflops": None, "gpu": name, "why": f"{name} has no spec-sheet peak in peftlab.bench.GPU_PEAKS"}


def peak_within_ceiling(peak: dict) -> bool:
    """False where the best measured peak exceeds the theoretical ceiling: a timing error or a
    wrong ceiling, never a result. True where no ceiling is known."""
    ceiling = (peak.get("ceiling") or {}).get("gflops")
    return ceiling is None or peak["best_gflops"] <= ceiling


def matmul_peak(dtype: str, repeats: int, device: torch.device = torch.device("cpu"), sizes=(512, 1024, 2048)) -> dict:
    """Best median GFLOP/s of ``a @ b`` over a few square sizes."""
    best = None
    if device.type == "cuda":
        sizes = (2048, 4096, 8192)
    for n in sizes:
        a = torch.randn(n, n, dtype=DTYPES[dtype], device=device)
        b = torch.randn(n, n, dtype=DTYPES[dtype], device=device)
        times = metrics.time_interleaved({"mm": lambda a=a, b=b: a @ b}, repeats, device, warmup=2)["mm"]
        gflops = 2 * n**3 / statistics.median(times) / 1e9
        if best is None or gflops > best["gflops"]:
            best = {"gflops": gflops, "size": n, "seconds": spread(times)}
    return best
