"""SSF (Lian et al., NeurIPS 2022): scale and shift the features after every operation of a timm ViT.

Wrapped (as the paper's ViT code does): the patch embedding's Conv2d, in each block ``norm1``,
``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``, and the final norm; in general
every Linear, LayerNorm and the patch embedding outside the head. Trainable: the scales, the
shifts and the head, ``2 x (7d + hidden)`` per block plus ``4d``. The merge folds each scale and
shift into the layer before it, so ``merged_model`` is a plain timm model with timm's keys. The
same on CLIP, EVA, BEiT and Swin, whose layers without a bias (CLIP's patch embedding, EVA's
``k_proj``, BEiT's ``qkv``, Swin's patch merging) train a shift too. Plain timm has no bias there to
hold it, so such a model does not merge: ``merged_model`` is None (no merge check), ``merge_refusal``
says why and ``peftlab export --merged`` refuses in one line; the adapter file and the unmerged
model hold every shift.
"""

from __future__ import annotations

import copy

from torch import nn

from peftlab.models.backbones import head_prefix
from peftlab.models.structure import structure_of
from peftlab.tuners import plans
from peftlab.tuners.base import Tuner, TunerContext
from peftlab.tuners.modules import replace_modules
from peftlab.tuners.ssf.config import SSFConfig
from peftlab.tuners.ssf.layer import SSFLayer


class SSFTuner(Tuner):
    name = "ssf"
    is_adapter = True

    def merge_refusal(self) -> str | None:
        unfolded = [n for n, m in self.model.named_modules() if isinstance(m, SSFLayer) and not m.folds]
        if not unfolded:
            return None
        return (
            f"method 'ssf' shifts {len(unfolded)} layer(s) without a bias (first: {unfolded[0]}), where plain "
            "timm has no bias to hold the shift"
        )

    def merged_model(self, quantized: bool = False) -> nn.Module | None:
        if self.merge_refusal():
            return None
        model = copy.deepcopy(self.model)
        names = [n for n, m in model.named_modules() if isinstance(m, SSFLayer)]
        replace_modules(model, names, SSFLayer.folded)
        return model


def ssf_targets(model: nn.Module) -> list[str]:
    """Every Linear and LayerNorm outside the head (and a distilled model's ``head_dist``), and the
    patch embedding's convolution."""
    head = head_prefix(model)
    return [
        name
        for name, module in model.named_modules()
        if (isinstance(module, (nn.Linear, nn.LayerNorm)) or name == "patch_embed.proj") and not name.startswith(head)
    ]


def check(model: nn.Module, cfg: SSFConfig, ctx: TunerContext) -> None:
    plans.check_ssf(structure_of(model), cfg)


def apply(model: nn.Module, cfg: SSFConfig, ctx: TunerContext) -> SSFTuner:
    head = head_prefix(model)
    targets = ssf_targets(model)
    model.requires_grad_(False)
    replace_modules(model, targets, SSFLayer)
    model.get_submodule(head).requires_grad_(True)
    return SSFTuner(model, head)
