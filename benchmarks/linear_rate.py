"""The default study's Linear products at a test pass's shapes, pinned and unpinned: how fast a final run's test
pass can be.

    python benchmarks/linear_rate.py --pinned     # the study's pin (before torch), the products through oneDNN
    python benchmarks/linear_rate.py              # unpinned: F.linear as torch computes it (MKL's own branch)

One thread. The shapes are the default study's ViT (width 128, MLP 512, 17 tokens an image) at its evaluation
batch of 500 images (M = 8,500) and its training batch of 64 (M = 1,088): the q/k/v, projection, fc1 and fc2
products with their bias. Each product is timed for half a second of CPU after a warm-up call; the lines give its
CPU milliseconds a call and its rate in GFLOP/s (2 M K N over the call's CPU time). Pinned, each product is
``torch.ops.mkldnn._linear_pointwise`` (what ``models.products.onednn_products`` computes a Linear with) and, beside
it, ``F.linear`` outside the mode (MKL's COMPATIBLE branch, the former pin); unpinned, the same two calls, where
``F.linear`` is torch's own. MKL and oneDNN read their switches once, so a pinned and an unpinned figure come from
two processes: run both, one after the other, and compare the lines.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SHAPES = {  # name: (M, K, N)
    "qkv, test pass": (8500, 128, 384),
    "proj, test pass": (8500, 128, 128),
    "fc1, test pass": (8500, 128, 512),
    "fc2, test pass": (8500, 512, 128),
    "qkv, training batch": (1088, 128, 384),
}


def timed(call, seconds: float = 0.5) -> float:
    """CPU seconds a call of ``call``, over at least ``seconds`` of CPU after one warm-up call."""
    call()
    calls, started = 0, time.process_time()
    while time.process_time() - started < seconds:
        call()
        calls += 1
    return (time.process_time() - started) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pinned", action="store_true", help="the study's pin, set before torch is imported")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.pinned:
        from peftlab.utils.cpu import pin_arithmetic

        pin_arithmetic()
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(0)
    mode = "pinned" if args.pinned else "unpinned"
    figures: dict[str, dict] = {}
    for name, (m, k, n) in SHAPES.items():
        operands = torch.randn(m, k), torch.randn(n, k), torch.randn(n)  # input, weight, bias
        calls = {
            "oneDNN": lambda ops=operands: torch.ops.mkldnn._linear_pointwise(*ops, "none", [], ""),
            "F.linear": lambda ops=operands: F.linear(*ops),
        }
        for route, call in calls.items():
            seconds = timed(call)
            rate = 2 * m * k * n / seconds / 1e9
            figures[f"{name}: {route}"] = {"cpu_ms": round(seconds * 1e3, 3), "gflops_per_s": round(rate, 1)}
            shape = f"M={m:5d} K={k:3d} N={n:3d}"
            print(f"{mode:8s} {name:20s} {shape} {route:8s} {seconds * 1e3:7.2f} ms {rate:5.1f} GFLOP/s")
    if args.json:
        args.json.write_text(json.dumps({"mode": mode, "products": figures}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
