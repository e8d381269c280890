"""Where the pinned step's time goes, by kind of operation, beside the unpinned step and the AVX2 floor (issue 87).

    python benchmarks/pin_ops.py [--repeats 3] [--steps 5] [--out FILE.json]

``peftlab bench --only pin`` says what the pin costs; this says where. Three processes a repetition, in an order that
rotates (the switches are read once, before torch runs): ``unpinned`` (the CPU's own arithmetic), ``avx2_floor`` (the
same capped at AVX2: MKL's AVX2 branch, oneDNN and ATen at AVX2, no STRICT; what any pin that an AVX2-only CPU can
compute gives up on a CPU with AVX-512 by construction) and ``pin`` (``utils.cpu.PINNED``, the fused AdamW and every
Linear's products through oneDNN: ``models.products``). Each times ``--steps`` steps of the default study's model
(full and LoRA, batch 128, one thread) in CPU time after two warm-up steps, then as many under torch's profiler,
whose operators' own times, summed into kinds (``KINDS``), divide the step's CPU time (the profiler's clock is the
wall's, which a loaded machine stretches; its shares stand): the products (MKL's ``mm``, ``addmm`` and ``bmm`` or
oneDNN's linear, with the transposing copies oneDNN's weight-gradient product makes of its input), attention (ATen's
fused CPU attention, whose inner products are MKL's: COMPATIBLE under the pin), GELU, and the rest. Medians over the
repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from peftlab.utils.cpu import PINNED  # noqa: E402  (torch-free)

MODES = {
    "unpinned": ({}, "own"),
    "avx2_floor": ({**PINNED, "MKL_CBWR": "AVX2"}, "own"),
    "pin": (PINNED, "oneDNN"),
}
METHODS = ("full", "lora")
# operator name -> kind; the products' transposing copies are counted by their parent (``children``)
KINDS = {
    "aten::mm": "products",
    "aten::addmm": "products",
    "aten::bmm": "products",
    "mkldnn::_linear_pointwise": "products",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward": "attention",
    "aten::gelu": "gelu",
    "aten::gelu_backward": "gelu",
}
MODEL = {"name": "vit_tiny_patch16_224", "depth": 4, "embed_dim": 128, "num_heads": 4, "patch_size": 7}


def kinds_of(events) -> dict[str, float]:
    """Milliseconds of own CPU time by kind; a product's children (its input's transposing copy) count as it."""
    out = dict.fromkeys(("products", "attention", "gelu", "rest"), 0.0)
    for event in events:
        kind = KINDS.get(event.name)
        if event.name == "mkldnn::_linear_pointwise":
            out[kind] += event.cpu_time_total / 1e3  # with its children: the copies it makes
        elif kind is not None:
            out[kind] += event.self_cpu_time_total / 1e3
        elif not any(parent_is_product(event)):
            out["rest"] += event.self_cpu_time_total / 1e3
    return out


def parent_is_product(event):
    parent = event.cpu_parent
    while parent is not None:
        yield parent.name == "mkldnn::_linear_pointwise"
        parent = parent.cpu_parent


def time_kinds(products: str, steps: int) -> dict:
    """In a process of one set of switches: each method's step, CPU ms by kind and in all."""
    import contextlib
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile

    from peftlab.bench.common import Trainer, make_cfg
    from peftlab.models.products import onednn_products
    from peftlab.utils.libraries import without_bitsandbytes

    without_bitsandbytes()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images, labels = torch.randn(128, 3, 28, 28), torch.arange(128) % 10
    pinned = os.environ.get("MKL_CBWR", "").endswith("STRICT")
    out = {}
    for method in METHODS:
        trainer = Trainer(make_cfg(MODEL, 28, method), images, labels, "fp32", reproducible=pinned)
        with onednn_products() if products == "oneDNN" else contextlib.nullcontext():
            for _ in range(2):
                trainer.step()
            start = time.process_time()
            for _ in range(steps):
                trainer.step()
            step_ms = (time.process_time() - start) / steps * 1e3
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(steps):
                    trainer.step()
        kinds = kinds_of(prof.events())  # the profiler's clock is the wall's: its shares, of the step's CPU time
        total = sum(kinds.values())
        out[method] = {"step_ms": step_ms, **{kind: step_ms * ms / total for kind, ms in kinds.items()}}
    return out


def rotating_runs(modes: dict, call: str, repeats: int, script: str) -> dict[str, list]:
    """Each mode's JSON results over ``repeats`` repetitions: one process a mode a repetition, in an order that
    rotates, with the mode's switches (``modes[name][0]``) over an environment without the pin's, one thread; the
    process runs ``from <script's module> import ...; print(json.dumps(<call with {arg}>))``, ``{arg}`` the
    mode's second element."""
    names = list(modes)
    runs = {name: [] for name in names}
    base = {k: v for k, v in os.environ.items() if k not in PINNED}
    base.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    module, function = Path(script).stem, call.split("(")[0]
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            switches, arg = modes[name]
            code = f"import json, sys; sys.argv[0] = {script!r}; from {module} import {function}; "
            code += f"print(json.dumps({call.format(arg=repr(arg))}))"
            proc = subprocess.run(
                [sys.executable, "-c", code],
                env={**base, **switches},
                cwd=Path(script).parent,
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode:
                raise SystemExit(f"{module}: the {name} process failed: {proc.stderr.strip()[-800:]}")
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return runs


def measure(repeats: int, steps: int) -> dict:
    runs = rotating_runs(MODES, f"time_kinds({{arg}}, {steps})", repeats, __file__)
    return {
        method: {
            name: {key: statistics.median(run[method][key] for run in runs[name]) for key in runs[name][0][method]}
            for name in MODES
        }
        for method in METHODS
    }


def table(figure: dict) -> str:
    lines = []
    for method, modes in figure.items():
        keys = list(next(iter(modes.values())))
        lines += [f"\n{method}: CPU ms a step (own time of the operators by kind; step_ms timed unprofiled)", ""]
        lines += ["| mode | " + " | ".join(keys) + " |", "|---" + "|---:" * len(keys) + "|"]
        for name, values in modes.items():
            lines.append(f"| {name} | " + " | ".join(f"{values[k]:.1f}" for k in keys) + " |")
        pin, floor, own = modes["pin"]["step_ms"], modes["avx2_floor"]["step_ms"], modes["unpinned"]["step_ms"]
        lines.append(
            f"\npin / unpinned {pin / own:.3f}; avx2_floor / unpinned {floor / own:.3f}; "
            f"pin / avx2_floor {pin / floor:.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load = os.getloadavg()
    figure = measure(args.repeats, args.steps)
    record = {
        "cpu": cpu_name(),
        "load_average": [load, os.getloadavg()],
        "steps": args.steps,
        "repeats": args.repeats,
        "figure": figure,
    }
    print(table(figure))
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
