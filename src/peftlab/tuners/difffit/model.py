"""DiffFit (Xie et al., ICCV 2023) on timm ViTs, as PETL_Vision (OSU-MLB/PETL_Vision) implements it.

Followed: PETL_Vision's ``model/block.py`` gives each block two per-channel scales,
``difffit_gamma1`` and ``difffit_gamma2`` (``torch.ones(dim)``), and computes
``x = gamma1 * drop_path1(ls1(attn(norm1(x)))) + x`` and ``x = gamma2 * drop_path2(ls2(mlp(norm2(x)))) + x``,
in every block; its ``experiment/build_model.py`` trains, for ``--difffit``, the gammas, every
parameter with ``bias`` in its name, every one with ``norm`` in its name, and the head. peftlab
trains the same set on a timm ViT: the gammas, every bias, every LayerNorm's weight and bias (on a
timm ViT these are the parameters named ``norm``), and the head, ``L (11d + h) + 3d`` besides the head
(BitFit's ``L (7d + h) + 2d``, the LayerNorm weights ``2Ld + d``, the gammas ``2Ld``). The gammas
sit on ``attn`` and ``mlp`` (``DiffFitLayer``), which is the same product (LayerScale and drop path
act per channel). The diffusion paper also scales only some of DiT's blocks and trains the class
embedding; PETL_Vision's ViT version scales every block, and so does peftlab, on EVA's, BEiT's
and Swin's blocks too (BEiT's ``q_bias`` and ``v_bias`` train as biases).

Merge: each gamma folds into the Linear that ends its branch (``attn.proj``, ``mlp.fc2``); the
biases and LayerNorms were trained in place, so ``merged_model`` is a plain timm model with timm's keys.
"""

from __future__ import annotations

import copy

from torch import nn

from peftlab.models.backbones import head_prefix
from peftlab.models.structure import structure_of
from peftlab.tuners import plans
from peftlab.tuners.base import TunerContext, is_head_param
from peftlab.tuners.difffit.config import DiffFitConfig
from peftlab.tuners.difffit.layer import DiffFitLayer
from peftlab.tuners.modules import replace_modules
from peftlab.tuners.selective import SelectiveTuner, is_bias, is_layernorm_affine, selected_names, train_only
from peftlab.tuners.timm_blocks import block_names

BRANCHES = plans.DIFFFIT_BRANCHES  # a block's residual branches and the Linear each ends in


class DiffFitTuner(SelectiveTuner):
    name = "difffit"
    is_adapter = True  # merges: the recipe runs the merge check

    def trained_in_place(self) -> dict[str, nn.Parameter]:
        """The biases and LayerNorms, trained where they are (as BitFit's and LN's): the adapter is the gammas."""
        return {
            n: p
            for n, p in self.trainable_parameters().items()
            if not is_head_param(n, self.head) and not n.endswith(".difffit_gamma")
        }

    def merged_model(self, quantized: bool = False) -> nn.Module:
        model = copy.deepcopy(self.model)
        names = [n for n, m in model.named_modules() if isinstance(m, DiffFitLayer)]
        replace_modules(model, names, DiffFitLayer.folded)
        return model


def is_difffit_trained(module_name: str, module: nn.Module, param_name: str) -> bool:
    return (
        param_name == "difffit_gamma"
        or is_bias(module_name, module, param_name)
        or is_layernorm_affine(module_name, module, param_name)
    )


def check(model: nn.Module, cfg: DiffFitConfig, ctx: TunerContext) -> None:
    plans.check_difffit(structure_of(model), cfg)


def apply(model: nn.Module, cfg: DiffFitConfig, ctx: TunerContext) -> DiffFitTuner:
    for branch, output in BRANCHES.items():
        replace_modules(
            model,
            [f"{name}.{branch}" for name in block_names(model)],
            lambda module, output=output: DiffFitLayer(module, output),
        )
    train_only(model, selected_names(model, is_difffit_trained))
    return DiffFitTuner(model, head_prefix(model))
