"""``Monitors``: what the recipe holds, and ``summarize``: result.json's monitor sections."""

from __future__ import annotations

import statistics
import time

from torch import nn

from peftlab.training.monitors.adapters import adapter_statistics, lora_factors, lora_layers, rank_ratio
from peftlab.training.monitors.convergence import convergence
from peftlab.training.monitors.frozen import frozen_hash
from peftlab.training.monitors.gradients import GradientFlow, clip_scale, group_norms, group_parameters
from peftlab.training.monitors.health import health

ADAPTER_MEANS = ("effective_rank", "rank90", "stable_rank", "norm_update")


class Monitors:
    """Gradient flow and adapter statistics at log and eval points; the frozen-base hash.

    ``history``: the run's earlier ``monitors`` records (a resumed run continues their
    running medians and keeps the hash taken when the run first started).
    """

    def __init__(
        self,
        model: nn.Module,
        trainable: dict[str, nn.Parameter],
        *,
        log_every: int,
        eval_every: int | None,
        total_steps: int,
        clip_grad: float | None,
        history: list[dict] = (),
        exploding_factor: float = 10.0,
        vanishing_ratio: float = 1e-8,
    ):
        self.model, self.clip_grad = model, clip_grad
        self.log_every, self.eval_every, self.total_steps = log_every, eval_every, total_steps
        self.groups = group_parameters(trainable)
        self.layers = lora_layers(model)
        self.flow = GradientFlow(exploding_factor, vanishing_ratio)
        history = [r for r in history if r.get("kind") == "monitors"]
        self.flow.replay(history)
        self.frozen_start = frozen_hash(model)
        earlier = [r["frozen_base"] for r in history if r.get("frozen_base")]
        self.first_start = earlier[0] if earlier else None  # the hash when the run first started

    def due(self, step: int) -> bool:
        """A log or eval point: ``step`` counts finished optimizer steps, as in metrics.jsonl."""
        return (
            step % self.log_every == 0
            or step == self.total_steps
            or bool(self.eval_every and step % self.eval_every == 0)
        )

    def observe(self, step: int, grad_norm: float) -> dict:
        """One ``monitors`` record; call it while the step's gradients are still there."""
        start = time.perf_counter()
        norms = group_norms(self.groups, clip_scale(grad_norm, self.clip_grad))
        flags = self.flow.update(step, norms)
        record = {
            "kind": "monitors",
            "step": step,
            "grad": {g: n["grad"] for g, n in norms.items()},
            "weight": {g: n["weight"] for g, n in norms.items()},
            "flags": flags,
            "adapters": adapter_statistics(lora_factors(self.layers)),
        }
        if self.first_start is None:
            self.first_start = record["frozen_base"] = self.frozen_start["sha256"]
        record["seconds"] = time.perf_counter() - start
        return record


def summarize(
    monitor: Monitors, records: list[dict], *, diverged: bool = False, train_seconds: float | None = None
) -> dict:
    """result.json's ``health``, ``monitors``, ``convergence`` and ``frozen_base`` sections."""
    observed = [r for r in records if r.get("kind") == "monitors"]
    end = frozen_hash(monitor.model)
    start = monitor.first_start or monitor.frozen_start["sha256"]
    adapters = adapter_statistics(lora_factors(monitor.layers))
    seconds = sum(r.get("seconds", 0.0) for r in observed)
    grads: dict[str, list[float]] = {}
    for record in observed:
        for group, norm in record["grad"].items():
            grads.setdefault(group, []).append(norm)
    summary = {
        "log_points": len(observed),
        "seconds": seconds,
        "seconds_per_call": statistics.median(r["seconds"] for r in observed) if observed else None,
        "share_of_train_seconds": seconds / train_seconds if train_seconds else None,
        "grad_median": {g: statistics.median(v) for g, v in grads.items()},
        "adapters": adapters,
        "adapters_mean": (
            {k: statistics.mean(a[k] for a in adapters.values()) for k in ADAPTER_MEANS}
            | {"effective_rank_ratio": statistics.mean(rank_ratio(a) for a in adapters.values())}
            if adapters
            else None
        ),
    }
    return {
        "health": health(records, diverged=diverged),
        "monitors": summary,
        "convergence": convergence(records),
        "frozen_base": {
            "sha256_start": start,
            "sha256_end": end["sha256"],
            "equal": start == end["sha256"],
            "rebuilt_equal": monitor.frozen_start["sha256"] == start,
            "tensors": end["tensors"],
            "elements": end["elements"],
        },
    }
