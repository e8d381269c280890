"""Convpass (Jie & Deng, 2022, "Convolutional Bypasses Are Better Vision Transformer Adapters") on timm's ViT,
EVA and BEiT blocks: a convolutional bypass beside every block's attention and beside its MLP.

Each bypass reads the branch's normalized input and adds ``scale * convpass(x)`` to the branch's output
(``layer.ConvpassLayer``), as PETL_Vision's ``convpass`` runs it (``ft_attn_mode`` / ``ft_mlp_mode``
parallel, ``ft_*_ln`` after). The convolution runs over the patch grid (``patch_embed.grid_size``); each prefix
token (class, registers) is convolved alone, as the authors' class token; a model without prefix tokens
(SigLIP) convolves its patches only. Trainable besides the head, two bypasses per block of width d:
``2 L (2 d m + 9 m^2 + 2 m + d)`` for ``dim`` m; on ViT-B/16 at m = 8, 327,552, PETL_Vision's figure.

Refused: Swin (its attention sees windows, not the grid; the authors' Swin variant is not built here) and a
model whose patch grid changes with its input (``dynamic_img_size``).

No merge: QuickGELU and the convolution sit between the projections, so nothing folds into the base weights;
``merged_model`` is None, the recipe skips the merge check, ``export --merged`` writes the base with the bypasses.
"""

from __future__ import annotations

from torch import nn

from peftlab.models.backbones import head_prefix
from peftlab.models.structure import structure_of
from peftlab.tuners import plans
from peftlab.tuners.base import Tuner, TunerContext
from peftlab.tuners.convpass.config import ConvpassConfig
from peftlab.tuners.convpass.layer import Convpass, ConvpassLayer
from peftlab.tuners.modules import replace_modules
from peftlab.tuners.timm_blocks import block_dim, block_names


class ConvpassTuner(Tuner):
    name = "convpass"
    is_adapter = True  # trains added modules (the adapter count is reported); merged_model: None

    def merged_model(self, quantized: bool = False) -> None:
        return None  # QuickGELU and a convolution inside each bypass: nothing folds into the base weights


def check(model: nn.Module, cfg: ConvpassConfig, ctx: TunerContext) -> None:
    plans.check_convpass(structure_of(model), cfg)


def apply(model: nn.Module, cfg: ConvpassConfig, ctx: TunerContext) -> ConvpassTuner:
    head = head_prefix(model)
    grid, prefix = tuple(model.patch_embed.grid_size), model.num_prefix_tokens
    model.requires_grad_(False)
    for block in block_names(model):
        width = block_dim(model.get_submodule(block))

        def build(module: nn.Module, width=width) -> ConvpassLayer:
            weight = next(module.parameters())
            bypass = Convpass(width, cfg.dim, grid, prefix, cfg.xavier_init, cfg.dropout, weight.device, weight.dtype)
            return ConvpassLayer(module, bypass, cfg.scale)

        replace_modules(model, [f"{block}.attn", f"{block}.mlp"], build)
    model.get_submodule(head).requires_grad_(True)
    return ConvpassTuner(model, head)
