"""peftlab's group-wise weight quantizer, in plain torch (CPU and GPU).

A weight W (out x in) is cut into groups of ``group_size`` consecutive input columns; every
(row, group) has its own scale s and zero z (integer formats) or offset o (codebook formats):

- ``int2`` / ``int3`` / ``int4`` / ``int8``, asymmetric min-max: q = round((W - min) / s) in
  [0, 2^b - 1], s = (max - min) / (2^b - 1), z = -min / s, and W ~ s·(q - z).
- ``nf4`` / ``fp4``, a 16-value codebook c on [-1, 1] with a per-group offset: o = (max + min) / 2,
  s = (max - min) / 2, q = the nearest c to (W - o) / s, and W ~ s·c[q] + o.

Zeros and offsets are fp32 (not integers as in GPTQ) so that QA-LoRA's merge, which adds a
constant to every weight of a group, folds into them exactly and leaves the codes as they are:
int z' = z - Δ / s, codebook o' = o + Δ. Rounding to the nearest level bounds the error of every
element by half a step: s/2 for the integer formats, s·(largest gap of c)/2 for the codebooks
(``error_bound``). Codes are packed along the flattened weight: four 2-bit codes, two 3- or
4-bit codes (3-bit codes take a 4-bit slot) or one 8-bit code per byte.
"""

from __future__ import annotations

import torch

BITS = {"int2": 2, "int3": 3, "int4": 4, "int8": 8, "nf4": 4, "fp4": 4}

# NF4 (Dettmers et al., QLoRA, 2023, appendix E): quantiles of N(0, 1) scaled to [-1, 1], with an exact 0.
NF4 = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
# FP4 as bitsandbytes defines it (e2m1, sign-magnitude, so +0 and -0 both occur): {0, 0.0625, 2, 3, 4, 6, 8, 12} / 12
_FP4_MAGNITUDES = (0.0, 0.0625, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
FP4 = tuple(sorted([-m / 12 for m in _FP4_MAGNITUDES] + [m / 12 for m in _FP4_MAGNITUDES]))
CODEBOOKS = {"nf4": NF4, "fp4": FP4}


def is_integer_format(fmt: str) -> bool:
    return fmt.startswith("int")


def codebook(fmt: str, device=None) -> torch.Tensor:
    """The sorted codebook of ``nf4`` / ``fp4`` as an fp32 tensor (16 values on [-1, 1])."""
    return torch.tensor(CODEBOOKS[fmt], dtype=torch.float32, device=device)


def slot_bits(fmt: str) -> int:
    """Bits a code takes in the packed bytes."""
    bits = BITS[fmt]
    return 2 if bits == 2 else 4 if bits <= 4 else 8


def quantize_groups(weight: torch.Tensor, fmt: str, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8 out x in, scales fp32 out x G, zeros or offsets fp32 out x G) with G = in / group_size."""
    out_features, in_features = weight.shape
    if in_features % group_size:
        raise ValueError(f"group_size={group_size} does not divide in_features={in_features}")
    w = weight.detach().float().reshape(out_features, in_features // group_size, group_size)  # (out, G, L)
    low, high = w.amin(-1), w.amax(-1)  # (out, G)
    if is_integer_format(fmt):
        levels = 2 ** BITS[fmt] - 1
        scales = (high - low) / levels
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))  # a constant group: any scale is exact
        codes = torch.round((w - low[..., None]) / scales[..., None]).clamp_(0, levels)
        shifts = -low / scales  # zeros
    else:
        book = codebook(fmt, w.device)
        shifts = (high + low) / 2  # offsets
        scales = (high - low) / 2
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        normalized = (w - shifts[..., None]) / scales[..., None]  # in [-1, 1]
        codes = torch.bucketize(normalized, (book[1:] + book[:-1]) / 2)  # index of the nearest code
    return codes.to(torch.uint8).reshape(out_features, in_features), scales, shifts


def dequantize_groups(
    codes: torch.Tensor, scales: torch.Tensor, shifts: torch.Tensor, fmt: str, book: torch.Tensor | None = None
) -> torch.Tensor:
    """The fp32 weight (out x in) the codes stand for: s·(q - z) or s·c[q] + o, group by group."""
    out_features, in_features = codes.shape
    groups = scales.shape[1]
    q = codes.reshape(out_features, groups, in_features // groups)  # (out, G, L)
    if is_integer_format(fmt):
        w = scales[..., None] * (q.float() - shifts[..., None])
    else:
        book = codebook(fmt, codes.device) if book is None else book
        w = scales[..., None] * book[q.long()] + shifts[..., None]
    return w.reshape(out_features, in_features)


def error_bound(scales: torch.Tensor, fmt: str) -> torch.Tensor:
    """The largest |W - dequant(quant(W))| rounding to the nearest level allows, per (row, group)."""
    if is_integer_format(fmt):
        return scales / 2
    book = codebook(fmt, scales.device)
    return scales * (book[1:] - book[:-1]).max() / 2


def pack_codes(codes: torch.Tensor, fmt: str) -> torch.Tensor:
    """Codes (any shape, values < 2^bits) packed along their flattened order into a 1-D uint8 tensor."""
    bits = slot_bits(fmt)
    per_byte = 8 // bits
    flat = codes.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % per_byte
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    slots = flat.reshape(-1, per_byte)
    packed = torch.zeros(slots.shape[0], dtype=torch.uint8, device=codes.device)
    for k in range(per_byte):
        packed |= slots[:, k] << (k * bits)
    return packed


def unpack_codes(packed: torch.Tensor, fmt: str, shape: tuple[int, int]) -> torch.Tensor:
    """The inverse of ``pack_codes``: uint8 codes of ``shape``."""
    bits = slot_bits(fmt)
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
    codes = (packed[:, None] >> shifts) & (2**bits - 1)  # (bytes, per_byte)
    return codes.reshape(-1)[: shape[0] * shape[1]].reshape(shape)


def relative_error(weight: torch.Tensor, approx: torch.Tensor) -> float:
    """||W - Ŵ||_F / ||W||_F."""
    weight = weight.detach().float()
    return float(torch.linalg.vector_norm(weight - approx) / torch.linalg.vector_norm(weight).clamp_min(1e-30))
