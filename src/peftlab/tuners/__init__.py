"""The TUNERS registry: the one list of methods, each a config class and where its code lives.

``TUNERS[name] = TunerSpec(config_cls, check, apply)``: ``config_cls`` is the method's frozen
config (``tuners/<name>/config.py``); ``check`` and ``apply`` name functions in the method's
``model.py`` as ``"module:function"``. They are imported when first called, so reading and
validating configs (and the study expander, and analysis) never imports torch.

``apply(model, method_cfg, ctx) -> Tuner`` prepares the model (split layers, quantize the
base through ``peftlab.quant`` when ``ctx.quant`` asks for it, inject adapters);
``check(model, method_cfg, ctx)`` raises ConfigError for what only the model can tell.
Adding a method means one folder (config, layer, model), one line here and one row in the
table-driven tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from peftlab.tuners.adalora.config import AdaLoraMethodConfig
from peftlab.tuners.adapter.config import AdaptFormerConfig, HoulsbyConfig, PfeifferConfig
from peftlab.tuners.adaptive.config import AdaptiveConfig
from peftlab.tuners.bitfit.config import BitFitConfig
from peftlab.tuners.boft.config import BOFTMethodConfig
from peftlab.tuners.difffit.config import DiffFitConfig
from peftlab.tuners.dora.config import DoraConfig
from peftlab.tuners.full.config import FullConfig
from peftlab.tuners.ia3.config import IA3MethodConfig
from peftlab.tuners.linear.config import LinearConfig
from peftlab.tuners.ln.config import LayerNormConfig
from peftlab.tuners.loha.config import LoHaMethodConfig
from peftlab.tuners.lokr.config import LoKrMethodConfig
from peftlab.tuners.lora.config import LoraMethodConfig
from peftlab.tuners.oft.config import OFTMethodConfig
from peftlab.tuners.qalora.config import QALoraConfig
from peftlab.tuners.ssf.config import SSFConfig
from peftlab.tuners.vera.config import VeraMethodConfig
from peftlab.tuners.vpt.config import VPTConfig

if TYPE_CHECKING:
    from torch import nn

    from peftlab.config import RunConfig
    from peftlab.tuners.base import Tuner, TunerContext


@dataclass(frozen=True)
class TunerSpec:
    config_cls: type
    check: str  # "module:function", called as check(model, method_cfg, ctx)
    apply: str  # "module:function", called as apply(model, method_cfg, ctx) -> Tuner
    ranks: str | None = None  # low-rank methods: "module:function", ranks(model, method_cfg) -> {module: rank}

    def load(self, which: str):
        module, _, function = getattr(self, which).partition(":")
        return getattr(importlib.import_module(module), function)


TUNERS = {
    "full": TunerSpec(FullConfig, "peftlab.tuners.full.model:check_full", "peftlab.tuners.full.model:apply_full"),
    "linear": TunerSpec(LinearConfig, "peftlab.tuners.linear.model:check_linear",
                        "peftlab.tuners.linear.model:apply_linear"),
    "lora": TunerSpec(LoraMethodConfig, "peftlab.tuners.lora.model:check_lora", "peftlab.tuners.lora.model:apply_lora",
                      "peftlab.tuners.lora.model:lora_ranks"),
    "adalora": TunerSpec(AdaLoraMethodConfig, "peftlab.tuners.adalora.model:check_adalora",
                         "peftlab.tuners.adalora.model:apply_adalora", "peftlab.tuners.adalora.model:adalora_ranks"),
    "adaptive": TunerSpec(AdaptiveConfig, "peftlab.tuners.adaptive.model:check_adaptive",
                          "peftlab.tuners.adaptive.model:apply_adaptive", "peftlab.tuners.adaptive.model:adaptive_ranks"),
    "qalora": TunerSpec(QALoraConfig, "peftlab.tuners.qalora.model:check_qalora",
                        "peftlab.tuners.qalora.model:apply_qalora"),
    "bitfit": TunerSpec(BitFitConfig, "peftlab.tuners.bitfit.model:check_bitfit",
                        "peftlab.tuners.bitfit.model:apply_bitfit"),
    "ln": TunerSpec(LayerNormConfig, "peftlab.tuners.ln.model:check_ln", "peftlab.tuners.ln.model:apply_ln"),
    "ssf": TunerSpec(SSFConfig, "peftlab.tuners.ssf.model:check_ssf", "peftlab.tuners.ssf.model:apply_ssf"),
    "difffit": TunerSpec(DiffFitConfig, "peftlab.tuners.difffit.model:check_difffit",
                         "peftlab.tuners.difffit.model:apply_difffit"),
    "houlsby": TunerSpec(HoulsbyConfig, "peftlab.tuners.adapter.model:check_adapter",
                         "peftlab.tuners.adapter.model:apply_adapter"),
    "pfeiffer": TunerSpec(PfeifferConfig, "peftlab.tuners.adapter.model:check_adapter",
                          "peftlab.tuners.adapter.model:apply_adapter"),
    "adaptformer": TunerSpec(AdaptFormerConfig, "peftlab.tuners.adapter.model:check_adapter",
                             "peftlab.tuners.adapter.model:apply_adapter"),
    "vpt": TunerSpec(VPTConfig, "peftlab.tuners.vpt.model:check_vpt", "peftlab.tuners.vpt.model:apply_vpt"),
    "dora": TunerSpec(DoraConfig, "peftlab.tuners.dora.model:check_dora", "peftlab.tuners.dora.model:apply_dora",
                      "peftlab.tuners.dora.model:dora_ranks"),
    "vera": TunerSpec(VeraMethodConfig, "peftlab.tuners.vera.model:check_vera", "peftlab.tuners.vera.model:apply_vera"),
    "ia3": TunerSpec(IA3MethodConfig, "peftlab.tuners.ia3.model:check_ia3", "peftlab.tuners.ia3.model:apply_ia3"),
    "loha": TunerSpec(LoHaMethodConfig, "peftlab.tuners.loha.model:check_loha", "peftlab.tuners.loha.model:apply_loha",
                      "peftlab.tuners.loha.model:loha_ranks"),
    "lokr": TunerSpec(LoKrMethodConfig, "peftlab.tuners.lokr.model:check_lokr", "peftlab.tuners.lokr.model:apply_lokr"),
    "oft": TunerSpec(OFTMethodConfig, "peftlab.tuners.oft.model:check_oft", "peftlab.tuners.oft.model:apply_oft"),
    "boft": TunerSpec(BOFTMethodConfig, "peftlab.tuners.boft.model:check_boft",
                      "peftlab.tuners.boft.model:apply_boft"),
}


def check_config(cfg: RunConfig, model: nn.Module, ctx: TunerContext | None = None) -> None:
    """Checks that need the model (targets and patterns, quantization), without changing it."""
    from peftlab.quant import check_quant  # torch stays out of config reading (peftlab.config imports TUNERS)
    from peftlab.tuners.base import TunerContext  # torch stays out of config reading

    ctx = ctx or TunerContext.for_checks(cfg)
    TUNERS[cfg.method.name].load("check")(model, cfg.method, ctx)
    check_quant(cfg.quant, model)


def planned_ranks(cfg: RunConfig, model: nn.Module) -> dict[str, int] | None:
    """The rank each module starts with (low-rank methods; None for the others)."""
    spec = TUNERS[cfg.method.name]
    return spec.load("ranks")(model, cfg.method) if spec.ranks else None


def apply_tuner(model: nn.Module, cfg: RunConfig, ctx: TunerContext | None = None) -> Tuner:
    from peftlab.tuners.base import TunerContext  # torch stays out of config reading

    from peftlab.libraries import quiet_transformers

    ctx = ctx or TunerContext.for_checks(cfg)
    check_config(cfg, model, ctx)
    tuner = TUNERS[cfg.method.name].load("apply")(model, cfg.method, ctx)
    from peftlab.quant import load_pending

    load_pending(tuner.model)  # a Linear left in its file that the method did not quantize (peftlab.quant_load)
    quiet_transformers()  # PEFT imports transformers, which logs to stderr on its own
    return tuner
