"""LoKr (LyCORIS: Yeh et al., ICLR 2024; after KronA, Edalati et al. 2022) through PEFT's
``LoKrConfig`` on the one injection path.

ΔW = (alpha / r) w1 ⊗ w2, each dimension split into the two factors closest to its square root
(``decompose_factor``), w2 = w2a w2b of rank r when r is below half its size. PEFT's
``init_weights=True`` zeroes w2 (or w2b), so the model starts as its base. Merge and export:
``PeftTuner``'s.
"""

from __future__ import annotations

from torch import nn

from peftlab.tuners.base import TunerContext
from peftlab.tuners.lokr.config import LoKrMethodConfig
from peftlab.tuners.peft_injection import PeftTuner, inject, plan_injection, plan_targets


class LoKrTuner(PeftTuner):
    name = "lokr"


def check(model: nn.Module, cfg: LoKrMethodConfig, ctx: TunerContext) -> None:
    plan_targets(model, cfg)


def apply(model: nn.Module, cfg: LoKrMethodConfig, ctx: TunerContext) -> LoKrTuner:
    from peft import LoKrConfig  # peft (and transformers): not for checks

    plan = plan_injection(model, cfg)
    config = LoKrConfig(
        r=cfg.r,
        alpha=cfg.alpha,
        rank_dropout=cfg.rank_dropout,
        module_dropout=cfg.module_dropout,
        decompose_both=cfg.decompose_both,
        decompose_factor=cfg.decompose_factor,
        init_weights=True,
        target_modules=plan.target_modules,
        modules_to_save=plan.modules_to_save,
    )
    return LoKrTuner(inject(model, plan, ctx, config), plan.head)
