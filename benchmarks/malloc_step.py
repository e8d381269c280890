"""A method's training step under train.malloc lean and system, each mode in fresh processes (issue 38).

python benchmarks/malloc_step.py vit_large_patch16_224 4 qlora 1   # gradient checkpointing on
python benchmarks/malloc_step.py deit_small_patch16_224 32 lora 0

Each mode runs in its own process (alternating, ``ROUNDS`` of each): glibc serves a request from
free heap memory before it looks at the mmap threshold, so switching the threshold inside one
process (the interleaved script this replaces) times lean steps on the heap that system steps
left, and showed lean at 1.02x where fresh processes show 1.19-1.29x.
"""

import statistics
import subprocess
import sys

ROUNDS = 2
CHILD = """
import dataclasses, statistics, sys, time
import torch
from peftlab import allocator
from peftlab.bench.common import Trainer, make_cfg
from peftlab.config import load_config
model, batch, method, mode, ckpt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"
allocator.configure(mode)
quant = {"mode": "nf4", "double_quant": True} if method == "qlora" else {}
cfg = make_cfg(model, None, "lora" if method == "qlora" else method, quant=quant)
train = load_config(overrides={"train": {"grad_checkpointing": ckpt, "clip_grad": 1.0, "malloc": mode}}).train
t = Trainer(dataclasses.replace(cfg, train=train), torch.randn(batch, 3, 224, 224), torch.arange(batch) % 10, "fp32")
t.step()
times = []
for _ in range(3):
    start = time.perf_counter()
    t.step()
    times.append(time.perf_counter() - start)
print(statistics.median(times))
"""


def step_seconds(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *sys.argv[1:4], mode, sys.argv[4]], capture_output=True, text=True
    )
    if out.returncode:
        sys.exit(out.stderr)
    return float(out.stdout.split()[-1])


times = {"lean": [], "system": []}
for _ in range(ROUNDS):
    for mode in times:
        times[mode].append(step_seconds(mode))
lean, system = (statistics.median(times[m]) for m in ("lean", "system"))
name = " ".join(sys.argv[1:4])
print(f"{name}: lean / system step {lean / system:.3f} (lean {times['lean']}, system {times['system']})")
