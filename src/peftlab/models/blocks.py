"""Which transformer block a module belongs to, read from its name (no torch): the number after
``blocks.`` / ``layer.`` / ``layers.`` / ``h.`` (GPT-2's ``transformer.h.N``), Swin's ``layers.S.blocks.M``
counted across its stages. The families (``peftlab.models.families``), the rank allocations
(``peftlab.tuners.ranks``) and the report's rank figures read blocks the same way.
"""

from __future__ import annotations

import re

_BLOCK = re.compile(r"(?:^|\.)(?:blocks|layers|layer|h)\.(\d+)\.")  # h: GPT-2's transformer.h.N
_STAGE_BLOCK = re.compile(r"(?:^|\.)layers\.(\d+)\.blocks\.(\d+)\.")


def block_index(name: str) -> int:
    """The transformer block a module belongs to (0 when the name has none); see ``block_indices``
    for Swin's stages."""
    match = _BLOCK.search(name)
    return int(match.group(1)) if match else 0


def block_indices(names: list[str]) -> list[int]:
    """The block of each module, Swin's counted across its stages: ``layers.1.blocks.0`` follows the
    last block of stage 0 that ``names`` holds (a stage's depth read from the names, not the model)."""
    staged = [_STAGE_BLOCK.search(name) for name in names]
    depths: dict[int, int] = {}
    for match in filter(None, staged):
        depths[int(match[1])] = max(depths.get(int(match[1]), 0), int(match[2]) + 1)
    offsets, total = {}, 0
    for stage in sorted(depths):
        offsets[stage], total = total, total + depths[stage]
    return [offsets[int(m[1])] + int(m[2]) if m else block_index(n) for m, n in zip(staged, names, strict=True)]


def block_names(model) -> list[str]:
    """The names of a timm model's transformer blocks in the order its forward calls them:
    ``blocks.N``, or Swin's ``layers.S.blocks.M``."""
    if hasattr(model, "blocks"):
        return [f"blocks.{i}" for i in range(len(model.blocks))]
    return [
        f"layers.{s}.blocks.{m}"
        for s, stage in enumerate(getattr(model, "layers", ()))
        for m in range(len(getattr(stage, "blocks", ())))
    ]
