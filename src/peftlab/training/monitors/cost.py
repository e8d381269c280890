"""The monitors' cost: a training step with monitors at log points over a step without.

    ratio = (log_every * t_step + t_observe) / (log_every * t_step)

t_step and t_observe are timed in alternation on the same model (drift cancels), t_observe
with a real backward pass's gradients in place, as at a log point. One monitor call costs
well under 1% of log_every steps, below the +-10-20% drift of a shared machine, so timing
blocks of steps with and without the call would measure the noise; the sum of the two
parts, each timed over many repetitions, resolves it. Every run also records its real
monitor time (result.json ``monitors.seconds`` and ``share_of_train_seconds``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from peftlab.config.sections import TrainConfig
from peftlab.training.monitors.run import Monitors


def monitor_cost(
    step: Callable[[], None],
    observe: Callable[[], object],
    loss: Callable[[], torch.Tensor],
    params: list[torch.nn.Parameter],
    log_every: int,
    repeats: int = 5,
    warmup: int = 1,
) -> dict:
    """``step()``: one full training step; ``observe()``: the monitor call; ``loss()``: a loss
    whose backward fills ``params``' gradients (cleared again after each ``observe``)."""
    step_times, observe_times = [], []
    for rep in range(warmup + repeats):
        start = time.perf_counter()
        for _ in range(log_every):
            step()
        t_step = (time.perf_counter() - start) / log_every
        loss().backward()
        start = time.perf_counter()
        observe()
        t_observe = time.perf_counter() - start
        for p in params:
            p.grad = None
        if rep >= warmup:
            step_times.append(t_step)
            observe_times.append(t_observe)
    ratios = [(log_every * s + o) / (log_every * s) for s, o in zip(step_times, observe_times)]
    return {
        "ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "n": len(ratios)},
        "step_seconds": statistics.median(step_times),
        "observe_seconds": statistics.median(observe_times),
        "log_every": log_every,
        "target": 1.03,
    }


def model_monitor_cost(
    model: torch.nn.Module,
    trainable: dict[str, torch.nn.Parameter],
    step: Callable[[], None],
    loss: Callable[[], torch.Tensor],
    repeats: int = 5,
    log_every: int | None = None,
) -> dict:
    """``monitor_cost`` of the recipe's monitors on ``model`` at ``log_every`` (default: the
    config's default), observing unclipped gradients as the recipe does."""
    log_every = log_every or TrainConfig().log_every
    monitor = Monitors(model, trainable, log_every=log_every, eval_every=None, total_steps=10**9, clip_grad=None)
    return monitor_cost(
        step, lambda: monitor.observe(log_every, 1.0), loss, list(trainable.values()), log_every, repeats
    )
