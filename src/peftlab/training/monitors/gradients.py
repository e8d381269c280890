"""Gradient flow: the norm of the trainable gradients per block and module type, and its flags.

A group is one module's trainable parameters (weight and bias together); LoRA's ``lora_A``
and ``lora_B`` are groups of their own. Group names drop PEFT's wrappers:
``base_model.model.blocks.3.attn.qkv.q.lora_A.default.weight`` -> ``blocks.3.attn.qkv.q.lora_A``,
``base_model.model.head.modules_to_save.default.weight`` -> ``head``.

Flags, per group and log point:
- ``exploding``: the norm is above ``factor`` times the median of the group's earlier
  non-zero norms (at least ``min_history`` of them: LoRA's A gradients grow from exactly zero
  while B grows from its zero init, and that growth is not an explosion).
- ``vanishing``: the gradient is exactly zero, or below ``ratio`` times the weight's norm.
  ``lora_A`` of a layer whose ``lora_B`` is still all zero has an exactly-zero gradient by
  construction (dL/dA = B^T ...), so that case is not flagged.
"""

from __future__ import annotations

import math
import re
import statistics

import torch

_WRAPPERS = re.compile(r"(^|\.)(base_model\.model|modules_to_save\.default|original_module|default)(?=\.|$)")


def group_name(param_name: str) -> str:
    """The module a parameter belongs to, without PEFT's wrapper names; LoRA A and B apart."""
    name = param_name.rpartition(".")[0] if param_name.rpartition(".")[2] in ("weight", "bias") else param_name
    name = _WRAPPERS.sub("", name).strip(".")
    return name or param_name


def block_of(group: str) -> str:
    """``blocks.3.attn.qkv.q.lora_A`` -> ``blocks.3``; anything outside the blocks keeps its first name."""
    match = re.search(r"(?:^|\.)(blocks|layers|layer)\.(\d+)(?=\.|$)", group)
    return f"{match.group(1)}.{match.group(2)}" if match else group.split(".")[0]


def group_parameters(named: dict[str, torch.nn.Parameter]) -> dict[str, list[torch.nn.Parameter]]:
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for name, param in named.items():
        groups.setdefault(group_name(name), []).append(param)
    return groups


@torch.no_grad()
def group_norms(groups: dict[str, list[torch.nn.Parameter]], clip_scale: float = 1.0) -> dict[str, dict]:
    """Per group: gradient norm (before clipping: divided by ``clip_scale``) and weight norm.

    Two fused ``torch._foreach_norm`` calls and one transfer, however many groups there are.
    A parameter without a gradient counts as zero.
    """
    params = [p for plist in groups.values() for p in plist]
    with_grad = [p for p in params if p.grad is not None]
    grad_sq = dict.fromkeys(map(id, params), 0.0)
    if with_grad:
        norms = torch.stack(torch._foreach_norm([p.grad for p in with_grad])).double().cpu().tolist()
        grad_sq.update({id(p): n * n for p, n in zip(with_grad, norms)})
    weights = torch.stack(torch._foreach_norm([p.detach() for p in params])).double().cpu().tolist()
    weight_sq = {id(p): n * n for p, n in zip(params, weights)}
    out = {}
    for group, plist in groups.items():
        grad = math.sqrt(sum(grad_sq[id(p)] for p in plist)) / clip_scale
        out[group] = {"grad": grad, "weight": math.sqrt(sum(weight_sq[id(p)] for p in plist))}
    return out


def clip_scale(grad_norm: float, clip_grad: float | None) -> float:
    """The factor ``clip_grad_norm_`` multiplied every gradient by (1.0 when it did not clip)."""
    if clip_grad is None or not math.isfinite(grad_norm):
        return 1.0
    return min(1.0, clip_grad / (grad_norm + 1e-6))


class GradientFlow:
    """Running history of each group's gradient norm and the flags it raises."""

    def __init__(self, factor: float = 10.0, ratio: float = 1e-8, min_history: int = 5):
        self.factor, self.ratio, self.min_history = factor, ratio, min_history
        self.history: dict[str, list[float]] = {}

    def replay(self, records: list[dict]) -> None:
        """Rebuild the history from earlier ``monitors`` records (a resumed run)."""
        for record in records:
            for group, norm in (record.get("grad") or {}).items():
                if norm > 0:
                    self.history.setdefault(group, []).append(norm)

    def update(self, step: int, norms: dict[str, dict]) -> list[dict]:
        flags = []
        for group, n in norms.items():
            grad, weight = n["grad"], n["weight"]
            past = self.history.setdefault(group, [])
            if len(past) >= self.min_history:
                median = statistics.median(past)
                if median > 0 and grad > self.factor * median:
                    flags.append({"flag": "exploding", "group": group, "step": step, "value": grad, "median": median})
            expected_zero = group.endswith("lora_A") and norms.get(group[:-1] + "B", {}).get("weight", 1.0) == 0.0
            if not expected_zero and (grad == 0.0 or (weight > 0 and grad < self.ratio * weight)):
                flags.append({"flag": "vanishing", "group": group, "step": step, "value": grad, "weight": weight})
            if grad > 0:
                past.append(grad)
        return flags
