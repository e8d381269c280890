"""A method's training step under train.malloc lean and system, each mode in fresh processes (issue 38).

python benchmarks/malloc_step.py vit_large_patch16_224 4 qlora 1   # gradient checkpointing on
python benchmarks/malloc_step.py deit_small_patch16_224 32 lora 0

Each mode runs in its own process (alternating, ``ROUNDS`` of each): glibc serves a request from
free heap memory before it looks at the mmap threshold, so switching the threshold inside one
process (the interleaved script this replaces) times lean steps on the heap that system steps
left, and showed lean at 1.02x where fresh processes show 1.19-1.29x.

For qlora each mode also runs with bitsandbytes' own 4-bit matmul in place of peftlab's
``BufferedLinear4bit`` (a new dequantized weight per forward and backward) and PEFT's three bnb
LoRA layers in place of the fused q/k/v step on a stacked buffer, side by side in the same
rounds. Each child prints the median of 3 steps after a warm-up and its peak RSS above the built
model (``/proc/self/clear_refs`` resets the peak after the build and a ``malloc_trim``).
"""

import statistics
import subprocess
import sys

ROUNDS = 2
CHILD = """
import ctypes, dataclasses, statistics, sys, time
import torch
from peftlab.quant import allocator
from peftlab.bench.common import Trainer, make_cfg
from peftlab.config.schema import load_config
model, batch, method, mode, ckpt, matmul = sys.argv[1:7]
allocator.configure(mode)
if matmul == "bnb":  # the code before quant_step: bitsandbytes' matmul, PEFT's three bnb LoRA layers
    import bitsandbytes
    from peftlab.quant.step import BufferedLinear4bit
    from peftlab.tuners import modules
    BufferedLinear4bit.forward = bitsandbytes.nn.Linear4bit.forward
    modules.quantized_stack = lambda *args: None
quant = {"mode": "nf4", "double_quant": True} if method == "qlora" else {}
cfg = make_cfg(model, None, "lora" if method == "qlora" else method, quant=quant)
train = load_config(overrides={"train": {"grad_checkpointing": ckpt == "1", "clip_grad": 1.0, "malloc": mode}}).train
n = int(batch)
t = Trainer(dataclasses.replace(cfg, train=train), torch.randn(n, 3, 224, 224), torch.arange(n) % 10, "fp32")
ctypes.CDLL("libc.so.6").malloc_trim(0)
def status(key):
    return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith(key))
built = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
t.step()
times = []
for _ in range(3):
    start = time.perf_counter()
    t.step()
    times.append(time.perf_counter() - start)
print(statistics.median(times), status("VmHWM") - built)
"""


def step(mode: str, matmul: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *sys.argv[1:4], mode, sys.argv[4], matmul], capture_output=True, text=True
    )
    if out.returncode:
        sys.exit(out.stderr)
    seconds, peak = out.stdout.split()[-2:]
    return float(seconds), float(peak)


matmuls = ["buffered", "bnb"] if sys.argv[3] == "qlora" else ["buffered"]
variants = [(mode, matmul) for matmul in matmuls for mode in ("lean", "system")]
results = {v: [] for v in variants}
for _ in range(ROUNDS):
    for variant in variants:
        results[variant].append(step(*variant))
        print(variant, results[variant][-1], flush=True)
name = " ".join(sys.argv[1:4])
median = {v: statistics.median(s for s, _ in r) for v, r in results.items()}
for (mode, matmul), runs in results.items():
    steps = ", ".join(f"{s:.2f}" for s, _ in runs)
    peaks = ", ".join(f"{p:.0f}" for _, p in runs)
    ratio = median[(mode, matmul)] / median[("system", matmul)]
    print(f"{name} {matmul:8} {mode:6}: step {steps} s ({ratio:.3f}x system), train peak {peaks} MiB above the build")
