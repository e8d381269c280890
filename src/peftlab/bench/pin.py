"""What ``train.reproducible``'s pin costs: a training step (full, LoRA) unpinned, pinned (the pin's switches with
every Linear's products through oneDNN at AVX2: ``models.products``, the same bits on an Intel Xeon and an AMD EPYC
in benchmarks/step_probe.py's records) and under the former pin ``compatible`` (the same switches, the products in
MKL's COMPATIBLE branch, the pin until 2026-11-29 and what an archive of its runs reruns with). ``unpinned_avx2`` is
the CPU's own arithmetic held to AVX2 (MKL's AVX2 branch, oneDNN and ATen capped, no STRICT, the unfused AdamW): on a
CPU with AVX-512 it stands in for the unpinned step of an AVX2-only one, against which any pin capped at AVX2 is
compared without the wider vectors it gives up by construction. ``pinned_avx512`` is the pin but for oneDNN's cap,
AVX512_CORE instead of AVX2: what a pin for AVX-512 CPUs alone would cost (step_probe.py's variant ``onednn-avx512``
records its bits; an AVX2-only CPU cannot run those kernels, and there the cap changes nothing: the mode is the pin).
``pinned_mkl_avx2`` is the pin but for MKL's branch, AVX2,STRICT instead of COMPATIBLE,STRICT: the products the pin
leaves to MKL (attention's and the stacked LoRA factors' batched products) in its AVX2 code, a candidate whose bits
step_probe.py's variant ``onednn-mkl-avx2`` records (a pin only where an Intel and an AMD record agree).

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

# each process a repetition starts: its switches over an environment without the pin's, and the modes it times as
# (mode, products): "own" the step as torch computes it, "oneDNN" inside models.products.onednn_products (the pin's)
PROCESSES = {
    "unpinned": ({}, (("unpinned", "own"),)),
    "unpinned_avx2": ({**PINNED, "MKL_CBWR": "AVX2"}, (("unpinned_avx2", "own"),)),
    "compatible": (PINNED, (("compatible", "own"), ("pinned", "oneDNN"))),
    "pinned_avx512": ({**PINNED, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, (("pinned_avx512", "oneDNN"),)),
    "pinned_mkl_avx2": ({**PINNED, "MKL_CBWR": "AVX2,STRICT"}, (("pinned_mkl_avx2", "oneDNN"),)),
}
MODES = tuple(mode for _, timed in PROCESSES.values() for mode, _ in timed)
METHODS = ("full", "lora")
WARMUP, TIMED = 2, 5
# per method, each ratio of the figure: (numerator mode, denominator mode)
RATIOS = {
    "pinned_vs_unpinned": ("pinned", "unpinned"),
    "compatible_vs_unpinned": ("compatible", "unpinned"),
    "pinned_vs_compatible": ("pinned", "compatible"),
    "pinned_vs_unpinned_avx2": ("pinned", "unpinned_avx2"),
    "compatible_vs_unpinned_avx2": ("compatible", "unpinned_avx2"),
    "pinned_avx512_vs_unpinned": ("pinned_avx512", "unpinned"),
    "pinned_mkl_avx2_vs_unpinned": ("pinned_mkl_avx2", "unpinned"),
    "pinned_mkl_avx2_vs_pinned": ("pinned_mkl_avx2", "pinned"),
}


def pin_figure(model: str | dict, img_size: int | None, batch: int, dtype: str, repeats: int) -> dict:
    """Per method: each mode's median CPU and wall milliseconds a step, and each of ``RATIOS`` over the repetitions
    (CPU time); per mode, the branch MKL reported."""
    source = str(Path(__file__).resolve().parents[2])  # the peftlab this process runs, for the children
    base = {k: v for k, v in os.environ.items() if k not in PINNED}
    base.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [source, base.get("PYTHONPATH")])))
    args = {"model": model, "img_size": img_size, "batch": batch, "dtype": dtype}
    times = {mode: [] for mode in MODES}
    names = list(PROCESSES)
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            switches, timed = PROCESSES[name]
            products = [kind for _, kind in timed]
            proc = subprocess.run(
                [sys.executable, "-m", "peftlab.bench.pin", json.dumps({**args, "products": products})],
                env={**base, **switches},
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                raise RuntimeError(f"bench pin: the {name} process failed: {proc.stderr.strip()[-500:]}")
            steps = json.loads(proc.stdout.strip().splitlines()[-1])
            for mode, kind in timed:
                times[mode].append({"mkl_branch": steps["mkl_branch"], **steps[kind]})
    figure = {"threads": 1, "mkl_branch": {mode: runs[0]["mkl_branch"] for mode, runs in times.items()}}
    for method in METHODS:
        cpu = {mode: [run[method]["cpu"] for run in runs] for mode, runs in times.items()}
        figure[method] = {
            **{f"{mode}_cpu_ms": 1e3 * statistics.median(cpu[mode]) for mode in MODES},
            **{
                f"{mode}_wall_ms": 1e3 * statistics.median(run[method]["wall"] for run in times[mode]) for mode in MODES
            },
            **{name: ratios(cpu, top, bottom) for name, (top, bottom) in RATIOS.items()},
        }
    return figure


def time_steps(
    model: str | dict, img_size: int | None, batch: int, dtype: str, products: tuple[str, ...] = ("own",)
) -> dict:
    """In a process of one set of switches: MKL's branch, and under each of ``products`` each method's median CPU and
    wall seconds a step: ``own`` as torch computes it, ``oneDNN`` inside ``models.products.onednn_products``, a
    method's steps under the second right after those under the first."""
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
    out = {"mkl_branch": mkl_branch(), **{kind: {} for kind in products}}
    pinned = os.environ.get("MKL_CBWR", "").endswith("STRICT")  # a pin: the fused AdamW a reproducible run takes
    for method in METHODS:
        for kind in products:
            trainer = Trainer(make_cfg(model, img_size, method), images, labels, dtype, reproducible=pinned)
            cpu, wall = [], []
            with onednn_products() if kind == "oneDNN" else contextlib.nullcontext():
                for _ in range(WARMUP):
                    trainer.step()
                for _ in range(TIMED):
                    c, w = time.process_time(), time.perf_counter()
                    trainer.step()
                    cpu.append(time.process_time() - c)
                    wall.append(time.perf_counter() - w)
            out[kind][method] = {"cpu": statistics.median(cpu), "wall": statistics.median(wall)}
    return out


if __name__ == "__main__":
    from peftlab.utils.libraries import without_bitsandbytes

    without_bitsandbytes()  # this process times unquantized steps and ends: PEFT's LoRA leaves bitsandbytes out
    print(json.dumps(time_steps(**json.loads(sys.argv[1]))))
