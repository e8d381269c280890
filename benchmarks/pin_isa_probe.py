"""What oneDNN's products would cost capped at AVX512_CORE instead of the pin's AVX2 (issue 87): the default study's
model (batch 128, full and LoRA), its training step unpinned, pinned (oneDNN AVX2) and pinned but for oneDNN's cap
(AVX512_CORE; MKL's COMPATIBLE branch, ATen at AVX2 and the fused AdamW as the pin has them): one process per mode and
repetition, in a rotating order, one thread, each mode's median CPU ms a step (peftlab.bench.pin's timing) and the
ratios to unpinned, repetition by repetition. A cost, not a pin: no step probe has recorded the AVX512_CORE products'
whole steps on two vendors, and an AVX2-only CPU cannot run them.

    python benchmarks/pin_isa_probe.py [REPEATS]     (default 4)
"""

import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = {"name": "vit_tiny_patch16_224", "patch_size": 7, "depth": 4, "embed_dim": 128, "num_heads": 4}
ARGS = {"model": MODEL, "img_size": 28, "batch": 128, "dtype": "fp32"}
METHODS = ("full", "lora")


def modes(pinned: dict) -> dict:
    """Each mode's switches and whether its steps run inside oneDNN's products."""
    return {
        "unpinned": ({}, False),
        "pin_avx2": (pinned, True),
        "pin_avx512": ({**pinned, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, True),
    }


def step_times(repeats: int) -> dict:
    """Each mode's CPU ms a step, per method, one list entry per repetition."""
    sys.path.insert(0, os.path.join(REPO, "src"))
    from peftlab.utils.cpu import PINNED

    base = {k: v for k, v in os.environ.items() if k not in PINNED}
    base.update(OMP_NUM_THREADS="1", PYTHONPATH=os.path.join(REPO, "src"))
    switches = modes(PINNED)
    times = {mode: {method: [] for method in METHODS} for mode in switches}
    for i in range(repeats):
        order = list(switches)[i % 3 :] + list(switches)[: i % 3]
        for mode in order:
            env, onednn = switches[mode]
            proc = subprocess.run(
                [sys.executable, "-m", "peftlab.bench.pin", json.dumps({**ARGS, "onednn": onednn})],
                env={**base, **env},
                capture_output=True,
                text=True,
                check=True,
            )
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            for method in METHODS:
                times[mode][method].append(1e3 * out["oneDNN" if onednn else "own"][method]["cpu"])
        print(i, {mode: {m: round(v[-1], 1) for m, v in t.items()} for mode, t in times.items()}, flush=True)
    return times


def main() -> None:
    times = step_times(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
    for method in METHODS:
        medians = {mode: round(statistics.median(t[method]), 1) for mode, t in times.items()}
        line = [method, medians]
        for mode in ("pin_avx2", "pin_avx512"):
            ratios = [a / b for a, b in zip(times[mode][method], times["unpinned"][method], strict=True)]
            line += [f"{mode}/unpinned", round(statistics.median(ratios), 3), [round(r, 3) for r in ratios]]
        print(*line)
    print("load", open("/proc/loadavg").read().split()[:3])


if __name__ == "__main__":
    main()
