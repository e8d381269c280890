"""OFT (Qiu et al., NeurIPS 2023) through PEFT's ``OFTConfig`` on the one injection path.

Each target's input is rotated by a block-diagonal orthogonal matrix, each block the Cayley
transform of a trained skew-symmetric matrix (b(b-1)/2 numbers for block size b); PEFT's
``init_weights=True`` starts them at zero, the identity rotation. Merge and export:
``PeftTuner``'s.
"""

from __future__ import annotations

from torch import nn

from peftlab.tuners.base import TunerContext
from peftlab.tuners.oft.config import OFTMethodConfig
from peftlab.tuners.peft_injection import PeftTuner, inject, plan_injection, plan_targets
from peftlab.utils.errors import ConfigError


class OFTTuner(PeftTuner):
    name = "oft"


def check(model: nn.Module, cfg: OFTMethodConfig, ctx: TunerContext) -> None:
    """PEFT quietly changes a block size that does not divide in_features; peftlab refuses it."""
    _, targets = plan_targets(model, cfg)
    for name in targets:
        in_features = in_features_of(model, name)
        field, value = ("method.oft_block_size", cfg.oft_block_size) if cfg.oft_block_size else ("method.r", cfg.r)
        if in_features % value:
            raise ConfigError(
                f"{field}={value} is invalid: expected a divisor of the input width {in_features} "
                f"of every adapted module ({name})"
            )


def in_features_of(model: nn.Module, name: str) -> int:
    """Input width of a target, also of a q/k/v slice of timm's fused qkv before the split (qkv's input)."""
    try:
        return model.get_submodule(name).in_features
    except AttributeError:
        return model.get_submodule(name.rpartition(".")[0]).in_features


def apply(model: nn.Module, cfg: OFTMethodConfig, ctx: TunerContext) -> OFTTuner:
    from peft import OFTConfig  # peft (and transformers): not for checks

    plan = plan_injection(model, cfg)
    config = OFTConfig(
        r=cfg.r,
        oft_block_size=cfg.oft_block_size,
        module_dropout=cfg.module_dropout,
        coft=cfg.coft,
        eps=cfg.eps,
        block_share=cfg.block_share,
        init_weights=True,
        target_modules=plan.target_modules,
        modules_to_save=plan.modules_to_save,
        bias="none",
    )
    return OFTTuner(inject(model, plan, ctx, config), plan.head)
