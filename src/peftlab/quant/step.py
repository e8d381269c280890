"""A 4-bit layer's matmul on a CPU with its weight dequantized into one reused buffer.

bitsandbytes' ``matmul_4bit`` on a CPU dequantizes the whole weight into a new tensor for the
forward, and again for the backward (three times per step with gradient checkpointing): a
ViT-L/16 step allocates and frees about 3.5 GB of fp32 weights that way. glibc either keeps
those blocks in its heap (the train peak measured in issue 38 was three quarters freed memory)
or, with ``train.malloc: lean``, maps and unmaps each one, paying a page fault per 4 KiB.
``BufferedLinear4bit`` dequantizes with the same bitsandbytes CPU kernel into one fp32 buffer
per thread, as large as the largest 4-bit weight, and saves only the packed weight for the
backward, which dequantizes it again. The numbers are bitsandbytes' own, bit for bit (a test);
only where they are written changes. ``StackedWeights`` dequantizes q, k and v into one (3d, d)
buffer so that a QLoRA base takes the fused q/k/v step (``tuners.modules.FusedLoraQKV``) that fp32
LoRA takes, instead of PEFT's three bnb LoRA layers and a ``cat``.

The buffer path runs for an fp32 matmul on a CPU outside ``torch.compile``. A bf16 / fp16
``quant.compute_dtype``, another device, and bitsandbytes' repacked bf16 kernel
(``quant.cpu_kernel: bnb`` in evaluation) take bitsandbytes' own forward.
"""

from __future__ import annotations

import ctypes
import threading

import bitsandbytes as bnb
import bitsandbytes.functional as BF
import torch
import torch.nn.functional as F
from bitsandbytes.cextension import ErrorHandlerMockBNBNativeLibrary, lib
from bitsandbytes.nn.modules import fix_4bit_weight_quant_state_from_module

from peftlab.models import products

_BUFFERS = threading.local()
_KERNELS = {"nf4": "cdequantize_blockwise_cpu_nf4_fp32", "fp4": "cdequantize_blockwise_cpu_fp4_fp32"}


def weight_buffer(shape: tuple[int, int]) -> torch.Tensor:
    """This thread's fp32 scratch, viewed as ``shape``; it grows to the largest weight asked for."""
    flat = getattr(_BUFFERS, "flat", None)
    numel = shape[0] * shape[1]
    if flat is None or flat.numel() < numel:
        _BUFFERS.flat = flat = torch.empty(numel, dtype=torch.float32)
    return flat[:numel].view(shape)


def buffer_bytes() -> int:
    """Bytes this thread's buffer holds (0 before the first 4-bit matmul)."""
    flat = getattr(_BUFFERS, "flat", None)
    return 0 if flat is None else flat.numel() * flat.element_size()


def dequantize_into_buffer(packed: torch.Tensor, state) -> torch.Tensor:
    """The fp32 weight (out x in) of a 4-bit layer, written into this thread's buffer."""
    return dequantize_into(packed, state, weight_buffer(tuple(state.shape)))


def dequantize_into(packed: torch.Tensor, state, out: torch.Tensor) -> torch.Tensor:
    """Write the fp32 weight (out x in) of a 4-bit layer into ``out`` (contiguous, that shape).

    The same statistics and kernel as bitsandbytes' CPU ``dequantize_4bit``: the nested absmax is
    dequantized as ``bitsandbytes.functional.dequantize_4bit`` does it; where bitsandbytes' CPU
    kernel falls back to its generic code (an odd row length, a block of 2048 or more on AVX-512)
    or is missing, the result of bitsandbytes' own op is copied in.
    """
    shape = tuple(state.shape)
    absmax = state.absmax
    if state.nested:
        absmax = BF.dequantize_blockwise(state.absmax, state.state2) + state.offset
    absmax = absmax.float()
    data = packed.view(torch.uint8)
    native = not isinstance(lib, ErrorHandlerMockBNBNativeLibrary)  # bitsandbytes' CPU library loaded
    kernel = getattr(lib, _KERNELS[state.quant_type], None) if native else None
    generic = shape[1] % 2 or (state.blocksize >= 2048 and torch.backends.cpu.get_cpu_capability() == "AVX512")
    if kernel is None or generic:
        op = torch.ops.bitsandbytes.dequantize_4bit.default
        return out.copy_(op(data, absmax, state.blocksize, state.quant_type, shape, torch.float32))
    kernel(
        BF.get_ptr(data),
        BF.get_ptr(absmax),
        BF.get_ptr(out),
        ctypes.c_longlong(state.blocksize),
        ctypes.c_longlong(shape[0]),
        ctypes.c_longlong(shape[1]),
    )
    return out


