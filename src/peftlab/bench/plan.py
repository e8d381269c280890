"""A study's time on this machine from measured steps: ``peftlab study STUDY --dry-run --time-steps``.

The dry-run's FLOP count assumes a sustained rate; a researcher sizing 19 tasks x methods x seeds on a
GPU wants what the GPU does with the study's own model. This module times the recipe's own training
step (``bench.common.Trainer``: the optimizer, clipping and precision a run uses) for every distinct
configuration the study will train (model, method, quantization, batch size, precision, compile), on the
device its runs use, with random weights of the same architecture (nothing is downloaded or read), and
multiplies out every run and tuning trial:

    steps x step seconds  +  validation images x epochs x (step seconds / 3 / batch size)

(an evaluation image costs about a third of a training one: a forward without the backward). The
images per run are known without reading data for VTAB-1k and for configs that set
``data.train_subset``; other runs are counted as unknown, as the FLOP estimate counts them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter

from peftlab.config.schema import RunConfig, to_dict
from peftlab.config.sections import architecture_only

TIMED_STEPS = 5  # after two untimed ones (the first compiles, where train.compile is on)


def step_key(cfg: RunConfig) -> str:
    """What a step's time depends on: the architecture, method, quantization, batch, precision, compile."""
    train = cfg.train
    return json.dumps(
        {
            "model": to_dict(architecture_only(cfg.model)),
            "method": to_dict(cfg.method),
            "quant": to_dict(cfg.quant),
            "train": [train.batch_size, train.precision, train.compile, train.device, train.grad_checkpointing],
        },
        sort_keys=True,
        default=str,
    )


def time_step(cfg: RunConfig, steps: int = TIMED_STEPS) -> float:
    """Median seconds of one training step of ``cfg`` with random weights, on the device it trains on."""
    import statistics

    import torch

    from peftlab.bench.common import Trainer
    from peftlab.models.backbones import input_spec_for
    from peftlab.training import metrics
    from peftlab.training.runtime import resolve_precision, select_device

    device = select_device(cfg.train.device)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained="none"))
    spec = input_spec_for(cfg.model)
    batch = cfg.train.batch_size
    images = torch.randn(batch, spec.in_chans, spec.img_size, spec.img_size, device=device)
    labels = (torch.arange(batch) % 10).to(device)
    precision = resolve_precision(cfg.train.precision, device)
    trainer = Trainer(
        cfg, images, labels, precision, device=device, compiled=cfg.train.compile, clip_grad=cfg.train.clip_grad
    )
    for _ in range(2):
        trainer.step()
    seconds = []
    for _ in range(steps):
        metrics.synchronize(device)
        start = time.perf_counter()
        trainer.step()
        metrics.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def run_seconds(cfg: RunConfig, step: float) -> float | None:
    """A run's (or trial's) training and validation seconds at ``step`` seconds a step; None when its
    image counts are known only once its data is read."""
    from peftlab.study.estimate import images_per_epoch

    images = images_per_epoch(cfg)
    if images is None:
        return None
    train, val = images
    batch = cfg.train.batch_size
    steps = cfg.train.max_steps or math.ceil(train / batch) * cfg.train.epochs
    return steps * step + val * cfg.train.epochs * step / 3 / batch


def time_plan(configs: list[RunConfig], measure=time_step, progress=print) -> list[str]:
    """One line per distinct step timed, and the study's total on this machine."""
    counts = Counter(step_key(cfg) for cfg in configs)
    first = {}
    for cfg in configs:
        first.setdefault(step_key(cfg), cfg)
    steps, lines = {}, []
    for n, (key, cfg) in enumerate(first.items(), 1):
        what = f"{cfg.model.name}, {cfg.method.name}, batch {cfg.train.batch_size}"
        progress(f"timing step {n} of {len(first)}: {what}")
        try:
            steps[key] = measure(cfg)
        except Exception as err:  # a step that cannot be timed (out of memory, say) is said; the rest are timed
            lines.append(f"  {what}: not timed ({type(err).__name__}: {str(err).splitlines()[0][:160]})")
            continue
        lines.append(f"  {what}: {steps[key] * 1e3:,.1f} ms a step ({counts[key]} runs and trials)")
    seconds = [run_seconds(cfg, steps[step_key(cfg)]) if step_key(cfg) in steps else None for cfg in configs]
    known = [s for s in seconds if s is not None]
    unknown = len(seconds) - len(known)
    left_out = f"; {unknown} runs of unknown size or untimed step not counted" if unknown else ""
    total = sum(known)
    amount = (
        f"{total / 3600:,.1f} hours"
        if total >= 3600
        else f"{total / 60:,.1f} minutes"
        if total >= 60
        else f"{total:.1f} s"
    )
    head = (
        f"measured time: about {amount} of training and validation on this machine in {len(known)} runs and "
        f"trials, one at a time (steps x the measured step, random weights of each architecture){left_out}"
    )
    return [head, *lines]
