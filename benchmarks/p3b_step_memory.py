"""One method's build and step peaks on ViT-L (batch 4), with or without gradient checkpointing (issue 38).

python benchmarks/p3b_step_memory.py 1 lora        # checkpointing on; 0 for off
MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/p3b_step_memory.py 1 lora
"""

import dataclasses
import sys

import torch

from peftlab.bench.common import Trainer, make_cfg
from peftlab.config.schema import load_config
from peftlab.training import metrics

ckpt = sys.argv[1] == "1"
method = sys.argv[2]
cfg = make_cfg("vit_large_patch16_224", None, method)
cfg = dataclasses.replace(
    cfg, train=load_config(overrides={"train": {"grad_checkpointing": ckpt, "clip_grad": 1.0}}).train
)
images, labels = torch.randn(4, 3, 224, 224), torch.arange(4)
rss = metrics.PeakRSS()
t = Trainer(cfg, images, labels, "fp32")
after = rss.now_above_baseline()
rss.reset_peak()
t.step()
p1 = rss.peak_above_baseline()
rss.reset_peak()
t.step()
p2 = rss.peak_above_baseline()
print(f"ckpt={ckpt} {method}: after build {after >> 20} MiB, step 1 peak {p1 >> 20} MiB, step 2 peak {p2 >> 20} MiB")
