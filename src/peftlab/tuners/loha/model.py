"""LoHa (Hyeon-Woo et al., ICLR 2022, FedPara) through PEFT's ``LoHaConfig`` on the one injection path.

ΔW = (alpha / r) (w1a w1b) ⊙ (w2a w2b), each product of rank r; PEFT's ``init_weights=True``
zeroes w2b, so the model starts as its base. Merge and export: ``PeftTuner``'s.
"""

from __future__ import annotations

from torch import nn

from peftlab.tuners.base import TunerContext
from peftlab.tuners.loha.config import LoHaMethodConfig
from peftlab.tuners.peft_injection import PeftTuner, inject, plan_injection, plan_targets


class LoHaTuner(PeftTuner):
    name = "loha"


def check(model: nn.Module, cfg: LoHaMethodConfig, ctx: TunerContext) -> None:
    plan_targets(model, cfg)


def ranks(model: nn.Module, cfg: LoHaMethodConfig) -> dict[str, int]:
    return {t: cfg.r for t in plan_targets(model, cfg)[1]}


def apply(model: nn.Module, cfg: LoHaMethodConfig, ctx: TunerContext) -> LoHaTuner:
    from peft import LoHaConfig  # peft (and transformers): not for checks

    plan = plan_injection(model, cfg)
    config = LoHaConfig(
        r=cfg.r,
        alpha=cfg.alpha,
        rank_dropout=cfg.rank_dropout,
        module_dropout=cfg.module_dropout,
        init_weights=True,
        target_modules=plan.target_modules,
        modules_to_save=plan.modules_to_save,
    )
    return LoHaTuner(inject(model, plan, ctx, config), plan.head)
