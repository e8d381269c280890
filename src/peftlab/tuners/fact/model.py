"""FacT (Jie & Deng, AAAI 2023) on timm's ViT blocks: FacT-TT and FacT-TK (one registry row each).

FacT treats the weight updates of all blocks as one tensor and factorizes it: U (d -> r) and V (r -> d) are
shared by every block, and each of a block's q, k, v, proj, fc1 and fc2 updates is ``V core U`` (fc1 and fc2,
k d wide on one side, apply U or V per d-wide chunk, as the authors' code does). TT gives each weight matrix
its own core; TK draws them all from one r x r x r tensor ``FacTc`` and per-matrix coefficients ``FacTp``.
The update is ``scale * dropout(...)`` added to the Linear's output (``layer.FacTLayer``).

Trainable besides the head, for L blocks of width d with MLPs k d wide (k = 4 in a ViT):
TT ``2 d r + L (2 k + 4) r^2``, TK ``2 d r + L (2 k + 4) r + r^3``; on ViT-B/16 TT 1,536 r + 144 r^2 and TK
1,536 r + 144 r + r^3, PETL_Vision's figures (docs/backbones.md).

Where: timm blocks with a fused ``attn.qkv`` (d -> 3d), ``attn.proj``, ``mlp.fc1`` (d -> k d) and ``mlp.fc2``,
all blocks of one width (ViT, DeiT, DeiT-III, DINOv2, CLIP, SigLIP, BEiT). EVA-02 (separate q, k, v and a
SwiGLU 8/3 d wide) and Swin (one width per stage, where U and V could not be shared) are refused in one line.

Merge: each update is linear, so ``merged_model`` adds ``scale * blockdiag(V) core blockdiag(U)`` to each
Linear's weight and drops the shared factors: a plain timm model with timm's keys.
"""

from __future__ import annotations

import copy

from torch import nn

from peftlab.models.backbones import head_prefix
from peftlab.tuners.base import Tuner, TunerContext
from peftlab.tuners.fact.config import FacTConfig
from peftlab.tuners.fact.layer import FacTFactors, FacTLayer
from peftlab.tuners.modules import replace_modules
from peftlab.tuners.timm_blocks import block_dim, block_names, check_timm_blocks
from peftlab.utils.errors import ConfigError

ROLES = ("qkv", "proj", "fc1", "fc2")  # the authors' order of a block's FacTp slices: q, k, v, proj, fc1 x k, fc2 x k
PATHS = {"qkv": "attn.qkv", "proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


class FacTTuner(Tuner):
    is_adapter = True  # merges: the recipe runs the merge check

    def __init__(self, model: nn.Module, head: str, name: str):
        super().__init__(model, head)
        self.name = name

    def merged_model(self, quantized: bool = False) -> nn.Module:
        model = copy.deepcopy(self.model)
        names = [n for n, m in model.named_modules() if isinstance(m, FacTLayer)]
        replace_modules(model, names, FacTLayer.merged)
        del model.fact  # the shared factors live on in the merged weights only
        return model


def linear_ratio(module, dim: int) -> tuple[int, int] | None:
    """(a, b) when ``module`` is an nn.Linear of a d inputs and b d outputs; None otherwise."""
    if not isinstance(module, nn.Linear) or module.in_features % dim or module.out_features % dim:
        return None
    return module.in_features // dim, module.out_features // dim


def fact_layout(model: nn.Module, method: str) -> tuple[int, int]:
    """(d, k): the one width of every block and its MLP's ratio; a ConfigError where FacT does not apply."""
    names = check_timm_blocks(model, method)
    widths = sorted({block_dim(model.get_submodule(name)) for name in names})
    if len(widths) > 1:
        raise ConfigError(
            f"method.name={method!r} shares one U and V across every block, which needs blocks of one width; "
            f"this model's are {', '.join(map(str, widths))} wide (Swin widens stage by stage)"
        )
    dim, ratios = widths[0], set()
    for name in names:
        block = model.get_submodule(name)
        shapes = {
            role: linear_ratio(getattr(getattr(block, path.split(".")[0]), path.split(".")[1], None), dim)
            for role, path in PATHS.items()
        }
        k = shapes["fc1"][1] if shapes["fc1"] else None
        expected = {"qkv": (1, 3), "proj": (1, 1), "fc1": (1, k), "fc2": (k, 1)}
        wrong = [role for role in ROLES if k is None or shapes[role] != expected[role]]
        if wrong:
            raise ConfigError(
                f"method.name={method!r} factorizes a block's qkv (d -> 3d), proj, fc1 (d -> k d) and fc2 (k d -> d) "
                f"Linears; {name}.{PATHS[wrong[0]]} of {type(block).__name__} is not one (EVA's separate q, k, v "
                "and SwiGLU MLP are not)"
            )
        ratios.add(k)
    if len(ratios) > 1:
        raise ConfigError(
            f"method.name={method!r} needs one MLP width in every block; this model's are {sorted(ratios)}"
        )
    if hasattr(model, "fact"):
        raise ConfigError(f"method.name={method!r} registers its shared factors as the model's 'fact', which it has")
    return dim, ratios.pop()


def check(model: nn.Module, cfg: FacTConfig, ctx: TunerContext) -> None:
    fact_layout(model, cfg.name)


def apply(model: nn.Module, cfg: FacTConfig, ctx: TunerContext) -> FacTTuner:
    head = head_prefix(model)
    dim, k = fact_layout(model, cfg.name)
    names = block_names(model)
    per_block = 4 + 2 * k  # TK's FacTp columns per block: q, k, v, proj, then fc1's k and fc2's k
    tk = cfg.name == "fact_tk"
    weight = model.get_submodule(f"{names[0]}.attn.qkv").weight
    model.requires_grad_(False)
    model.fact = FacTFactors(dim, cfg.r, len(names) * per_block if tk else None, weight.device, weight.dtype)
    for i, name in enumerate(names):
        for role in ROLES:
            start = i * per_block + (0 if role in ("qkv", "proj") else 4)
            replace_modules(
                model,
                [f"{name}.{PATHS[role]}"],
                lambda m, role=role, start=start: FacTLayer(
                    m, model.fact, cfg.scale, cfg.dropout, (role, start) if tk else None
                ),
            )
    model.get_submodule(head).requires_grad_(True)
    return FacTTuner(model, head, cfg.name)
