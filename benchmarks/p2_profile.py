import sys

import torch
from torch.profiler import ProfilerActivity, profile

from peftlab.bench.common import Trainer, make_cfg

torch.manual_seed(0)
images = torch.randn(32, 3, 224, 224)
labels = torch.arange(32) % 10
which = sys.argv[1:] or ["lora", "full"]
for name in which:
    cfg = make_cfg("deit_small_patch16_224", None, "lora" if name == "lora" else "full")
    t = Trainer(cfg, images, labels, "fp32")
    for _ in range(2):
        t.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            t.step()
    print("=====", name)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=22))
