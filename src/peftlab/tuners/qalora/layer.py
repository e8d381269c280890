"""The group-wise quantized base Linear and the QA-LoRA layer that wraps it.

``GroupQuantLinear`` stores a frozen weight as packed codes, scales and zeros (integer formats)
or offsets (codebook formats), see quantizer.py, and dequantizes it per forward, as
bitsandbytes' 4-bit layers do. During a quantization schedule it also holds the fp32 weight and
computes with W_t = (1 - λ)·W + λ·Q(W); at λ = 1 only the codes count.

``QALoraLinear`` (Xu et al., QA-LoRA, ICLR 2024) wraps one: its ``lora_A`` (r x in/L) sees the
input average-pooled over the same groups of L = ``group_size`` columns, ``lora_B`` (out x r)
starts at zero, and the update is scaled by alpha / r. The update is then constant inside every
group, ΔW[i, j] = scaling·(B·A)[i, g(j)] / L, and ``merge`` folds it into the group's zero or
offset: the merged layer is the same quantized layer with the same codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from peftlab.tuners.qalora import quantizer


class GroupQuantLinear(nn.Module):
    quantized_base = True  # peftlab.quant.bases.is_quantized_linear: a frozen quantized base layer

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        fmt: str,
        group_size: int,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.format, self.group_size = fmt, group_size
        groups = in_features // group_size
        per_byte = 8 // quantizer.slot_bits(fmt)
        self.register_buffer(
            "codes", torch.zeros(-(-in_features * out_features // per_byte), dtype=torch.uint8, device=device)
        )
        self.register_buffer("scales", torch.ones(out_features, groups, device=device))
        self.register_buffer(self.shift_name, torch.zeros(out_features, groups, device=device))
        if not quantizer.is_integer_format(fmt):
            self.register_buffer("codebook", quantizer.codebook(fmt, device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False) if bias else None
        self.lam = 1.0  # the schedule's λ: the weight is (1 - λ)·W + λ·Q(W)
        self.register_buffer("float_weight", None, persistent=False)  # W, kept only while λ < 1 can occur

    @property
    def shift_name(self) -> str:
        return "zeros" if quantizer.is_integer_format(self.format) else "offsets"

    @property
    def shifts(self) -> torch.Tensor:
        return getattr(self, self.shift_name)

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str, group_size: int, keep_float: bool = False) -> GroupQuantLinear:
        weight = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, fmt, group_size, weight.device)
        codes, scales, shifts = quantizer.quantize_groups(weight, fmt, group_size)
        with torch.no_grad():
            layer.codes.copy_(quantizer.pack_codes(codes, fmt))
            layer.scales.copy_(scales)
            layer.shifts.copy_(shifts)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        if keep_float:
            layer.float_weight = weight.float().clone()
        return layer

    def unpacked_codes(self) -> torch.Tensor:
        return quantizer.unpack_codes(self.codes, self.format, (self.out_features, self.in_features))

    def dequantized_weight(self) -> torch.Tensor:
        """Q(W), fp32 (out x in)."""
        return quantizer.dequantize_groups(
            self.unpacked_codes(), self.scales, self.shifts, self.format, getattr(self, "codebook", None)
        )

    def weight_in_use(self) -> torch.Tensor:
        quantized = self.dequantized_weight()
        if self.lam >= 1.0 or self.float_weight is None:
            return quantized
        return torch.lerp(self.float_weight, quantized, self.lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_in_use()
        if torch.is_autocast_enabled(x.device.type):
            return F.linear(x, weight, self.bias)
        return F.linear(x, weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    @torch.no_grad()
    def fold(self, delta: torch.Tensor) -> None:
        """Add ``delta`` (out x G) to every weight of each (row, group), through the zeros or offsets only."""
        if quantizer.is_integer_format(self.format):
            self.zeros.sub_(delta.float() / self.scales)  # s·(q - (z - Δ/s)) = s·(q - z) + Δ
        else:
            self.offsets.add_(delta.float())  # s·c[q] + (o + Δ)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"format={self.format}, group_size={self.group_size}"
        )


class QALoraLinear(nn.Module):
    def __init__(self, base_layer: GroupQuantLinear, r: int, lora_alpha: float, lora_dropout: float):
        super().__init__()
        self.base_layer = base_layer
        self.group_size = base_layer.group_size
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        device = base_layer.scales.device
        self.lora_A = nn.Linear(base_layer.in_features // self.group_size, r, bias=False, device=device)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False, device=device)
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.scaling = lora_alpha / r
        nn.init.xavier_uniform_(self.lora_A.weight)  # as the reference implementation (peft_utils.py)
        nn.init.zeros_(self.lora_B.weight)  # the layer starts as its quantized base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        pooled = x.unflatten(-1, (-1, self.group_size)).mean(-1)  # (..., in) -> (..., in / group_size)
        return result + self.lora_B(self.lora_A(self.lora_dropout(pooled))) * self.scaling

    def delta_groups(self) -> torch.Tensor:
        """ΔW per (row, group), out x G: scaling·(B·A) / group_size (the pooling averages L inputs)."""
        return (self.lora_B.weight @ self.lora_A.weight).float() * (self.scaling / self.group_size)

    def delta_weight(self) -> torch.Tensor:
        """ΔW (out x in), constant inside every group."""
        return self.delta_groups().repeat_interleave(self.group_size, dim=1)

    def merged_base(self) -> GroupQuantLinear:
        """The base layer with the update folded into its zeros / offsets (the codes are shared, not copied)."""
        base = self.base_layer
        merged = GroupQuantLinear(
            base.in_features,
            base.out_features,
            base.bias is not None,
            base.format,
            base.group_size,
            device=base.scales.device,
        )
        merged.codes = base.codes
        merged.scales = base.scales.clone()
        setattr(merged, merged.shift_name, base.shifts.detach().clone())
        if not quantizer.is_integer_format(base.format):
            merged.codebook = base.codebook
        if base.bias is not None:
            merged.bias = nn.Parameter(base.bias.detach().clone(), requires_grad=False)
        merged.fold(self.delta_groups())
        return merged


def dequantized_linear(layer: GroupQuantLinear) -> nn.Linear:
    """A float Linear holding Q(W) (after a merge: Q(W) + ΔW)."""
    linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
    linear.weight = nn.Parameter(layer.dequantized_weight(), requires_grad=False)
    if layer.bias is not None:
        linear.bias = nn.Parameter(layer.bias.detach().float().clone(), requires_grad=False)
    return linear
