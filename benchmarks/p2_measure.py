import os
import statistics
import sys

import torch

from peftlab.bench.common import Trainer, make_cfg
from peftlab.training import metrics

torch.manual_seed(0)
images = torch.randn(32, 3, 224, 224)
labels = torch.arange(32) % 10
tr = {
    "lora": Trainer(make_cfg("deit_small_patch16_224", None, "lora"), images, labels, "fp32"),
    "full": Trainer(make_cfg("deit_small_patch16_224", None, "full"), images, labels, "fp32"),
}
reps = int(sys.argv[1]) if len(sys.argv) > 1 else 4
print("load", os.getloadavg())
times = metrics.time_interleaved({k: t.step for k, t in tr.items()}, reps, torch.device("cpu"), warmup=1)
r = [a / b for a, b in zip(times["lora"], times["full"])]
print(
    {k: [round(x, 2) for x in v] for k, v in times.items()},
    "ratios",
    [round(x, 3) for x in r],
    "median",
    round(statistics.median(r), 3),
)
print("load", os.getloadavg())
