"""SSF's step: the forward before issue 38 (a multiply and an add after every wrapped layer) against
peftlab's (addcmul; a LayerNorm's scale and shift folded into its affine), and both against LoRA's
step, interleaved in one process.

    python benchmarks/ssf_step.py deit_small_patch16_224 32 6
"""

import statistics
import sys
import time

import torch
from torch import nn

from peftlab.bench.common import Trainer, make_cfg
from peftlab.tuners.ssf.layer import SSFLayer

fused_forward = SSFLayer.forward


def old_forward(self, x):
    out = self.base_layer(x)
    if isinstance(self.base_layer, nn.Conv2d):
        return out * self.ssf_scale[:, None, None] + self.ssf_shift[:, None, None]
    return out * self.ssf_scale + self.ssf_shift


model = sys.argv[1] if len(sys.argv) > 1 else "deit_small_patch16_224"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 32
torch.manual_seed(0)
images, labels = torch.randn(batch, 3, 224, 224), torch.arange(batch) % 10
trainers = {
    name: Trainer(make_cfg(model, None, m), images, labels, "fp32") for name, m in (("ssf", "ssf"), ("lora", "lora"))
}
# equivalence of the outputs
t = trainers["ssf"]
with torch.no_grad():
    for layer in t.model.modules():
        if isinstance(layer, SSFLayer):
            layer.ssf_scale.normal_(1, 0.02)
            layer.ssf_shift.normal_(0, 0.02)
    SSFLayer.forward = old_forward
    a = t.model(images[:4])
    SSFLayer.forward = fused_forward
    b = t.model(images[:4])
print("max |fused - old| logits:", (a - b).abs().max().item())
variants = {"ssf_old": ("ssf", old_forward), "ssf_fused": ("ssf", fused_forward), "lora": ("lora", old_forward)}
times = {k: [] for k in variants}
for tr, fwd in variants.values():  # a warm-up step each
    SSFLayer.forward = fwd
    trainers[tr].step()
for rep in range(int(sys.argv[3]) if len(sys.argv) > 3 else 5):
    order = list(variants) if rep % 2 == 0 else list(reversed(variants))
    for name in order:
        tr, fwd = variants[name]
        SSFLayer.forward = fwd
        start = time.perf_counter()
        trainers[tr].step()
        times[name].append(time.perf_counter() - start)
for name in ("ssf_old", "ssf_fused"):
    r = [x / y for x, y in zip(times[name], times["lora"])]
    print(name, "/ lora step: median", round(statistics.median(r), 3), "min", round(min(r), 3), "max", round(max(r), 3))
r = [x / y for x, y in zip(times["ssf_fused"], times["ssf_old"])]
print("fused / old: median", round(statistics.median(r), 3), [round(x, 3) for x in r])
print("lora step s", round(statistics.median(times["lora"]), 3))
