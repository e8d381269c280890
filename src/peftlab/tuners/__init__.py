"""The TUNERS registry: the one list of methods, each a config class and the module of its code.

``TUNERS[name] = TunerSpec(config_cls, module)``: ``config_cls`` is the method's frozen config
(``tuners/<name>/config.py``), ``module`` the method's ``model.py``. The config classes are registered
into config's own registry of method sections (``peftlab.config.methods``) when this package is imported,
which ``peftlab/__init__.py`` does: config reads a ``method:`` section there and never imports the tuners.
The registry finds the hooks by name, and imports the module when a hook is first used, so reading and
validating configs (and the study expander, and analysis) never imports torch:

- ``check(model, method_cfg, ctx)`` raises ConfigError for what only the model can tell;
- ``apply(model, method_cfg, ctx) -> Tuner`` prepares the model (split layers, quantize the base
  through ``peftlab.quant.bases`` when ``ctx.quant`` asks for it, inject adapters);
- ``ranks(model, method_cfg) -> {module: rank}``, optional: the rank each module starts with
  (low-rank methods);
- ``size(model, method_cfg) -> int``, optional: the parameters the method adds, counted without
  applying it (``peftlab params``, a config's size check: LoRA and DoRA, so that a count needs no PEFT).

Methods that share code share a module (the three adapters) or import a hook from another method's
module (DoRA checks as LoRA does). docs/methods/adding-a-method.md is the checklist for a new method.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from peftlab.config.methods import METHODS
from peftlab.tuners.adalora.config import AdaLoraMethodConfig
from peftlab.tuners.adapter.config import AdaptFormerConfig, HoulsbyConfig, PfeifferConfig
from peftlab.tuners.adaptive.config import AdaptiveConfig
from peftlab.tuners.bitfit.config import BitFitConfig
from peftlab.tuners.boft.config import BOFTMethodConfig
from peftlab.tuners.convpass.config import ConvpassConfig
from peftlab.tuners.difffit.config import DiffFitConfig
from peftlab.tuners.dora.config import DoraConfig
from peftlab.tuners.fact.config import FacTTKConfig, FacTTTConfig
from peftlab.tuners.full.config import FullConfig
from peftlab.tuners.ia3.config import IA3MethodConfig
from peftlab.tuners.linear.config import LinearConfig
from peftlab.tuners.ln.config import LayerNormConfig
from peftlab.tuners.loha.config import LoHaMethodConfig
from peftlab.tuners.lokr.config import LoKrMethodConfig
from peftlab.tuners.lora.config import LoraMethodConfig
from peftlab.tuners.oft.config import OFTMethodConfig
from peftlab.tuners.peft_bridge.config import PeftBridgeConfig
from peftlab.tuners.prefix_tuning.config import PrefixTuningMethodConfig
from peftlab.tuners.prompt_tuning.config import PromptTuningMethodConfig
from peftlab.tuners.qalora.config import QALoraConfig
from peftlab.tuners.repadapter.config import RepAdapterConfig
from peftlab.tuners.ssf.config import SSFConfig
from peftlab.tuners.vera.config import VeraMethodConfig
from peftlab.tuners.vpt.config import VPTConfig

HOOKS = {"check": True, "apply": True, "ranks": False, "size": False}  # a method module's functions: name -> required


@dataclass(frozen=True)
class TunerSpec:
    config_cls: type
    module: str  # the method's model.py, with the HOOKS as functions of those names

    def load(self, hook: str):
        """The module's function named ``hook``, imported on first use; None for an optional hook it lacks."""
        function = getattr(importlib.import_module(self.module), hook, None)
        if function is None and HOOKS[hook]:
            raise AttributeError(f"{self.module} has no function {hook!r}, which every method's module defines")
        return function

    @property
    def check(self):
        """``check(model, method_cfg, ctx)``, imported when first asked for (torch stays out of config reading)."""
        return self.load("check")

    @property
    def apply(self):
        """``apply(model, method_cfg, ctx) -> Tuner``, imported when first asked for."""
        return self.load("apply")

    @property
    def ranks(self):
        """``ranks(model, method_cfg)`` of a low-rank method; None for a method without one."""
        return self.load("ranks")

    @property
    def size(self):
        """``size(model, method_cfg) -> int`` of a method counted without applying it; None for the others."""
        return self.load("size")


TUNERS = {
    "full": TunerSpec(FullConfig, "peftlab.tuners.full.model"),
    "linear": TunerSpec(LinearConfig, "peftlab.tuners.linear.model"),
    "lora": TunerSpec(LoraMethodConfig, "peftlab.tuners.lora.model"),
    "adalora": TunerSpec(AdaLoraMethodConfig, "peftlab.tuners.adalora.model"),
    "adaptive": TunerSpec(AdaptiveConfig, "peftlab.tuners.adaptive.model"),
    "qalora": TunerSpec(QALoraConfig, "peftlab.tuners.qalora.model"),
    "bitfit": TunerSpec(BitFitConfig, "peftlab.tuners.bitfit.model"),
    "ln": TunerSpec(LayerNormConfig, "peftlab.tuners.ln.model"),
    "ssf": TunerSpec(SSFConfig, "peftlab.tuners.ssf.model"),
    "difffit": TunerSpec(DiffFitConfig, "peftlab.tuners.difffit.model"),
    "houlsby": TunerSpec(HoulsbyConfig, "peftlab.tuners.adapter.model"),
    "pfeiffer": TunerSpec(PfeifferConfig, "peftlab.tuners.adapter.model"),
    "adaptformer": TunerSpec(AdaptFormerConfig, "peftlab.tuners.adapter.model"),
    "convpass": TunerSpec(ConvpassConfig, "peftlab.tuners.convpass.model"),
    "repadapter": TunerSpec(RepAdapterConfig, "peftlab.tuners.repadapter.model"),
    "fact_tt": TunerSpec(FacTTTConfig, "peftlab.tuners.fact.model"),
    "fact_tk": TunerSpec(FacTTKConfig, "peftlab.tuners.fact.model"),
    "vpt": TunerSpec(VPTConfig, "peftlab.tuners.vpt.model"),
    "dora": TunerSpec(DoraConfig, "peftlab.tuners.dora.model"),
    "vera": TunerSpec(VeraMethodConfig, "peftlab.tuners.vera.model"),
    "ia3": TunerSpec(IA3MethodConfig, "peftlab.tuners.ia3.model"),
    "loha": TunerSpec(LoHaMethodConfig, "peftlab.tuners.loha.model"),
    "lokr": TunerSpec(LoKrMethodConfig, "peftlab.tuners.lokr.model"),
    "oft": TunerSpec(OFTMethodConfig, "peftlab.tuners.oft.model"),
    "boft": TunerSpec(BOFTMethodConfig, "peftlab.tuners.boft.model"),
    "peft": TunerSpec(PeftBridgeConfig, "peftlab.tuners.peft_bridge.model"),
    "prompt_tuning": TunerSpec(PromptTuningMethodConfig, "peftlab.tuners.prompt_tuning.model"),
    "prefix_tuning": TunerSpec(PrefixTuningMethodConfig, "peftlab.tuners.prefix_tuning.model"),
}
METHODS.update({name: spec.config_cls for name, spec in TUNERS.items()})  # config's registry, in this order
