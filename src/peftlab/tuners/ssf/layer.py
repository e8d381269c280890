"""SSF's layer: a per-channel scale and shift of a module's output (Lian et al., NeurIPS 2022).

``y = base_layer(x) * ssf_scale + ssf_shift`` over the output channels (the last dimension of a
Linear or LayerNorm, dimension 1 of the patch embedding's Conv2d). The scale starts at 1 and
the shift at 0, so the wrapped model starts as the base model (the paper draws them from
N(1, 0.02) and N(0, 0.02); peftlab starts exactly at the base, as the other methods do).
Since the output is an affine function of the base layer's output, it folds into the base:
``W' = diag(scale) W``, ``b' = scale * b + shift`` (LayerNorm: its gamma and beta the same way). A layer
without a bias (CLIP's patch embedding, EVA-02's ``k_proj``) trains its shift all the same; only the
fold has no bias to put it in (``folds``).

In training a LayerNorm's scale and shift are folded into its affine parameters on every step
(weight-sized work, and LayerNorm's own backward gives their gradients), and a Linear's or the
patch embedding's are one ``addcmul``: measured on deit_small (batch 32, 2 threads), the SSF
step went from 1.36x LoRA's to 1.26x (docs/benchmarks.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def output_channels(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return layer.out_features
    if isinstance(layer, nn.Conv2d):
        return layer.out_channels
    return layer.normalized_shape[-1]  # nn.LayerNorm over the last dimension


class SSFLayer(nn.Module):
    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        channels = output_channels(base_layer)
        weight = next(base_layer.parameters())
        self.ssf_scale = nn.Parameter(torch.ones(channels, device=weight.device, dtype=weight.dtype))
        self.ssf_shift = nn.Parameter(torch.zeros(channels, device=weight.device, dtype=weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        if isinstance(base, nn.LayerNorm):  # folded into its affine: no pass over the output of its own
            weight = base.weight * self.ssf_scale
            bias = self.ssf_shift if base.bias is None else torch.addcmul(self.ssf_shift, base.bias, self.ssf_scale)
            return F.layer_norm(x, base.normalized_shape, weight, bias, base.eps)
        out = base(x)
        if isinstance(base, nn.Conv2d):  # (B, C, H, W): channels on dimension 1
            return torch.addcmul(self.ssf_shift[:, None, None], out, self.ssf_scale[:, None, None])
        return torch.addcmul(self.ssf_shift, out, self.ssf_scale)  # one pass over the output, not two

    @property
    def folds(self) -> bool:
        """True when the base layer has a bias to hold the shift, so the fold keeps its architecture."""
        return getattr(self.base_layer, "bias", None) is not None

    @torch.no_grad()
    def folded(self) -> nn.Module:
        """The base layer with the scale and shift folded into its weight and bias (a new module)."""
        import copy

        layer = copy.deepcopy(self.base_layer)
        scale, shift = self.ssf_scale.detach(), self.ssf_shift.detach()
        layer.weight.mul_(scale.view(-1, *([1] * (layer.weight.ndim - 1))))
        layer.bias.mul_(scale).add_(shift)
        layer.requires_grad_(False)
        return layer
