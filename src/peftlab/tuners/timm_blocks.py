"""What the hand-written methods (SSF, DiffFit, the adapters, VPT) need of a timm backbone.

They wrap timm's own modules (a block's ``attn`` and ``mlp``, the blocks themselves) and rely on
the model's ``forward_features`` calling each block's ``attn`` and ``mlp`` on its residual branches
in order. timm's ViT ``Block`` (ViT, DeiT, DeiT-III, DINOv2, CLIP, SigLIP), ``EvaBlock`` (EVA-02),
BEiT's ``Block`` and ``SwinTransformerBlock`` (nested in stages, ``layers.S.blocks.M``) all compute
``x + branch(norm(x))`` with ``attn`` and ``mlp`` as the branches' modules. An HF model or another
block class (a parallel or post-norm block) refuses in one line.
"""

from __future__ import annotations

from torch import nn

from peftlab.models.blocks import block_names  # noqa: F401 (the methods import it here)
from peftlab.models.structure import structure_of
from peftlab.tuners import structural


def block_dim(block: nn.Module) -> int:
    """The width of the tokens a block reads and writes (Swin's grows stage by stage)."""
    return block.norm1.normalized_shape[0]


def check_timm_blocks(model: nn.Module, method: str) -> list[str]:
    """The model's block names; a ConfigError unless every block is one of timm's known blocks
    (``tuners.structural.check_timm_blocks`` of its structure)."""
    return structural.check_timm_blocks(structure_of(model), method)
