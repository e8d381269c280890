"""An int8 base's training matmul with its input gradient through oneDNN: the pin's products since 2026-11-30.

bitsandbytes trains through an int8 layer on a CPU with ``MatMul8bitFp``: the forward dequantizes the int8 weight (``CB
* SCB / 127``) and calls ``F.linear``, which the pin's mode routes to oneDNN; the backward computes the input gradient
with ``torch.matmul`` inside autograd, where no mode reaches, so under the pin of 2026-11-29 it ran in MKL's COMPATIBLE
branch (5.7 of an int8 LoRA run's 42 CPU seconds). ``CandidateLinear8bitLt`` is bitsandbytes' ``Linear8bitLt`` (the same
parameters, state dict and PEFT dispatch) whose pinned training forward (``models.products.quantized_backward``) is
``Int8Matmul``: bitsandbytes' forward, operation for operation, and the input gradient through oneDNN. Elsewhere
(unpinned, an earlier pin, evaluation, other devices and dtypes) it is bitsandbytes' own.
``quant.bases.quantized_linear`` builds it unless the switch asks for an earlier pin's products (the name is from when
it was a candidate, ``PEFTLAB_PIN_PRODUCTS=onednn-quantized``).
"""

from __future__ import annotations

import bitsandbytes as bnb
import torch
import torch.nn.functional as F

from peftlab.models import products


class Int8Matmul(torch.autograd.Function):
    """``x @ (CB * SCB / 127)^T + bias`` as ``MatMul8bitFp`` computes it, the weight dequantized once and kept for
    the backward (bitsandbytes dequantizes it again there, to the same values); the input gradient through
    ``products.quantized_input_grad``."""

    @staticmethod
    def forward(ctx, x, cb, scb, bias):
        weight = cb.data.to(x.dtype).mul_(scb.unsqueeze(1).mul(1.0 / 127.0))
        ctx.save_for_backward(weight)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        grad_x = products.quantized_input_grad(grad, weight) if ctx.needs_input_grad[0] else None
        grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0) if ctx.needs_input_grad[3] else None
        return grad_x, None, None, grad_bias


class CandidateLinear8bitLt(bnb.nn.Linear8bitLt):
    """bitsandbytes' ``Linear8bitLt`` training through ``Int8Matmul`` under the pin; bitsandbytes' own
    forward otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        candidate = self.training and products.quantized_backward() and not self.state.has_fp16_weights
        if not (candidate and x.device.type == "cpu" and x.dtype == torch.float32):
            return super().forward(x)
        self.state.is_training = True
        if self.weight.CB is not None:  # bitsandbytes' own first step: the int8 weight moves into the state
            self.init_8bit_state()
        if self.state.CB is None:
            return super().forward(x)
        bias = self.bias
        if bias is not None and bias.dtype != x.dtype:
            bias.data = bias.data.to(x.dtype)
        out = Int8Matmul.apply(x, self.state.CB, self.state.SCB, bias)
        self.weight.data = self.state.CB  # as bitsandbytes' forward leaves it
        return out