class StackedWeights:
    """The 4-bit weights of ``layers`` (same in_features) dequantized one under another into this
    thread's buffer, each time it is called: the fused q/k/v step's frozen (3d, d) weight on a
    4-bit base (``tuners.modules.SplitQKV``), recomputed for the backward instead of saved."""

    def __init__(self, layers: list[BufferedLinear4bit]):
        self.parts = [(layer.weight, layer.weight.quant_state) for layer in layers]
        self.rows = sum(state.shape[0] for _, state in self.parts)

    def __call__(self) -> torch.Tensor:
        out = weight_buffer((self.rows, self.parts[0][1].shape[1]))
        start = 0
        for packed, state in self.parts:
            dequantize_into(packed, state, out[start : start + state.shape[0]])
            start += state.shape[0]
        return out


def stacked_weights(layers: list, x: torch.Tensor) -> StackedWeights | None:
    """``StackedWeights`` of ``layers`` when each is a ``BufferedLinear4bit`` taking the buffer path
    for ``x`` (and no autocast is on); None otherwise."""
    if torch.is_autocast_enabled(x.device.type):
        return None
    if all(type(layer) is BufferedLinear4bit and layer.buffers_for(x) for layer in layers):
        return StackedWeights(layers)
    return None


class BufferedMatmul4bit(torch.autograd.Function):
    """``x @ dequant(W).T + bias`` saving only the packed weight: the backward dequantizes it again."""

    @staticmethod
    def forward(ctx, x, packed, bias, state):
        ctx.packed, ctx.state = packed, state
        return F.linear(x, dequantize_into_buffer(packed, state), bias)

    @staticmethod
    def backward(ctx, grad):
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:  # oneDNN's under the pin, MKL's under that of 2026-11-29
            grad_x = products.quantized_input_grad(grad, dequantize_into_buffer(ctx.packed, ctx.state))
        if ctx.needs_input_grad[2]:  # bitsandbytes' sum over the first dim; autograd sums the rest
            grad_bias = grad.sum(0)
        return grad_x, None, grad_bias, None


class BufferedLinear4bit(bnb.nn.Linear4bit):
    """bitsandbytes' ``Linear4bit`` (the same parameters, state dict and PEFT dispatch) whose fp32
    CPU matmul dequantizes into the thread's buffer instead of a new tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.buffers_for(x):
            return super().forward(x)
        bias = None if self.bias is None else self.bias.float()
        return BufferedMatmul4bit.apply(x, self.weight, bias, self.weight.quant_state)

    def buffers_for(self, x: torch.Tensor) -> bool:
        """Whether this layer's matmul with ``x`` takes the buffer path (fp32 on a CPU, eager, no
        repacked bf16 kernel); sets the compute dtype on a first call as bitsandbytes' forward does."""
        fix_4bit_weight_quant_state_from_module(self)
        if not self.compute_type_is_set:
            self.set_compute_type(x)
            self.compute_type_is_set = True
        repacks = self.support_avx512bf16_for_cpu and not self.training and not x.requires_grad
        return not (
            x.device.type != "cpu"
            or repacks
            or getattr(self.weight.quant_state, "packing_format_for_cpu", False)
            or self.compute_dtype not in (None, torch.float32)
            or x.dtype != torch.float32
            or torch.compiler.is_compiling()
        )
