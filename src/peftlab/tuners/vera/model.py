"""VeRA (Kopiczko et al., ICLR 2024) through PEFT's ``VeraConfig`` on the one injection path.

ΔW = diag(b) B diag(d) A with A, B frozen random projections shared by all adapted layers
(buffers, saved with the adapter: ``save_projection``) and b (out_features), d (r) trained;
b starts at zero, so the model starts as its base. Merge and export: ``PeftTuner``'s.
"""

from __future__ import annotations

from torch import nn

from peftlab.tuners.base import TunerContext
from peftlab.tuners.peft_injection import PeftTuner, inject, plan_injection, plan_targets
from peftlab.tuners.vera.config import VeraMethodConfig


class VeraTuner(PeftTuner):
    name = "vera"


def check(model: nn.Module, cfg: VeraMethodConfig, ctx: TunerContext) -> None:
    plan_targets(model, cfg)


def apply(model: nn.Module, cfg: VeraMethodConfig, ctx: TunerContext) -> VeraTuner:
    from peft import VeraConfig  # peft (and transformers): not for checks

    plan = plan_injection(model, cfg)
    config = VeraConfig(
        r=cfg.r,
        vera_dropout=cfg.vera_dropout,
        d_initial=cfg.d_initial,
        projection_prng_key=cfg.projection_prng_key,
        save_projection=True,
        init_weights=True,
        target_modules=plan.target_modules,
        modules_to_save=plan.modules_to_save,
        bias="none",
    )
    return VeraTuner(inject(model, plan, ctx, config), plan.head)
