"""A training step with glibc's mmap threshold fixed low against 32 MiB, interleaved in one process (issue 38).

python benchmarks/mmap_threshold_step.py deit_small_patch16_224 32 lora 8 1048576
python benchmarks/mmap_threshold_step.py vit_large_patch16_224 4 qlora 4 1048576

The last argument is the low threshold in bytes (128 KiB when left out).
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
low = int(sys.argv[5]) if len(sys.argv) > 5 else 128 * 1024
quant = {"mode": "nf4", "double_quant": True} if method == "qlora" else {}
cfg = make_cfg(model, None, "lora" if method == "qlora" else method, quant=quant)
t = Trainer(cfg, torch.randn(batch, 3, 224, 224), torch.arange(batch) % 10, "fp32")
t.step()
t.step()
times = {"low": [], "high": []}
for rep in range(int(sys.argv[4])):
    for name in ("low", "high") if rep % 2 == 0 else ("high", "low"):
        libc.mallopt(M_MMAP_THRESHOLD, low if name == "low" else 32 * 1024 * 1024)
        start = time.perf_counter()
        t.step()
        times[name].append(time.perf_counter() - start)
r = [a / b for a, b in zip(times["low"], times["high"])]
print(
    model,
    method,
    f"mmap {low >> 10} KiB / 32 MiB step:",
    round(statistics.median(r), 3),
    [round(x, 3) for x in r],
    "step s",
    round(statistics.median(times["high"]), 3),
)
