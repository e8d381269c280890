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

from peftlab.utils.errors import ConfigError

# timm's module and class names of the blocks these methods know
BLOCKS = {
    "timm.models.vision_transformer": "Block",
    "timm.models.eva": "EvaBlock",
    "timm.models.beit": "Block",
    "timm.models.swin_transformer": "SwinTransformerBlock",
}


def block_names(model: nn.Module) -> list[str]:
    """The names of the model's transformer blocks in the order its forward calls them:
    ``blocks.N``, or Swin's ``layers.S.blocks.M``."""
    if hasattr(model, "blocks"):
        return [f"blocks.{i}" for i in range(len(model.blocks))]
    return [
        f"layers.{s}.blocks.{m}"
        for s, stage in enumerate(getattr(model, "layers", ()))
        for m in range(len(getattr(stage, "blocks", ())))
    ]


def block_dim(block: nn.Module) -> int:
    """The width of the tokens a block reads and writes (Swin's grows stage by stage)."""
    return block.norm1.normalized_shape[0]


def check_timm_blocks(model: nn.Module, method: str) -> list[str]:
    """The model's block names; a ConfigError unless every block is one of timm's known blocks."""
    names = block_names(model) if type(model).__module__.startswith("timm.") else []
    if not names:
        inner = getattr(model, "model", None)  # peftlab's wrapper of a transformers model: name that model
        shown = type(inner if isinstance(inner, nn.Module) else model).__name__
        raise ConfigError(
            f"method.name={method!r} supports timm ViT, EVA, BEiT and Swin models (model.source: timm), not {shown}"
        )
    kinds = {type(model.get_submodule(name)) for name in names}
    unknown = sorted(k.__name__ for k in kinds if BLOCKS.get(k.__module__) != k.__name__)
    if unknown:
        raise ConfigError(
            f"method.name={method!r} wraps the attn and mlp of timm's ViT, EVA, BEiT and Swin blocks; this "
            f"model's blocks are {', '.join(unknown)}"
        )
    return names
