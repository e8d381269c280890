"""Convpass's bypass (JieShibo/PETL-ViT ``convpass/vtab/convpass.py``; OSU-MLB/PETL_Vision ``model/convpass.py``).

``Convpass``: tokens (B, N, d) -> ``down`` (d -> dim) -> QuickGELU -> a 3 x 3 convolution (padding 1) over the
patch tokens laid out as their H x W grid, each prefix token (class, registers) convolved alone as a 1 x 1 image
(the authors' class token: only the kernel's centre taps reach it) -> QuickGELU -> dropout -> ``up`` (dim -> d).
``down`` is Xavier-uniform with a zero bias, ``up`` zero (weight and bias), the convolution the identity
(its centre taps; ``xavier_init``: Xavier) with a zero bias: every bypass starts at exactly zero.

``ConvpassLayer`` wraps a block's ``attn`` or ``mlp``: ``y = f(x, ...) + scale * convpass(x)``, x the branch's
input (``norm1(x)``, ``norm2(x)``), as the authors'
``x + drop_path(attn(norm1(x))) + drop_path(convpass(norm1(x))) * s``. The sum then passes the block's
LayerScale and drop path together (the authors drop each term with its own mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Convpass(nn.Module):
    def __init__(
        self,
        width: int,
        dim: int,
        grid: tuple[int, int],
        prefix: int,
        xavier_init: bool,
        dropout: float,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.grid, self.prefix = grid, prefix
        self.adapter_down = nn.Linear(width, dim, device=device, dtype=dtype)
        self.adapter_conv = nn.Conv2d(dim, dim, 3, 1, 1, device=device, dtype=dtype)
        self.adapter_up = nn.Linear(dim, width, device=device, dtype=dtype)
        self.act = QuickGELU()
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():
            nn.init.xavier_uniform_(self.adapter_down.weight)
            nn.init.zeros_(self.adapter_down.bias)
            if xavier_init:
                nn.init.xavier_uniform_(self.adapter_conv.weight)
            else:
                nn.init.zeros_(self.adapter_conv.weight)
                self.adapter_conv.weight[:, :, 1, 1].copy_(torch.eye(dim, device=device, dtype=dtype))
            nn.init.zeros_(self.adapter_conv.bias)
            nn.init.zeros_(self.adapter_up.weight)
            nn.init.zeros_(self.adapter_up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (height, width), prefix = self.grid, self.prefix
        if x.shape[1] != prefix + height * width:
            raise ValueError(
                f"convpass expects {prefix} prefix tokens and a {height} x {width} patch grid, got {x.shape[1]} tokens"
            )
        h = self.act(self.adapter_down(x))  # (B, N, dim)
        patches = h[:, prefix:].unflatten(1, (height, width)).permute(0, 3, 1, 2)  # (B, dim, H, W)
        patches = self.adapter_conv(patches).flatten(2).transpose(1, 2)  # (B, H W, dim)
        centre = self.adapter_conv.weight[:, :, 1, 1]  # a 1 x 1 image with padding 1 meets only the centre taps
        tokens = F.linear(h[:, :prefix], centre, self.adapter_conv.bias)  # (B, prefix, dim)
        h = self.dropout(self.act(torch.cat([tokens, patches], dim=1)))
        return self.adapter_up(h)


class ConvpassLayer(nn.Module):
    def __init__(self, base_layer: nn.Module, convpass: Convpass, scale: float):
        super().__init__()
        self.base_layer = base_layer
        self.convpass = convpass
        self.scale = scale

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.base_layer(x, *args, **kwargs) + self.scale * self.convpass(x)
