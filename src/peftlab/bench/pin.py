"""What ``train.reproducible``'s pin costs: a training step (full, LoRA) unpinned, pinned (the pin's switches with
every Linear's products through oneDNN at AVX2: ``models.products``, the same bits on an Intel Xeon and an AMD EPYC
in benchmarks/step_probe.py's records) and under the former pin ``compatible`` (the same switches, the products in
MKL's COMPATIBLE branch, the pin until 2026-11-29 and what an archive of its runs reruns with). ``unpinned_avx2`` is
the CPU's own arithmetic held to AVX2 (MKL's AVX2 branch, oneDNN and ATen capped, no STRICT, the unfused AdamW): on a
CPU with AVX-512 it stands in for the unpinned step of an AVX2-only one, against which any pin capped at AVX2 is
compared without the wider vectors it gives up by construction.

MKL, oneDNN and ATen read their switches once, before torch first runs, so the modes whose switches differ cannot
share a process as the other figures' steps do: each repetition starts one process per set of switches, in an order
that rotates, and each process times its steps on one thread (its CPU seconds then count its work even on a loaded
machine). ``pinned`` and ``compatible`` have the same switches: one process times both, method by method, each
method's steps under MKL's products first, then inside ``onednn_products``. A ratio is taken repetition by
repetition, as the interleaved figures take theirs. Each process says the branch MKL computed in.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from peftlab.bench.common import ratios
from peftlab.utils.cpu import PINNED

# each mode's switches over an environment without the pin's
MODES = {
    "unpinned": {},
    "unpinned_avx2": {**PINNED, "MKL_CBWR": "AVX2"},
    "compatible": PINNED,
    "pinned": PINNED,
}
# the processes a repetition starts; the compatible one times the pin's steps (inside models.products.onednn_products)
PROCESSES = {"unpinned": (), "unpinned_avx2": (), "compatible": ("pinned",)}
METHODS = ("full", "lora")
WARMUP, TIMED = 2, 5


def pin_figure(model: str | dict, img_size: int | None, batch: int, dtype: str, repeats: int) -> dict:
    """Per method: each mode's median CPU and wall milliseconds a step, and pinned / unpinned, compatible (the former
    pin) / unpinned and pinned / compatible CPU time over the repetitions, both pins against unpinned_avx2 too; per
    mode, the branch MKL reported."""
    source = str(Path(__file__).resolve().parents[2])  # the peftlab this process runs, for the children
    base = {k: v for k, v in os.environ.items() if k not in PINNED}
    base.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [source, base.get("PYTHONPATH")])))
    args = {"model": model, "img_size": img_size, "batch": batch, "dtype": dtype}
    times = {mode: [] for mode in MODES}
    for i in range(repeats):
        order = list(PROCESSES)[i % len(PROCESSES) :] + list(PROCESSES)[: i % len(PROCESSES)]
        for mode in order:
            proc = subprocess.run(
                [sys.executable, "-m", "peftlab.bench.pin", json.dumps({**args, "onednn": bool(PROCESSES[mode])})],
                env={**base, **MODES[mode]},
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                raise RuntimeError(f"bench pin: the {mode} process failed: {proc.stderr.strip()[-500:]}")
            steps = json.loads(proc.stdout.strip().splitlines()[-1])
            for name in (mode, *PROCESSES[mode]):
                times[name].append(
                    {"mkl_branch": steps["mkl_branch"], **steps["oneDNN" if name == "pinned" else "own"]}
                )
    figure = {"threads": 1, "mkl_branch": {mode: runs[0]["mkl_branch"] for mode, runs in times.items()}}
    for method in METHODS:
        cpu = {mode: [run[method]["cpu"] for run in runs] for mode, runs in times.items()}
        figure[method] = {
            **{f"{mode}_cpu_ms": 1e3 * statistics.median(cpu[mode]) for mode in MODES},
            **{
                f"{mode}_wall_ms": 1e3 * statistics.median(run[method]["wall"] for run in times[mode]) for mode in MODES
            },
            "pinned_vs_unpinned": ratios(cpu, "pinned", "unpinned"),
            "compatible_vs_unpinned": ratios(cpu, "compatible", "unpinned"),
            "pinned_vs_compatible": ratios(cpu, "pinned", "compatible"),
            "pinned_vs_unpinned_avx2": ratios(cpu, "pinned", "unpinned_avx2"),
            "compatible_vs_unpinned_avx2": ratios(cpu, "compatible", "unpinned_avx2"),
        }
    return figure


def time_steps(model: str | dict, img_size: int | None, batch: int, dtype: str, onednn: bool = False) -> dict:
    """In a process of one set of switches: MKL's branch, and under ``own`` each method's median CPU and wall seconds
    a step; ``onednn``: under ``oneDNN`` too, those of the same steps inside ``models.products.onednn_products``, each
    method's timed right after its own."""
    import contextlib

    import torch

    from peftlab.bench.common import Trainer, make_cfg
    from peftlab.models.backbones import input_spec_for
    from peftlab.models.products import onednn_products
    from peftlab.utils.provenance import mkl_branch

    torch.set_num_threads(1)
    size = input_spec_for(make_cfg(model, img_size, "lora").model).img_size
    torch.manual_seed(0)
    images, labels = torch.randn(batch, 3, size, size), torch.arange(batch) % 10
    out = {"mkl_branch": mkl_branch(), "own": {}, **({"oneDNN": {}} if onednn else {})}
    pinned = os.environ.get("MKL_CBWR", "").endswith("STRICT")  # a pin: the fused AdamW a reproducible run takes
    for method in METHODS:
        for products in [name for name in ("own", "oneDNN") if name in out]:
            trainer = Trainer(make_cfg(model, img_size, method), images, labels, dtype, reproducible=pinned)
            cpu, wall = [], []
            with onednn_products() if products == "oneDNN" else contextlib.nullcontext():
                for _ in range(WARMUP):
                    trainer.step()
                for _ in range(TIMED):
                    c, w = time.process_time(), time.perf_counter()
                    trainer.step()
                    cpu.append(time.process_time() - c)
                    wall.append(time.perf_counter() - w)
            out[products][method] = {"cpu": statistics.median(cpu), "wall": statistics.median(wall)}
    return out


if __name__ == "__main__":
    print(json.dumps(time_steps(**json.loads(sys.argv[1]))))
