"""A SHA-256 of the frozen weights, taken at the start and the end of a run: equal, or a bug.

A quantized base's weights are more than its parameters' bytes: a 4-bit layer's codes mean
nothing without its quantization statistics (absmax, nested or not, the code book), an int8
layer's without its row scales (SCB). Those are hashed too, except on a 4-bit layer that may
repack itself for bitsandbytes' AVX512-BF16 kernel (``quant.cpu_kernel: bnb``): the repacking
rounds its absmax to bf16 in evaluation, by design, so only its codes are compared there.
"""

from __future__ import annotations

import hashlib
import time

import torch
from torch import nn

from peftlab.quant.bases import is_bnb_linear


@torch.no_grad()
def frozen_hash(model: nn.Module) -> dict:
    """SHA-256 over the names and bytes of every parameter that does not train, and over the
    quantization statistics of the quantized layers."""
    start = time.perf_counter()
    digest = hashlib.sha256()
    tensors = elements = 0
    for name, tensor in [*frozen_parameters(model), *quantization_statistics(model)]:
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy())
        tensors, elements = tensors + 1, elements + data.numel()
    return {
        "sha256": digest.hexdigest(),
        "tensors": tensors,
        "elements": elements,
        "seconds": time.perf_counter() - start,
    }


def frozen_parameters(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, param) for name, param in model.named_parameters() if not param.requires_grad]


def quantization_statistics(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) for the statistics of each bitsandbytes layer: a 4-bit layer's quant state
    (its tensors, and its scalars as a tensor of their text) and an int8 layer's row scales."""
    found = []
    for name, module in model.named_modules():
        if not is_bnb_linear(module):  # not PEFT's wrappers, whose weight is their base layer's
            continue
        state = getattr(module.weight, "quant_state", None)
        if state is not None and not getattr(module, "support_avx512bf16_for_cpu", False):
            for key, value in sorted(state.as_dict(packed=False).items()):
                if not isinstance(value, torch.Tensor):
                    value = torch.tensor(list(repr(value).encode()), dtype=torch.uint8)
                found.append((f"{name}.weight.quant_state.{key}", value))
        # an int8 layer's scales move from its weight to its state at its first forward
        scales = getattr(module.weight, "SCB", None)
        scales = scales if scales is not None else getattr(getattr(module, "state", None), "SCB", None)
        if isinstance(scales, torch.Tensor):
            found.append((f"{name}.SCB", scales))
    return found
