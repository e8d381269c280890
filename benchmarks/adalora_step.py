"""AdaLoRA's step / LoRA's at built rank 8 on q, v, reallocating on every step (tinit=0, deltaT=1), in one
process: LoRA and AdaLoRA steps alternate after two warm-up steps each. ``--profile`` adds cProfile of
four AdaLoRA steps (where its time goes). Run with the tree to measure first on PYTHONPATH:

    PYTHONPATH=src .venv/bin/python benchmarks/adalora_step.py 8 [--profile]
"""

import cProfile
import pstats
import statistics
import sys
import time
from functools import partial

import torch

from peftlab.bench.common import Trainer, make_cfg
from peftlab.bench.methods import method_cfg

torch.manual_seed(0)
images, labels = torch.randn(32, 3, 224, 224), torch.randint(0, 10, (32,))
cfg = partial(make_cfg, "deit_small_patch16_224", None)
trainers = {
    "lora": Trainer(method_cfg(cfg, "lora"), images, labels, "fp32"),
    "adalora": Trainer(cfg("adalora", init_r=8, target_r=4, tinit=0, deltaT=1), images, labels, "fp32"),
}
for trainer in trainers.values():
    trainer.step()
    trainer.step()
times = {name: [] for name in trainers}
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 6):
    for name, trainer in trainers.items():
        start = time.perf_counter()
        trainer.step()
        times[name].append(time.perf_counter() - start)
ratio = statistics.median(a / b for a, b in zip(times["adalora"], times["lora"]))
print({name: round(statistics.median(t), 4) for name, t in times.items()}, "AdaLoRA / LoRA", round(ratio, 3))
if "--profile" in sys.argv:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(4):
        trainers["adalora"].step()
    profile.disable()
    pstats.Stats(profile).sort_stats("cumulative").print_stats(35)
