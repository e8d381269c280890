"""timm's fused ``qkv`` Linear split into three Linears, so that q, k and v can be adapted apart.

timm computes ``qkv = x @ W.T + b`` with ``W`` of shape (3d, d): rows [0:d] are q, [d:2d] k,
[2d:3d] v. ``SplitQKV`` holds the same rows as ``q``, ``k`` and ``v`` Linears (d -> d), so
PEFT can target ``attn.qkv.q`` and ``attn.qkv.v`` like any Linear; an un-targeted slice stays
frozen and bit-identical. ``fuse_qkv`` turns it back into one Linear (after a merge, for export).

When every slice is a plain float Linear or PEFT's plain LoRA Linear over one, the forward
still does timm's single fused matmul: the three base weights are concatenated (a small
copy) and the adapters' low-rank updates are added to their slices of the output. Three
separate matmuls and a ``cat`` of their outputs give the same numbers but cost about a fifth
more per training step (measured, see benchmarks/README.md). Any other slice (a quantized
base, a LoRA variant such as DoRA, another PEFT method) runs its own forward: peftlab does not
re-implement layer math it does not know.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear as LoraLinear
from torch import nn


class SplitQKV(nn.Module):
    def __init__(self, q: nn.Linear, k: nn.Linear, v: nn.Linear):
        super().__init__()
        self.q, self.k, self.v = q, k, v
        self.in_features = q.in_features
        self.out_features = q.out_features + k.out_features + v.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., d) -> (..., 3d), the layout of timm's fused qkv
        parts = (self.q, self.k, self.v)
        if not all(is_plain_float(part) for part in parts):
            return torch.cat([part(x) for part in parts], dim=-1)
        bases = [getattr(part, "base_layer", part) for part in parts]
        weight = torch.cat([base.weight for base in bases])  # (3d, d)
        bias = torch.cat([base.bias for base in bases]) if bases[0].bias is not None else None
        out = F.linear(x, weight, bias)
        start = 0
        for part, base in zip(parts, bases):
            delta = lora_delta(part, x)
            if delta is not None:
                out.narrow(-1, start, base.out_features).add_(delta)
            start += base.out_features
        return out


def is_plain_float(layer: nn.Module) -> bool:
    """A float nn.Linear, or PEFT's vanilla LoRA Linear (no variant, no LoRA bias) over one."""
    if type(layer) is nn.Linear:
        return True
    return (type(layer) is LoraLinear and type(layer.base_layer) is nn.Linear and not layer.lora_variant
            and not any(layer.lora_bias.values()))


def lora_delta(layer: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The low-rank update PEFT's LoRA ``layer`` adds to its base output, or None.

    The same sum PEFT's ``lora.Linear.forward`` computes: over the active adapters,
    ``lora_B(lora_A(dropout(x))) * scaling``; nothing once merged or disabled.
    """
    if not hasattr(layer, "lora_A") or layer.disable_adapters or layer.merged:
        return None
    delta = None
    for name in layer.active_adapters:
        if name not in layer.lora_A:
            continue
        update = layer.lora_B[name](layer.lora_A[name](layer.lora_dropout[name](x))) * layer.scaling[name]
        delta = update if delta is None else delta + update
    return delta


def split_qkv(qkv: nn.Linear) -> SplitQKV:
    """Copy the rows of a fused (3d, d) Linear into three (d, d) Linears."""
    d = qkv.out_features // 3
    parts = []
    for i in range(3):
        linear = nn.Linear(qkv.in_features, d, bias=qkv.bias is not None,
                           device=qkv.weight.device, dtype=qkv.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(qkv.weight[i * d:(i + 1) * d])
            if qkv.bias is not None:
                linear.bias.copy_(qkv.bias[i * d:(i + 1) * d])
        linear.weight.requires_grad_(qkv.weight.requires_grad)
        if qkv.bias is not None:
            linear.bias.requires_grad_(qkv.bias.requires_grad)
        parts.append(linear)
    return SplitQKV(*parts)


def fuse_qkv(split: SplitQKV) -> nn.Linear:
    """One (3d, d) Linear with the q, k, v rows in timm's order."""
    q, k, v = split.q, split.k, split.v
    fused = nn.Linear(q.in_features, split.out_features, bias=q.bias is not None,
                      device=q.weight.device, dtype=q.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([q.weight, k.weight, v.weight], dim=0))
        if q.bias is not None:
            fused.bias.copy_(torch.cat([q.bias, k.bias, v.bias], dim=0))
    return fused


def replace_modules(model: nn.Module, names: list[str], build) -> None:
    """Replace each named submodule by ``build(old_module)``."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, build(getattr(parent, child)))
