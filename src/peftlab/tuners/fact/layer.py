"""FacT's layers: a timm Linear plus a factorized update ``scale * V core U``, with U and V shared by every layer.

A Linear of a block of width d maps ``a d`` inputs to ``b d`` outputs: qkv (a = 1, b = 3), proj (1, 1),
fc1 (1, k) and fc2 (k, 1) for an MLP k times as wide (4 in a ViT). Its update, as the authors' code computes
it (JieShibo/PETL-ViT ``FacT/fact_tt.py``, ``fact_tk.py``; OSU-MLB/PETL_Vision ``model/fact.py``):

    u = U x_j for each of the a input chunks x_j (d -> r), concatenated     (..., a r)
    t = dropout(core u)                                                        (..., b r)
    delta = V t_i for each of the b output chunks t_i (r -> d), concatenated   (..., b d)

``core`` is ``(b r, a r)``: FacT-TT's own weight (the authors' ``q_FacTs``, ``k_FacTs``, ``v_FacTs`` stacked for
qkv, ``proj_FacTs``, ``fc1_FacTs``, ``fc2_FacTs``, nn.Linear's initialization); FacT-TK's is computed from the
shared core tensor ``FacTc`` (r x r x r) and the coefficients ``FacTp`` (r x 12 per block in a ViT), in exactly
the authors' layout. V starts at zero, so every update starts at exactly zero.

The update is linear in x: it merges into the Linear's weight, ``W + scale * blockdiag(V) core blockdiag(U)``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class FacTFactors(nn.Module):
    """What every FacT layer of a model shares, registered once on the model (as PETL_Vision's ``fact``):
    U (``FacTu``, d -> r) and V (``FacTv``, r -> d, zero at the start); for TK also the core tensor ``FacTc``
    (r, r, r) and the coefficients ``FacTp`` (r, slices), both Xavier-uniform as the authors draw them."""

    def __init__(self, dim: int, r: int, tk_slices: int | None, device=None, dtype=None):
        super().__init__()
        self.FacTu = nn.Linear(dim, r, bias=False, device=device, dtype=dtype)
        self.FacTv = nn.Linear(r, dim, bias=False, device=device, dtype=dtype)
        nn.init.zeros_(self.FacTv.weight)
        if tk_slices is not None:
            self.FacTp = nn.Parameter(nn.init.xavier_uniform_(torch.empty(r, tk_slices, device=device, dtype=dtype)))
            self.FacTc = nn.Parameter(nn.init.xavier_uniform_(torch.empty(r, r, r, device=device, dtype=dtype)))


class FacTLayer(nn.Module):
    """``base_layer(x) + scale * delta(x)`` around a Linear of ``a d`` inputs and ``b d`` outputs.

    ``tk``: None for FacT-TT (the layer owns its core ``FacTs``); for FacT-TK ``(role, start)``, the layer's
    role (qkv, proj, fc1, fc2) and the first column of ``FacTp`` its block's attention (qkv, proj) or MLP
    (fc1, fc2) reads."""

    def __init__(self, base_layer: nn.Linear, factors: FacTFactors, scale: float, dropout: float, tk=None):
        super().__init__()
        self.base_layer = base_layer
        self._factors = (factors,)  # shared with every layer and registered on the model: held, not owned
        dim, self.r = factors.FacTu.in_features, factors.FacTu.out_features
        self.a, self.b = base_layer.in_features // dim, base_layer.out_features // dim
        self.scale = scale
        self.dropout = nn.Dropout(dropout)
        self.tk = tk
        if tk is None:
            weight = base_layer.weight
            self.FacTs = nn.Linear(
                self.a * self.r, self.b * self.r, bias=False, device=weight.device, dtype=weight.dtype
            )

    def core(self) -> torch.Tensor:
        """The (b r, a r) core of this layer's update."""
        if self.tk is None:
            return self.FacTs.weight
        role, start = self.tk
        factors, r = self._factors[0], self.r
        if role in ("qkv", "proj"):  # the block's 4 attention slices: q, k, v, proj
            slices = factors.FacTc @ factors.FacTp[:, start : start + 4]  # (r, r, 4)
            if role == "qkv":
                return torch.cat([slices[:, :, i].t() for i in range(3)])  # (3r, r)
            return slices[:, :, 3].t()
        k = max(self.a, self.b)  # the MLP's 2k slices: fc1's k, then fc2's k
        slices = factors.FacTc @ factors.FacTp[:, start : start + 2 * k]  # (r, r, 2k)
        if role == "fc1":
            return slices[:, :, :k].reshape(r, k * r).t()  # (k r, r)
        return slices[:, :, k:].reshape(r, k * r)  # (r, k r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factors = self._factors[0]
        u = F.linear(x.unflatten(-1, (self.a, -1)), factors.FacTu.weight).flatten(-2)  # (..., a r)
        t = self.dropout(F.linear(u, self.core()))  # (..., b r)
        delta = F.linear(t.unflatten(-1, (self.b, self.r)), factors.FacTv.weight).flatten(-2)  # (..., b d)
        return self.base_layer(x) + self.scale * delta

    def delta_weight(self) -> torch.Tensor:
        """The update as a (b d, a d) weight: ``scale * blockdiag(V) core blockdiag(U)``."""
        factors = self._factors[0]
        core = self.core().reshape(self.b, self.r, self.a, self.r)
        delta = torch.einsum("op,bpaq,qi->boai", factors.FacTv.weight, core, factors.FacTu.weight)
        return self.scale * delta.reshape(self.base_layer.out_features, self.base_layer.in_features)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The base Linear with the update added to its weight (a new module)."""
        layer = copy.deepcopy(self.base_layer)
        layer.weight.add_(self.delta_weight().to(layer.weight.dtype))
        layer.requires_grad_(False)
        return layer
