"""A SHA-256 of the frozen weights, taken at the start and the end of a run: equal, or a bug."""

from __future__ import annotations

import hashlib
import time

import torch
from torch import nn


@torch.no_grad()
def frozen_hash(model: nn.Module) -> dict:
    """SHA-256 over the names and bytes of every parameter that does not train."""
    start = time.perf_counter()
    digest = hashlib.sha256()
    tensors = elements = 0
    for name, param in model.named_parameters():
        if param.requires_grad:
            continue
        data = param.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{data.dtype}:{tuple(param.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy())
        tensors, elements = tensors + 1, elements + data.numel()
    return {"sha256": digest.hexdigest(), "tensors": tensors, "elements": elements,
            "seconds": time.perf_counter() - start}
