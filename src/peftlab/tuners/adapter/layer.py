"""A bottleneck adapter around a module of a timm block (its ``attn`` or its ``mlp``).

``Bottleneck``: ``up(act(down(h)))``, d -> bottleneck -> d. ``down`` keeps nn.Linear's own
(Kaiming-uniform) initialization and a zero bias; ``up`` starts at zero (weight and bias), so
every adapter adds exactly zero at the start and the model starts as the base model.

``AdapterLayer`` wraps ``base_layer`` (the module's call arguments pass through unchanged):
- sequential (Houlsby, Pfeiffer): ``y = f(x) + adapter(f(x))``, on the module's output before the
  block's residual addition;
- parallel (AdaptFormer): ``y = f(x) + scale * adapter(x)``; around timm's ``mlp`` ``x`` is
  ``norm2(x')``, the paper's eq. (2) ``ReLU(LN(x') W_down) W_up`` with the block's own LayerNorm.
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, dim: int, bottleneck: int, act: type[nn.Module], device=None, dtype=None):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck, device=device, dtype=dtype)
        self.act = act()
        self.up = nn.Linear(bottleneck, dim, device=device, dtype=dtype)
        with torch.no_grad():
            self.down.bias.zero_()
            self.up.weight.zero_()
            self.up.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class AdapterLayer(nn.Module):
    def __init__(
        self, base_layer: nn.Module, dim: int, bottleneck: int, act: type[nn.Module], parallel: bool, scale: float = 1.0
    ):
        super().__init__()
        weight = next(base_layer.parameters())
        self.base_layer = base_layer
        self.adapter = Bottleneck(dim, bottleneck, act, device=weight.device, dtype=weight.dtype)
        self.parallel = parallel
        self.scale = scale

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.base_layer(x, *args, **kwargs)
        return out + self.scale * self.adapter(x if self.parallel else out)
