"""DiffFit's layer: a learned per-channel scale ``gamma`` on a residual branch of a timm block.

``DiffFitLayer`` wraps a block's ``attn`` or ``mlp`` (call arguments pass through unchanged) and
returns ``base_layer(x) * difffit_gamma``; ``gamma`` has one entry per channel and starts at 1,
so the wrapped model starts as the base model. timm's block adds ``drop_path(ls(branch))`` to the
residual stream; LayerScale and drop path act per channel and per sample, so scaling the branch
before them is PETL_Vision's ``gamma * drop_path(ls(branch))``. The branch ends in a Linear (``proj``
of the attention, ``fc2`` of the MLP) followed only by dropout, so ``gamma`` folds into that
Linear: ``W' = diag(gamma) W``, ``b' = gamma * b``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class DiffFitLayer(nn.Module):
    def __init__(self, base_layer: nn.Module, output: str):
        super().__init__()
        self.base_layer = base_layer
        self.output = output  # the branch's last Linear, where gamma folds: "proj" (attn) or "fc2" (mlp)
        linear = getattr(base_layer, output)
        self.difffit_gamma = nn.Parameter(
            torch.ones(linear.out_features, device=linear.weight.device, dtype=linear.weight.dtype)
        )

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.base_layer(x, *args, **kwargs) * self.difffit_gamma

    @torch.no_grad()
    def folded(self) -> nn.Module:
        """The base module with gamma folded into its last Linear's weight rows and bias (a new module)."""
        module = copy.deepcopy(self.base_layer)
        linear = getattr(module, self.output)
        gamma = self.difffit_gamma.detach()
        linear.weight.mul_(gamma[:, None])
        if linear.bias is not None:
            linear.bias.mul_(gamma)
        module.requires_grad_(False)
        return module
