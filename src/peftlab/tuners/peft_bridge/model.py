"""Any PEFT type that adapts ``nn.Linear``, by name (``method.name: peft``), on the one injection path.

The type's own config class (PEFT's ``PEFT_TYPE_TO_CONFIG_MAPPING``) gets ``method.options`` and the
plan's ``target_modules`` and ``modules_to_save``; ``inject`` splits timm's fused qkv, and PEFT wraps
the targets. What the type's tuner does is PEFT's: its start (PEFT's default init, the base model for
every type the suite runs), its merge (``merge_and_unload`` where PEFT's tuner has one: ``NO_MERGE``
otherwise), its adapter file and PEFT-format export (``PeftTuner``'s).
"""

from __future__ import annotations

import torch
from torch import nn

from peftlab.tuners.base import TunerContext
from peftlab.tuners.boft.model import no_fbd_cuda_without_cuda
from peftlab.tuners.peft_bridge.config import PeftBridgeConfig
from peftlab.tuners.peft_bridge.types import CPU_COUNTED, NO_MERGE
from peftlab.tuners.peft_injection import PeftTuner, inject, plan_injection, plan_targets
from peftlab.utils.errors import ConfigError
from peftlab.utils.files import one_line


class PeftBridgeTuner(PeftTuner):
    name = "peft"

    def __init__(self, model: nn.Module, head: str, peft_type: str):
        super().__init__(model, head)
        self.peft_type = peft_type

    def merged_model(self, quantized: bool = False) -> nn.Module | None:
        return None if self.peft_type in NO_MERGE else super().merged_model(quantized)


def check(model: nn.Module, cfg: PeftBridgeConfig, ctx: TunerContext) -> None:
    plan_targets(model, cfg)


def adapter_device(model: nn.Module, cfg: PeftBridgeConfig) -> str:
    """Where PEFT builds the adapters: the CPU for a real model (PEFT's inits index and count with tensors on
    the default device); the meta device for the meta model of the size check (tuners/params.py), so that a
    refused size allocates nothing, except for the types whose init cannot run there (``CPU_COUNTED``), whose
    sizes the check bounds before."""
    meta = any(p.is_meta for p in model.parameters())
    return "meta" if meta and cfg.peft_type not in CPU_COUNTED else "cpu"


def apply(model: nn.Module, cfg: PeftBridgeConfig, ctx: TunerContext) -> PeftBridgeTuner:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING  # peft (and transformers): not for checks
    from peft.utils.peft_types import PeftType

    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[cfg.peft_type]]
    plan = plan_injection(model, cfg)
    try:
        config = config_cls(
            **cfg.peft_options(), target_modules=plan.target_modules, modules_to_save=plan.modules_to_save
        )
    except (ValueError, TypeError) as err:
        raise ConfigError(f"method.options: PEFT's {config_cls.__name__} refuses them: {one_line(err)}") from None
    if cfg.peft_type == "BOFT":
        no_fbd_cuda_without_cuda()
    try:
        with torch.device(adapter_device(model, cfg)):
            peft_model = inject(model, plan, ctx, config)
    except (ValueError, TypeError, NotImplementedError) as err:
        raise ConfigError(
            f"method.peft_type={cfg.peft_type!r}: PEFT's {config_cls.__name__} does not apply to this model's "
            f"targets: {one_line(err)}"
        ) from None
    return PeftBridgeTuner(peft_model, plan.head, cfg.peft_type)
