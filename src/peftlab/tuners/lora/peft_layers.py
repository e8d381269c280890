"""What peftlab's fused q/k/v step needs to know of PEFT's LoRA (and AdaLoRA) layer on one slice: whether it
is plain (``is_plain_float``), its one active adapter's low-rank factors (``plain_lora``), and the update it
adds (``lora_delta``), the same sums PEFT's own forward computes (``tuners.modules.SplitQKV``)."""

from __future__ import annotations

import functools

import torch
from torch import nn


def plain_lora(layer: nn.Module):
    """``(A, B, scaling)`` of the one active plain LoRA adapter of ``layer`` (no dropout), None for a
    slice without an active adapter, False for anything else (several adapters, dropout): the
    hand-written path then does not apply. For AdaLoRA's SVD layer, the update PEFT's ``SVDLinear``
    adds, ``(x (A E)^T B^T) * scaling / ranknum``, in LoRA's form (``low_rank_factors``)."""
    if not hasattr(layer, "lora_A") or layer.disable_adapters or layer.merged:
        return None
    active = [name for name in layer.active_adapters if name in layer.lora_A]
    if not active:
        return None
    if len(active) > 1 or not isinstance(layer.lora_dropout[active[0]], nn.Identity):
        return False
    return low_rank_factors(layer, active[0])


def low_rank_factors(layer: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Adapter ``name``'s update of ``layer`` as ``scaling * (x A^T) B^T``: LoRA's weights, or AdaLoRA's
    with ``A`` its ``lora_A * lora_E / (ranknum + 1e-5)`` (ranknum: a tensor, read without a device sync;
    a module resized to its kept ranks keeps its former ranknum)."""
    if hasattr(layer, "lora_E"):
        values = layer.lora_E[name] / (layer.ranknum[name] + 1e-5)  # (r, 1)
        return layer.lora_A[name] * values, layer.lora_B[name], layer.scaling[name]
    return layer.lora_A[name].weight, layer.lora_B[name].weight, layer.scaling[name]


@functools.cache
def peft_linears() -> tuple[type, type]:
    """PEFT's LoRA Linear and AdaLoRA's SVDLinear, imported once (a step asks for them 3 times a block)."""
    from peft.tuners.adalora.layer import SVDLinear  # peft (and transformers): not for checks
    from peft.tuners.lora.layer import Linear as LoraLinear

    return LoraLinear, SVDLinear


def is_plain_float(layer: nn.Module) -> bool:
    """A float nn.Linear, or PEFT's vanilla LoRA Linear (no variant, no LoRA bias) or AdaLoRA's SVD
    Linear over one."""
    if type(layer) is nn.Linear:
        return True
    LoraLinear, SVDLinear = peft_linears()
    if type(layer) is SVDLinear:
        return type(layer.base_layer) is nn.Linear and not layer.fan_in_fan_out
    return (
        type(layer) is LoraLinear
        and type(layer.base_layer) is nn.Linear
        and not layer.lora_variant
        and not any(layer.lora_bias.values())
    )


def lora_delta(layer: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The low-rank update PEFT's LoRA (or AdaLoRA) ``layer`` adds to its base output, or None.

    The same sum PEFT's ``lora.Linear.forward`` computes: over the active adapters,
    ``lora_B(lora_A(dropout(x))) * scaling``; ``SVDLinear``'s ``(dropout(x) (A E)^T B^T) * scaling /
    ranknum``; nothing once merged or disabled.
    """
    if not hasattr(layer, "lora_A") or layer.disable_adapters or layer.merged:
        return None
    delta = None
    for name in layer.active_adapters:
        if name not in layer.lora_A:
            continue
        x_in = layer.lora_dropout[name](x)
        if hasattr(layer, "lora_E"):
            factors = layer.lora_A[name] * layer.lora_E[name]
            update = (x_in @ factors.T @ layer.lora_B[name].T) * layer.scaling[name] / (layer.ranknum[name] + 1e-5)
        else:
            update = layer.lora_B[name](layer.lora_A[name](x_in)) * layer.scaling[name]
        delta = update if delta is None else delta + update
    return delta
