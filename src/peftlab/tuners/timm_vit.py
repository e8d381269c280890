"""What the hand-written methods (SSF, adapters, VPT) need of a timm VisionTransformer.

They wrap timm's own modules (a block's ``attn`` and ``mlp``, the blocks themselves) and rely
on timm's ``VisionTransformer.forward_features`` calling them in order; an HF model or another
timm family has other modules, so these methods refuse it in one line.
"""

from __future__ import annotations

from torch import nn

from peftlab.errors import ConfigError


def check_timm_vit(model: nn.Module, method: str) -> None:
    """A ConfigError unless ``model`` is a timm VisionTransformer made of timm's ``Block``s."""
    from timm.models.vision_transformer import Block, VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise ConfigError(
            f"method.name={method!r} supports timm ViTs only (model.source: timm with a "
            f"VisionTransformer such as deit_tiny_patch16_224), not {type(model).__name__}"
        )
    if not all(type(block) is Block for block in model.blocks):
        kinds = sorted({type(block).__name__ for block in model.blocks})
        raise ConfigError(
            f"method.name={method!r} supports timm ViTs built of timm's Block; this model's blocks "
            f"are {', '.join(kinds)}"
        )
