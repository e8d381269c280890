"""The causal LM loss layout in peftlab's training step, before and after (benchmarks/README.md, "Text models").

Before: ``F.cross_entropy`` over the class dim of the (B, vocabulary, L - 1) view ``HFCausalLM`` returns (a
transposed slice of transformers' (B, L, vocabulary) logits). After (``training.step.compute_loss``): the
view read with the vocabulary last, flattened to (B (L - 1), vocabulary). Both peftlab steps and the bare
transformers + PEFT loop of ``peftlab bench --only text`` are timed in alternation in one process, wall and
CPU time, on the text figure's GPT-2 (12 layers, width 768, batch 8 x 128 tokens).

    PYTHONPATH=src nice .venv/bin/python benchmarks/text_loss_layout.py [repeats]
"""

import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from peftlab.bench.common import Trainer
from peftlab.bench.text import C_ATTN, BareStep, TextSizes, text_batch, text_cfg, time_alternately, write_gpt2
from peftlab.training import step as training_step_module
from peftlab.training.runtime import autocast


def loss_before(model, images, labels, precision, device, label_smoothing=0.0):
    """compute_loss as it was: the (B, vocabulary, L - 1) view given to cross_entropy as it comes."""
    with autocast(precision, device):
        logits = model(images)
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def with_loss(step, loss):
    def run():
        now = training_step_module.compute_loss
        training_step_module.compute_loss = loss
        try:
            step()
        finally:
            training_step_module.compute_loss = now

    return run


repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 6
sizes, device = TextSizes(), torch.device("cpu")
print("threads", torch.get_num_threads(), "load", os.getloadavg())
with tempfile.TemporaryDirectory() as tmp:
    model_dir = write_gpt2(Path(tmp), sizes)
    tokens, targets = text_batch(sizes, device)
    cfg = text_cfg(model_dir, sizes.r, [C_ATTN])
    before, after = (Trainer(cfg, tokens, targets, "fp32") for _ in range(2))
    bare = BareStep(model_dir, cfg, tokens, "fp32", device)
    fns = {"before": with_loss(before.step, loss_before), "after": after.step, "bare": bare.step}
    times = time_alternately(fns, repeats, device, warmup=1)
for clock, t in times.items():
    for name in ("before", "after"):
        ratios = [a / b for a, b in zip(t[name], t["bare"])]
        print(clock, name, "/ bare: median", round(statistics.median(ratios), 3), [round(r, 3) for r in ratios])
    print(clock, "seconds", {k: round(statistics.median(v), 2) for k, v in t.items()})
print("load", os.getloadavg())
