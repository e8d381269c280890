"""A training step with glibc's mmap threshold at 128 KiB against 32 MiB, interleaved in one process (issue 38).

python benchmarks/mmap_threshold_step.py deit_small_patch16_224 32 lora 8
"""

import ctypes
import statistics
import sys
import time

import torch

from peftlab.bench.common import Trainer, make_cfg

libc = ctypes.CDLL("libc.so.6")
M_MMAP_THRESHOLD = -3
model, batch, method = sys.argv[1], int(sys.argv[2]), sys.argv[3]
size = 224
t = Trainer(make_cfg(model, None, method), torch.randn(batch, 3, size, size), torch.arange(batch) % 10, "fp32")
t.step()
t.step()
times = {"small": [], "large": []}
for rep in range(int(sys.argv[4])):
    for name in ("small", "large") if rep % 2 == 0 else ("large", "small"):
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024 if name == "small" else 32 * 1024 * 1024)
        start = time.perf_counter()
        t.step()
        times[name].append(time.perf_counter() - start)
r = [a / b for a, b in zip(times["small"], times["large"])]
print(
    model,
    method,
    "mmap 128K / 32M step:",
    round(statistics.median(r), 3),
    [round(x, 3) for x in r],
    "step s",
    round(statistics.median(times["large"]), 3),
)
