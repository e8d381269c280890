"""Adapter statistics of PEFT LoRA-family layers, and the rank use of their updates.

Per adapted module (PEFT ``LoraLayer``s, timm's split ``qkv.q/k/v`` slices included): the
Frobenius norms of A (r x in) and B (out x r), and of the scaled update dW = scaling * B @ A,
and from dW's singular values s_1 >= ... >= s_r:

- ``effective_rank``: exp of the entropy of p_i = s_i / sum(s) (Roy and Vetterli, 2007);
  between 1 and r, 0 for a zero update.
- ``rank90``: how many singular values hold 90% of the energy sum(s_i^2).
- ``stable_rank``: ||dW||_F^2 / s_1^2.
- ``r`` is the rank the layer was built with, ``r_allocated`` the ranks a rank controller has
  left it (the non-zero rows of A; A * E for AdaLoRA): rank use is effective_rank / r_allocated.

The singular values come from two thin QR factorisations: B = Q_b R_b, A^T = Q_a R_a, so
dW = Q_b (scaling R_b R_a^T) Q_a^T and s = svd(scaling R_b R_a^T), an r x r problem; dW
(out x in) is never formed. AdaLoRA's layers (``lora_E``) use dW = B (A * E) scaling / ranknum.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from peftlab.training.monitors.gradients import group_name


def lora_layers(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, layer, adapter name) of every LoRA-family adapter in ``model``: PEFT's layers (one
    entry per active adapter) and single-adapter layers with a plain ``lora_A`` (QA-LoRA's)."""
    out = []
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if isinstance(lora_a, nn.Linear) and isinstance(getattr(module, "lora_B", None), nn.Linear):
            out.append((group_name(name), module, ""))
        elif isinstance(lora_a, (nn.ModuleDict, nn.ParameterDict)):
            out += [
                (group_name(name) + ("" if adapter == "default" else f"[{adapter}]"), module, adapter)
                for adapter in getattr(module, "active_adapters", ["default"])
                if adapter in lora_a
            ]
    return out


def lora_factors(layers: list[tuple[str, nn.Module, str]]) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{name: (A (r x in), B (out x r), scaling)} of each layer's current weights."""
    out = {}
    for name, module, adapter in layers:
        if not adapter:  # a single-adapter layer: QA-LoRA's A acts on the group-pooled input
            out[name] = (module.lora_A.weight.detach(), module.lora_B.weight.detach(), float(module.scaling))
            continue
        a, b = module.lora_A[adapter], module.lora_B[adapter]
        a = a.weight if isinstance(a, nn.Module) else a
        b = b.weight if isinstance(b, nn.Module) else b
        scaling = float(module.scaling[adapter])
        if hasattr(module, "lora_E") and adapter in module.lora_E:  # AdaLoRA: B (A * E) scaling / ranknum
            a = a * module.lora_E[adapter]
            scaling = scaling / (float(module.ranknum[adapter]) + 1e-5)
        out[name] = (a.detach(), b.detach(), scaling)
    return out


def cores(a: torch.Tensor, b: torch.Tensor, scaling: torch.Tensor) -> torch.Tensor:
    """Batched r x r matrices whose singular values are those of scaling * B @ A.

    a: (L, r, in), b: (L, out, r), scaling: (L,) -> (L, r, r).
    """
    _, r_b = torch.linalg.qr(b.float())  # (L, r, r)
    _, r_a = torch.linalg.qr(a.float().transpose(1, 2))  # (L, r, r)
    return scaling.view(-1, 1, 1) * (r_b @ r_a.transpose(1, 2))


def rank_ratio(stats: dict) -> float:
    """Effective rank over the ranks in use (allocated; the built rank for records without it)."""
    r = stats.get("r_allocated", stats["r"])
    return stats["effective_rank"] / r if r else 0.0


def rank_use(singular_values: list[float]) -> dict:
    """effective_rank, rank90 and stable_rank of a list of singular values."""
    s = sorted((max(v, 0.0) for v in singular_values), reverse=True)
    energy = sum(v * v for v in s)
    if energy == 0.0:
        return {"effective_rank": 0.0, "rank90": 0, "stable_rank": 0.0}
    total = sum(s)
    entropy = -sum((v / total) * math.log(v / total) for v in s if v > 0)
    cumulative, rank90 = 0.0, len(s)
    for i, v in enumerate(s, 1):
        cumulative += v * v
        if cumulative >= 0.9 * energy:
            rank90 = i
            break
    return {"effective_rank": math.exp(entropy), "rank90": rank90, "stable_rank": energy / (s[0] * s[0])}


@torch.no_grad()
def adapter_statistics(factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]]) -> dict[str, dict]:
    """Norms and rank use per layer: one fused norm call, and one batched QR and SVD per
    shape of (A, B) (a ViT has a handful), then one transfer each."""
    if not factors:
        return {}
    names = list(factors)
    norms = torch.stack(torch._foreach_norm([t.float() for n in names for t in factors[n][:2]])).tolist()
    by_shape: dict[tuple, list[str]] = {}
    for name in names:
        a, b, _ = factors[name]
        by_shape.setdefault((tuple(a.shape), tuple(b.shape)), []).append(name)
    values: dict[str, list[float]] = {}
    allocated: dict[str, int] = {}
    for group in by_shape.values():
        a = torch.stack([factors[n][0] for n in group])
        b = torch.stack([factors[n][1] for n in group])
        scaling = torch.tensor([factors[n][2] for n in group], dtype=torch.float32, device=a.device)
        batch = torch.linalg.svdvals(cores(a, b, scaling)).double().cpu().tolist()
        values.update(zip(group, batch))
        allocated.update(zip(group, (a != 0).any(dim=2).sum(dim=1).tolist()))
    stats = {}
    for i, name in enumerate(names):
        s = values[name]
        stats[name] = {
            "r": factors[name][0].shape[0],
            "r_allocated": allocated[name],
            "norm_A": norms[2 * i],
            "norm_B": norms[2 * i + 1],
            "norm_update": math.sqrt(sum(v * v for v in s)),
            **rank_use(s),
            "singular_values": s,
        }
    return stats
