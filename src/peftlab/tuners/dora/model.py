"""DoRA (Liu et al., ICML 2024) through PEFT: ``LoraConfig(use_dora=True)`` on the one injection path.

A method of its own rather than a LoRA flag, so that it is a row of ``TUNERS`` (its own line in
a study, the table-driven tests, the bench) and LoRA's run ids do not change. Everything else is
LoRA's: the targets and q/k/v slices, the rank strategies, the merge (PEFT folds the magnitude
into the weight) and the PEFT-format export (``LoraTuner.peft_adapter`` writes the magnitudes).
PEFT has DoRA on bitsandbytes layers, so a QLoRA base (``quant.mode``) works as for LoRA.
"""

from __future__ import annotations

from torch import nn

from peftlab.models.structure import structure_of
from peftlab.tuners import plans
from peftlab.tuners.base import TunerContext
from peftlab.tuners.dora.config import DoraConfig
from peftlab.tuners.lora.config import lora_config_kwargs, module_ranks
from peftlab.tuners.lora.model import LoraTuner, check, ranks  # noqa: F401 (checked and planned as LoRA: the registry finds them here)
from peftlab.tuners.peft_injection import inject, plan_injection


class DoraTuner(LoraTuner):
    name = "dora"


def size(model: nn.Module, cfg: DoraConfig) -> int:
    """LoRA's parameters and one magnitude per output row of each adapted module (``tuners.plans.dora_size``)."""
    return plans.dora_size(structure_of(model), cfg)


def apply(model: nn.Module, cfg: DoraConfig, ctx: TunerContext) -> DoraTuner:
    from peft import LoraConfig  # peft (and transformers): not for checks

    plan = plan_injection(model, cfg)
    config = LoraConfig(**lora_config_kwargs(cfg, plan.targets, plan.modules_to_save), use_dora=True)
    return DoraTuner(inject(model, plan, ctx, config), plan.head, module_ranks(cfg, plan.targets), cfg.rank_strategy)
