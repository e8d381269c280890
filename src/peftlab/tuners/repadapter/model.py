"""RepAdapter (Luo et al., 2023) on timm's ViT, EVA, BEiT and Swin blocks: an adapter before every block's
attention and before its MLP, folded into the Linears after it once trained.

Each adapter reads the branch's normalized input and hands ``x + scale * adapter(x)`` to the branch
(``layer.RepAdapterLayer``), as the authors' ``attn(adapter_attn(norm1(x)))``. On Swin the adapter runs on the
attention's windows (the same tokens, position by position; a grid that needs padding to whole windows also
adapts the zero padding, the authors' does not). Trainable besides the head, two adapters per block of width d:
``2 L (d m + m + d m / g + d)`` for ``dim`` m and ``groups`` g; on ViT-B/16 at m = 8, g = 2, 239,808,
PETL_Vision's figure.

Merge (the paper's structural re-parameterization): each adapter is affine, so ``merged_model`` folds it into
the Linears that read the branch's input (``qkv``, or EVA's ``q_proj``, ``k_proj``, ``v_proj``; ``fc1``, or SwiGLU's
``fc1_g`` and ``fc1_x``): a plain timm model with timm's keys. Where such a Linear has no bias (BEiT's ``qkv``,
EVA-02's ``k_proj``) plain timm cannot hold the adapter's shift: ``merged_model`` is None, ``merge_refusal`` says
why and ``peftlab export --merged`` refuses in one line, as for SSF.
"""

from __future__ import annotations

import copy

from torch import nn

from peftlab.models.backbones import head_prefix
from peftlab.models.structure import structure_of
from peftlab.tuners import plans
from peftlab.tuners.base import Tuner, TunerContext
from peftlab.tuners.modules import replace_modules
from peftlab.tuners.repadapter.config import RepAdapterConfig
from peftlab.tuners.repadapter.layer import RepAdapter, RepAdapterLayer
from peftlab.tuners.timm_blocks import block_dim, block_names

# a branch's Linears that read its input: fused or separate attention projections, a plain or SwiGLU MLP
READERS = plans.REPADAPTER_READERS  # per branch, the Linears that read its input, in either layout


class RepAdapterTuner(Tuner):
    name = "repadapter"
    is_adapter = True  # merges: the recipe runs the merge check

    def merge_refusal(self) -> str | None:
        unbiased = [
            f"{n}.{r}" for n, m in self.model.named_modules() if isinstance(m, RepAdapterLayer) for r in m.unbiased()
        ]
        if not unbiased:
            return None
        return (
            f"method 'repadapter' folds its adapters' shift into the bias of the Linears after them, and "
            f"{len(unbiased)} have none (first: {unbiased[0]}), where plain timm cannot hold it"
        )

    def merged_model(self, quantized: bool = False) -> nn.Module | None:
        if self.merge_refusal():
            return None
        model = copy.deepcopy(self.model)
        names = [n for n, m in model.named_modules() if isinstance(m, RepAdapterLayer)]
        replace_modules(model, names, RepAdapterLayer.merged)
        return model


def readers(branch: nn.Module, kind: str) -> list[str] | None:
    """The Linears of ``branch`` (a block's attn or mlp) that read its input; None for a layout not known."""
    for names in READERS[kind]:
        if all(isinstance(getattr(branch, name, None), nn.Linear) for name in names):
            return list(names)
    return None


def check(model: nn.Module, cfg: RepAdapterConfig, ctx: TunerContext) -> None:
    plans.check_repadapter(structure_of(model), cfg)


def apply(model: nn.Module, cfg: RepAdapterConfig, ctx: TunerContext) -> RepAdapterTuner:
    head = head_prefix(model)
    model.requires_grad_(False)
    for block in block_names(model):
        width = block_dim(model.get_submodule(block))
        for kind in READERS:

            def build(module: nn.Module, width=width, kind=kind) -> RepAdapterLayer:
                weight = next(module.parameters())
                adapter = RepAdapter(width, cfg.dim, cfg.groups, cfg.dropout, weight.device, weight.dtype)
                return RepAdapterLayer(module, adapter, cfg.scale, readers(module, kind))

            replace_modules(model, [f"{block}.{kind}"], build)
    model.get_submodule(head).requires_grad_(True)
    return RepAdapterTuner(model, head)
