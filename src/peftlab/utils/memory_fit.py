"""Whether a run's training memory fits, from its estimate's parts alone: no torch, so that ``peftlab
validate`` answers from a model record what ``training.preflight`` measured once.

``at_batch(parts, batch_size)`` is the estimate at a micro-batch: the parts that do not depend on it
(weights, gradients, AdamW state, activations per image and fixed, a causal LM's base pass) and the sums.

A tested causal-LM run measures its base alone after training (``metrics.base_test_perplexity``): it loads
the base's float weights (``base_pass_bytes``) beside the adapted model and its AdamW state, the gradients
freed and no graph kept; that pass must fit too (``base_pass_beyond_weights_bytes``).
"""

from __future__ import annotations

import math

from peftlab.utils.errors import UserError

GIB = 2**30
PARTS = (
    "weights_bytes",
    "gradients_bytes",
    "optimizer_state_bytes",
    "activations_per_image_bytes",
    "activations_fixed_bytes",
    "base_pass_bytes",  # the float base a tested causal-LM run loads for its base row; 0 for other runs
)


def at_batch(parts: dict, batch_size: int) -> dict:
    """The estimate of ``parts`` (``PARTS``) at micro-batch ``batch_size``."""
    per_image, fixed = parts["activations_per_image_bytes"], parts["activations_fixed_bytes"]
    totals = {
        "weights_bytes": parts["weights_bytes"],
        "gradients_bytes": parts["gradients_bytes"],
        "optimizer_state_bytes": parts["optimizer_state_bytes"],
        "activations_bytes": fixed + per_image * batch_size,
    }
    return {
        **totals,
        "total_bytes": sum(totals.values()),
        "activations_per_image_bytes": per_image,
        "activations_fixed_bytes": fixed,
        "batch_size": batch_size,
        "training_bytes": totals["gradients_bytes"] + totals["optimizer_state_bytes"] + totals["activations_bytes"],
        "base_pass_bytes": parts["base_pass_bytes"],
        # the base row's pass, beyond the adapted model's weights: the base beside the AdamW state (gradients freed)
        "base_pass_beyond_weights_bytes": (
            parts["base_pass_bytes"] + totals["optimizer_state_bytes"] if parts["base_pass_bytes"] else 0
        ),
    }


def check_fits(est: dict, available: int, batch_size: int, grad_accum: int, quantizable: bool) -> None:
    """A one-line UserError when the training memory beyond the built weights exceeds ``available``,
    with a micro-batch (and the gradient accumulation that keeps the effective batch) that fits; or when a
    causal LM's base pass does (``base_pass_beyond_weights_bytes``: no batch makes it smaller)."""
    base_pass = est.get("base_pass_beyond_weights_bytes", 0)
    if est["training_bytes"] <= available and base_pass <= available:
        return
    if est["training_bytes"] <= available:
        raise UserError(
            f"this run trains in about {est['training_bytes'] / GIB:.2f} GiB beyond its weights, but its test of "
            f"the base alone (metrics.base_test_perplexity) then loads the base's float weights "
            f"({est['base_pass_bytes'] / GIB:.2f} GiB) beside the adapted model and its AdamW state: about "
            f"{base_pass / GIB:.2f} GiB, and {available / GIB:.2f} GiB are available: try a machine with more "
            "memory, or train.test=false (no test split, and no base row)"
        )
    fixed = est["gradients_bytes"] + est["optimizer_state_bytes"] + est["activations_fixed_bytes"]
    room = int(0.9 * available) - fixed
    fits = (
        2 ** int(math.log2(room // est["activations_per_image_bytes"]))
        if est["activations_per_image_bytes"] and room >= est["activations_per_image_bytes"]
        else 0
    )
    fits = min(fits, batch_size)
    advice = []
    if fits >= 1:
        advice.append(
            f"train.batch_size={fits} with train.grad_accum={math.ceil(batch_size * grad_accum / fits)} "
            "(the same effective batch)"
        )
    advice.append("train.grad_checkpointing=true")
    if quantizable:
        advice.append("a quantized base (quant.mode=nf4)")
    raise UserError(
        f"this run needs about {est['training_bytes'] / GIB:.2f} GiB for training beyond its weights "
        f"(activations {est['activations_bytes'] / GIB:.2f} GiB at train.batch_size={batch_size}) but "
        f"{available / GIB:.2f} GiB are available: try " + ", or ".join(advice)
    )


def format_estimate(est: dict) -> list[str]:
    mib = 2**20
    return [
        f"# memory estimate for training at micro-batch {est['batch_size']}: {est['total_bytes'] / mib:,.0f} MiB",
        f"#   weights {est['weights_bytes'] / mib:,.1f} MiB, gradients {est['gradients_bytes'] / mib:,.1f} MiB, "
        f"AdamW state {est['optimizer_state_bytes'] / mib:,.1f} MiB",
        f"#   activations {est['activations_bytes'] / mib:,.1f} MiB "
        f"({est['activations_per_image_bytes'] / mib:,.2f} MiB per image + "
        f"{est['activations_fixed_bytes'] / mib:,.2f} MiB fixed)",
    ] + (
        [
            f"# then the base alone on the test split (metrics.base_test_perplexity): its float weights "
            f"{est['base_pass_bytes'] / mib:,.1f} MiB beside the adapted model and its AdamW state"
        ]
        if est.get("base_pass_bytes")
        else []
    )
