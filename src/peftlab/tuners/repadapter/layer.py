"""RepAdapter's adapter (luogen1996/RepAdapter ``repadapter.py``; OSU-MLB/PETL_Vision ``model/repadapter.py``).

``RepAdapter``: ``conv_B(dropout(conv_A(x)))``, both 1-wide Conv1d over the channels as the authors build them:
``conv_A`` d -> dim (Xavier-uniform, zero bias), ``conv_B`` dim -> d in ``groups`` groups (zero weight and bias),
so the adapter starts at exactly zero. It is computed as two Linears on the token's last dimension, conv_B's
grouped weight as its block-diagonal (d, dim) matrix.

``RepAdapterLayer`` puts it before a block's ``attn`` or ``mlp`` (the authors' and PETL_Vision's
``sequential_before``): ``f(x + scale * adapter(x), ...)``, x the branch's normalized input. The adapter is affine,
``x + scale * adapter(x) = M x + c`` with ``M = I + scale B A`` and ``c = scale (B b_A + b_B)``, so it folds into
every Linear that reads the branch's input: ``W' = W M``, ``b' = b + W c`` (the authors' ``reparameterize``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class RepAdapter(nn.Module):
    def __init__(self, width: int, dim: int, groups: int, dropout: float, device=None, dtype=None):
        super().__init__()
        self.conv_A = nn.Conv1d(width, dim, 1, bias=True, device=device, dtype=dtype)
        self.conv_B = nn.Conv1d(dim, width, 1, groups=groups, bias=True, device=device, dtype=dtype)
        self.dropout = nn.Dropout(dropout)
        self.groups = groups
        with torch.no_grad():
            nn.init.xavier_uniform_(self.conv_A.weight)
            nn.init.zeros_(self.conv_A.bias)
            nn.init.zeros_(self.conv_B.weight)
            nn.init.zeros_(self.conv_B.bias)

    def dense_B(self) -> torch.Tensor:
        """conv_B's grouped weight (d, dim / groups, 1) as the (d, dim) matrix it applies: block-diagonal."""
        return torch.block_diag(*self.conv_B.weight[..., 0].chunk(self.groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.linear(x, self.conv_A.weight[..., 0], self.conv_A.bias))  # (..., dim)
        return F.linear(h, self.dense_B(), self.conv_B.bias)  # (..., d)

    def affine(self, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) with ``x + scale * adapter(x) = M x + c`` (dropout off)."""
        weight_B = self.dense_B()
        matrix = scale * weight_B @ self.conv_A.weight[..., 0]
        matrix = matrix + torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
        return matrix, scale * (weight_B @ self.conv_A.bias + self.conv_B.bias)


class RepAdapterLayer(nn.Module):
    """``base_layer(x + scale * adapter(x), ...)``; ``readers``: the base module's Linears that read x."""

    def __init__(self, base_layer: nn.Module, adapter: RepAdapter, scale: float, readers: list[str]):
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter
        self.scale = scale
        self.readers = readers

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.base_layer(x + self.scale * self.adapter(x), *args, **kwargs)

    def unbiased(self) -> list[str]:
        """The readers without a bias, where plain timm has nowhere to put ``W c``."""
        return [name for name in self.readers if self.base_layer.get_submodule(name).bias is None]

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The base module with the adapter folded into each reader's weight and bias (a new module)."""
        module = copy.deepcopy(self.base_layer)
        matrix, shift = self.adapter.affine(self.scale)
        for name in self.readers:
            linear = module.get_submodule(name)
            linear.bias.add_((linear.weight @ shift).to(linear.bias.dtype))
            linear.weight.copy_((linear.weight @ matrix).to(linear.weight.dtype))
        module.requires_grad_(False)
        return module
