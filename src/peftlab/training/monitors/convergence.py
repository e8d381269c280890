"""Convergence of one run, from its validation curve (plain Python: no torch).

From the evaluations (step, val top-1) in metrics.jsonl, the last one being the final weights:

- ``steps_to``: the first step whose val top-1 reached 90 / 95 / 99% of the final value.
- ``plateau_step``: the first evaluation after which val top-1 never rose by ``tolerance`` or more.
- ``gain_last_window``: final val top-1 minus the best value before the last ``window`` of
  training (a fraction of the steps).
- ``converged``: that gain is below ``tolerance``. Without a validation curve to judge (no
  validation split, as with data.trainval; fewer than two evaluations, or none before the window)
  there is no verdict: it is None and ``reason`` says why (set ``train.eval_every``).

A decaying learning rate also flattens the curve, so a run can plateau without having
converged in the sense of "more steps would not help"; ``converged: false`` is the strong
statement, ``true`` means only that the final window gained less than ``tolerance``.
"""

from __future__ import annotations

import math

FRACTIONS = (0.90, 0.95, 0.99)


def val_curve(records: list[dict]) -> list[tuple[int, float]]:
    """(step, val_top1) of every evaluation, in order; at most one per step (the last)."""
    curve: dict[int, float] = {}
    for record in records:
        if record.get("kind") in ("eval", "epoch") and record.get("val_top1") is not None:
            curve[record["step"]] = record["val_top1"]
    return sorted(curve.items())


def train_losses(records: list[dict]) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in records if r.get("kind") == "step" and r.get("loss") is not None]


def convergence(records: list[dict], window: float = 0.25, tolerance: float = 0.005) -> dict:
    curve = val_curve(records)
    out = {
        "evaluations": len(curve),
        "window": window,
        "tolerance": tolerance,
        "final_val_top1": None,
        "steps_to": {f"{int(100 * f)}": None for f in FRACTIONS},
        "plateau_step": None,
        "gain_last_window": None,
        "train_loss_change_last_window": None,
        "converged": None,  # no verdict until a curve supports one
        "reason": None,
    }
    if not curve:
        out["reason"] = "no evaluation on the validation split"
        return out
    final_step, final = curve[-1]
    out["final_val_top1"] = final
    for fraction in FRACTIONS:
        out["steps_to"][f"{int(100 * fraction)}"] = next(s for s, v in curve if v >= fraction * final - 1e-12)
    for i, (step, value) in enumerate(curve):
        if all(later < value + tolerance for _, later in curve[i + 1 :]):
            out["plateau_step"] = step
            break
    edge = final_step - math.ceil(window * final_step)
    before = [v for s, v in curve if s <= edge]
    losses = train_losses(records)
    inside = [loss for s, loss in losses if s > edge]
    previous = [loss for s, loss in losses if edge - (final_step - edge) < s <= edge]
    if inside and previous and sum(previous) > 0:
        out["train_loss_change_last_window"] = (sum(inside) / len(inside)) / (sum(previous) / len(previous)) - 1.0
    if len(curve) < 2 or not before:
        out["reason"] = (
            f"only {len(curve)} evaluation(s), none before the last {int(100 * window)}% of training; "
            "set train.eval_every for a curve"
        )
        return out
    out["gain_last_window"] = final - max(before)
    out["converged"] = out["gain_last_window"] < tolerance
    out["reason"] = (
        f"val top-1 rose {100 * out['gain_last_window']:+.2f} pts in the last {int(100 * window)}% "
        f"of training ({'<' if out['converged'] else '>='} {100 * tolerance:.1f} pts)"
    )
    return out
