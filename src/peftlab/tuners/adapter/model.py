"""Bottleneck adapters on timm's ViT, EVA, BEiT and Swin blocks: Houlsby, Pfeiffer and AdaptFormer
(one registry row each).

- houlsby (Houlsby et al., ICML 2019): sequential adapters after each block's attention (on
  ``attn``'s output, after its projection) and after its MLP; GELU, the ViT's own nonlinearity.
  An adapter is as wide as its block's tokens (Swin's widen stage by stage).
- pfeiffer (Pfeiffer et al., EACL 2021): one sequential adapter after each block's MLP; ReLU.
- adaptformer (Chen et al., NeurIPS 2022): an adapter parallel to each block's MLP on the MLP's
  input, its output times ``scale`` (0.1); ReLU.

Only the adapters and the head train: ``(2 d m + m + d)`` parameters per adapter of width ``m``.
Adapters add computation the base weights cannot absorb (a nonlinearity sits between down and
up): ``merged_model`` is None, the recipe skips the merge check, and ``export --merged`` writes
the base with the adapters (``peftlab.training.export.load_unmerged`` loads it).
"""

from __future__ import annotations

from torch import nn

from peftlab.models.backbones import head_prefix
from peftlab.tuners.adapter.config import ADAPTER_PLACES, AdapterConfig, AdaptFormerConfig
from peftlab.tuners.adapter.layer import AdapterLayer
from peftlab.tuners.base import Tuner, TunerContext
from peftlab.tuners.modules import replace_modules
from peftlab.tuners.timm_blocks import block_dim, block_names, check_timm_blocks

# where each method puts its adapters in a timm Block, whether in parallel, and its nonlinearity
PLACEMENTS = {
    "houlsby": (ADAPTER_PLACES["houlsby"], False, nn.GELU),
    "pfeiffer": (ADAPTER_PLACES["pfeiffer"], False, nn.ReLU),
    "adaptformer": (ADAPTER_PLACES["adaptformer"], True, nn.ReLU),
}


class AdapterTuner(Tuner):
    is_adapter = True  # trains added modules (the adapter count is reported); merged_model: None

    def __init__(self, model: nn.Module, head: str, name: str):
        super().__init__(model, head)
        self.name = name

    def merged_model(self, quantized: bool = False) -> None:
        return None  # a nonlinearity inside each adapter: nothing folds into the base weights


def check(model: nn.Module, cfg: AdapterConfig, ctx: TunerContext) -> None:
    check_timm_blocks(model, cfg.name)


def apply(model: nn.Module, cfg: AdapterConfig, ctx: TunerContext) -> AdapterTuner:
    head = head_prefix(model)
    places, parallel, act = PLACEMENTS[cfg.name]
    scale = cfg.scale if isinstance(cfg, AdaptFormerConfig) else 1.0
    model.requires_grad_(False)
    for block in block_names(model):
        dim = block_dim(model.get_submodule(block))
        replace_modules(
            model,
            [f"{block}.{place}" for place in places],
            lambda module, dim=dim: AdapterLayer(module, dim, cfg.bottleneck, act, parallel, scale),
        )
    model.get_submodule(head).requires_grad_(True)
    return AdapterTuner(model, head, cfg.name)
