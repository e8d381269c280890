"""The ``methods`` figure: every method of the TUNERS registry, its training step / LoRA's (r=8 on
q, v), all steps timed side by side in one round-robin so machine load weighs on every row alike.

The rows come from ``TUNERS`` at run time, so a method added later gets its row without a change
here. A method that cannot build or step on the bench's model and device gets a row with the
error as its reason, never a number.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from peftlab.bench.common import Trainer, ratios, spread
from peftlab.config.schema import RunConfig
from peftlab.training import metrics
from peftlab.tuners import TUNERS
from peftlab.utils.errors import UserError

REFERENCE = "lora"  # r=8 on q, v: what make_cfg builds for "lora"
# What a method needs beyond its defaults to be timed against LoRA r=8 on q, v. The rank controllers
# are built at rank 8 like LoRA (their defaults build 12 and 16), and QA-LoRA's group-wise quantized
# base is named as P4q times it. Every other method runs with its defaults, as the tuner tests build it.
METHOD_OPTIONS = {
    "adalora": {"init_r": 8, "target_r": 4},
    "adaptive": {"r": 4, "max_rank": 8},
    "qalora": {"format": "int4", "group_size": 32},
}


def method_cfg(cfg: Callable[..., RunConfig], method: str) -> RunConfig:
    """The bench's config for ``method``: ``cfg(method, **options)`` with its row of METHOD_OPTIONS."""
    return cfg(method, **METHOD_OPTIONS.get(method, {}))


def warmed_trainer(cfg: RunConfig, images, labels, dtype: str, device: torch.device) -> tuple[Trainer | None, dict]:
    """A trainer that has taken its warm-up step, and its row so far (trainable parameters); or
    None and a row whose reason is the error that stopped building or stepping it."""
    row: dict = {"options": METHOD_OPTIONS.get(cfg.method.name, {})}
    try:
        trainer = Trainer(cfg, images, labels, dtype, device=device)
        row["trainable"] = trainer.tuner.parameter_counts()["trainable"]  # before a step: as `peftlab params` counts
        trainer.step()
    except Exception as err:  # reported in the row, as a study records a failed run and goes on
        lines = str(err).strip().splitlines()
        return None, {**row, "reason": f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__}
    return trainer, row


def methods_figure(
    cfg: Callable[..., RunConfig],
    images,
    labels,
    dtype: str,
    repeats: int,
    device: torch.device,
    progress: Callable[[str], None] = lambda text: None,
) -> dict:
    """Per method of TUNERS: median step seconds, step time / LoRA's (repetition by repetition) and
    trainable parameters. Each trainer takes one warm-up step; then ``repeats`` rounds time every
    method once, in a balanced order (``metrics.time_interleaved``)."""
    trainers, rows = {}, {}
    for method in TUNERS:
        trainer, rows[method] = warmed_trainer(method_cfg(cfg, method), images, labels, dtype, device)
        if trainer is not None:
            trainers[method] = trainer
        progress(f"methods: {method} {'warmed up' if trainer is not None else 'not run: ' + rows[method]['reason']}")
    if REFERENCE not in trainers:
        raise UserError(f"peftlab bench methods: the reference, {REFERENCE}, did not run: {rows[REFERENCE]['reason']}")
    progress(f"methods: {repeats} timed rounds of {len(trainers)} steps")
    times = metrics.time_interleaved({name: t.step for name, t in trainers.items()}, repeats, device, warmup=0)
    for name in trainers:
        rows[name].update(step_seconds=spread(times[name]), ratio_to_lora=ratios(times, name, REFERENCE))
    return {
        "reference": "lora r=8 on q, v",
        "rows": rows,
        "setting": "one warm-up step each, then every method once per repetition in a balanced order; "
        "the ratio is the median of the per-repetition ratios to LoRA's step",
    }
