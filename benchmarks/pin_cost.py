"""What train.reproducible's pin costs: a training step pinned / unpinned, in processes taken in turn.

The pin is set before torch is imported, so the two cannot be timed in one process as ``peftlab bench``
times its steps; here each repetition starts an unpinned and a pinned process (in alternating order) that
train the same model for a few steps and print the median CPU seconds and wall seconds of a step. One
thread per process (CPU seconds then count the work even on a loaded machine). The model: the default
study's pretraining (a ViT of 4 blocks, width 128, 28 px, 7 px patches; full fine-tuning, batch 128) and
its LoRA runs' step (LoRA r=8 on q, v); peftlab's step (``peftlab.bench.common.Trainer``), with the
AdamW a reproducible run takes when pinned (fused).

    PYTHONPATH=src python benchmarks/pin_cost.py [repeats]
"""

import json
import os
import statistics
import subprocess
import sys

from peftlab.utils.cpu import PINNED

CHILD = r"""
import json, statistics, time, torch
from peftlab.bench.common import Trainer, make_cfg
model = {"name": "vit_tiny_patch16_224", "patch_size": 7, "depth": 4, "embed_dim": 128, "num_heads": 4}
torch.manual_seed(0)
images, labels = torch.randn(128, 3, 28, 28), torch.randint(0, 10, (128,))
out = {}
for method in ("full", "lora"):
    t = Trainer(make_cfg(model, 28, method), images, labels, "fp32")
    for _ in range(3):
        t.step()
    cpu, wall = [], []
    for _ in range(15):
        c, w = time.process_time(), time.perf_counter()
        t.step()
        cpu.append(time.process_time() - c); wall.append(time.perf_counter() - w)
    fused = t.optimizer.defaults["fused"]
    out[method] = {"cpu": statistics.median(cpu), "wall": statistics.median(wall), "fused": fused}
print(json.dumps(out))
"""


def main(repeats: int) -> None:
    base = {k: v for k, v in os.environ.items() if k not in PINNED}
    env = {"unpinned": {**base, "OMP_NUM_THREADS": "1"}, "pinned": {**base, **PINNED, "OMP_NUM_THREADS": "1"}}
    runs = {"unpinned": [], "pinned": []}
    for i in range(repeats):
        for mode in ("unpinned", "pinned") if i % 2 == 0 else ("pinned", "unpinned"):
            proc = subprocess.run([sys.executable, "-c", CHILD], env=env[mode], capture_output=True, text=True)
            runs[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"load average {os.getloadavg()[0]:.1f}; median over {repeats} processes of each, per step:")
    for method in ("full", "lora"):
        cells = {}
        for mode in runs:
            cells[mode] = {k: statistics.median(r[method][k] for r in runs[mode]) for k in ("cpu", "wall")}
        ratio = cells["pinned"]["cpu"] / cells["unpinned"]["cpu"]
        unpinned, pinned = 1e3 * cells["unpinned"]["cpu"], 1e3 * cells["pinned"]["cpu"]
        print(
            f"{method:5s} CPU ms unpinned {unpinned:.1f}, pinned {pinned:.1f} "
            f"(pinned / unpinned {ratio:.3f}); wall ms {1e3 * cells['unpinned']['wall']:.1f}, "
            f"{1e3 * cells['pinned']['wall']:.1f}; pinned AdamW fused: {runs['pinned'][0][method]['fused']}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4)
