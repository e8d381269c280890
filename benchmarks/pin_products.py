"""The pinned step's products one by one, at the default study's shapes, under each way of computing them (issue 87).

    python benchmarks/pin_products.py [--repeats 3] [--calls 30] [--out FILE.json]

``benchmarks/pin_ops.py`` splits a whole step's time into kinds under a profiler; this times each product alone, in
CPU time (``time.process_time``, one thread), so that a kind's share is not the profiler's. Every Linear of the
default study's model (4 blocks, width 128, 28 px, batch 128: M = 2,176 rows) computes ``x W^T`` (forward), ``g W``
(its input's gradient) and ``g^T x`` (its weight's), at K x N = 128 x 384 (q/k/v), 128 x 128 (proj, the LoRA base's
slices), 128 x 512 (fc1), 512 x 128 (fc2) and LoRA's rank-8 factors (128 x 8, 8 x 128); beside them the products the
pin leaves to MKL: attention (``F.scaled_dot_product_attention``, forward and backward, 128 x 4 heads x 17 tokens x
32) and the LoRA step's stacked q and v factors (``bmm`` and ``baddbmm_``, batch 2). Three processes a repetition, in
an order that rotates (the switches are read once, before torch runs): ``pin`` (``utils.cpu.PINNED``: the Linears
through oneDNN at AVX2, ``models.products``; the rest in MKL's COMPATIBLE branch), ``mkl_avx2`` (the pin's switches
but MKL's AVX2 branch: what the same kernels cost there, the AVX2 floor, which does not give the same bits on Intel
and AMD) and ``mkl_compatible`` (every product in MKL's COMPATIBLE branch, the former pin). Medians over the
repetitions, milliseconds a call, and each product's ratio to ``mkl_avx2``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pin_ops import cpu_name, rotating_runs  # noqa: E402  (beside this script)

from peftlab.utils.cpu import PINNED  # noqa: E402  (torch-free)

MODES = {
    "pin": (PINNED, True),
    "mkl_avx2": ({**PINNED, "MKL_CBWR": "AVX2,STRICT"}, False),
    "mkl_compatible": (PINNED, False),
}
ROWS = 2176  # batch 128 x 17 tokens
LINEARS = {"qkv": (128, 384), "proj": (128, 128), "fc1": (128, 512), "fc2": (512, 128), "lora_a": (128, 8)}
LINEARS["lora_b"] = (8, 128)


def time_calls(fn, calls: int) -> float:
    import time

    for _ in range(3):
        fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e3


def linear_calls(onednn: bool, x, w, b, g) -> dict:
    """A Linear's three products: through oneDNN (the pin's ``models.products``), else MKL's (``addmm``, ``mm``)."""
    import torch

    if onednn:
        linear = torch.ops.mkldnn._linear_pointwise
        return {
            "forward": lambda: linear(x, w, b, "none", [], ""),
            "input grad": lambda: linear(g, w.t(), None, "none", [], ""),
            "weight grad": lambda: linear(g.t(), x.t(), None, "none", [], ""),
        }
    return {
        "forward": lambda: torch.addmm(b, x, w.t()),
        "input grad": lambda: torch.mm(g, w),
        "weight grad": lambda: torch.mm(g.t(), x),
    }


def time_products(onednn: bool, calls: int) -> dict[str, float]:
    """In a process of one set of switches: milliseconds a call of each product."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    out = {}
    for name, (k, n) in LINEARS.items():
        x, w, b, g = (torch.randn(*shape, generator=generator) for shape in ((ROWS, k), (n, k), (n,), (ROWS, n)))
        calls_of = linear_calls(onednn, x, w, b, g)
        for part, fn in calls_of.items():
            out[f"{name} {part}"] = time_calls(fn, calls)
    q, k, v = (torch.randn(128, 4, 17, 32, generator=generator, requires_grad=True) for _ in range(3))

    def attention_step():
        F.scaled_dot_product_attention(q, k, v).sum().backward()

    out["attention forward+backward"] = time_calls(attention_step, calls)
    factors, inputs = torch.randn(2, 8, 128, generator=generator), torch.randn(2, 128, ROWS, generator=generator)
    grads, rows = torch.randn(2, 8, ROWS, generator=generator), torch.randn(2, ROWS, 128, generator=generator)
    target, low = torch.randn(2, ROWS, 128, generator=generator), torch.randn(2, ROWS, 8, generator=generator)
    out["stacked factors bmm (2 x 8x128 @ 128x2176)"] = time_calls(lambda: torch.bmm(factors, inputs), calls)
    out["stacked factors bmm (2 x 8x2176 @ 2176x128)"] = time_calls(lambda: torch.bmm(grads, rows), calls)
    out["stacked factors baddbmm_ (2 x 2176x8 @ 8x128)"] = time_calls(lambda: target.baddbmm_(low, factors), calls)
    return out


def measure(repeats: int, calls: int) -> dict[str, dict[str, float]]:
    runs = rotating_runs(MODES, f"time_products({{arg}}, {calls})", repeats, __file__)
    products = list(runs["pin"][0])
    return {p: {name: statistics.median(run[p] for run in runs[name]) for name in MODES} for p in products}


def table(figure: dict[str, dict[str, float]]) -> str:
    lines = ["| product | pin ms | MKL AVX2 ms | MKL COMPATIBLE ms | pin / AVX2 | COMPATIBLE / AVX2 |"]
    lines.append("|---|---:|---:|---:|---:|---:|")
    for product, ms in figure.items():
        floor = ms["mkl_avx2"]
        lines.append(
            f"| {product} | {ms['pin']:.3f} | {floor:.3f} | {ms['mkl_compatible']:.3f} | "
            f"{ms['pin'] / floor:.2f} | {ms['mkl_compatible'] / floor:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load = os.getloadavg()
    figure = measure(args.repeats, args.calls)
    record = {
        "cpu": cpu_name(),
        "flags": cpu_flags(),
        "load_average": [load, os.getloadavg()],
        "repeats": args.repeats,
        "calls": args.calls,
        "figure": figure,
    }
    print(table(figure))
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


def cpu_flags() -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return sorted(set(line.split(":", 1)[1].split()) & {"avx2", "avx512f", "avx512_bf16", "amx_tile"})
    return []


if __name__ == "__main__":
    main()
