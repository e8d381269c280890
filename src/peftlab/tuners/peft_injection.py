"""The one injection path of the PEFT-backed tuners (lora, adalora, adaptive, and any PEFT type by name: peft).

    plan = plan_injection(model, cfg)        # head, modules to adapt, fused qkv to split: model untouched
    config = LoraConfig(r=cfg.r, target_modules=plan.target_modules, modules_to_save=plan.modules_to_save, ...)
    peft_model = inject(model, plan, ctx, config)   # split qkv -> quantize base -> get_peft_model

A tuner builds only its PEFT config (from its own options and the plan) and its ``Tuner``
subclass; the plan, the split of timm's fused ``qkv`` (modules.py), the quantized base
(``peftlab.quant.bases``, when ``ctx.quant`` asks for it) and ``get_peft_model`` are the same for all.
The config is built before the model is changed, so a config error leaves the model as it was.

PEFT's LoRA relatives come in the same way, each with its own config class and the plan's
``target_modules`` and ``modules_to_save``: DoRA is ``LoraConfig(use_dora=True, ...)``; VeRA
``VeraConfig``, IA3 ``IA3Config`` (its ``feedforward_modules`` a subset of the targets), LoHa
``LoHaConfig``, LoKr ``LoKrConfig``, OFT ``OFTConfig``, BOFT ``BOFTConfig``. Whether PEFT has bitsandbytes layers
for a method is its config's ``quantizable`` (``RunConfig`` refuses a quantized base otherwise).
``PeftTuner`` is what they share: the adapter file is PEFT's state dict, the merge PEFT's
``merge_and_unload`` on a copy with timm's ``qkv`` fused back, the PEFT-format export PEFT's
own config and weights where no target is a q/k/v slice (``LoraTuner`` and the IA3 tuner
rewrite slices onto the fused ``qkv``; the others cannot be, exactly, and say so).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from peftlab.models.backbones import HFLogits, head_prefix, trains_head
from peftlab.models.families import family_of
from peftlab.models.structure import structure_of
from peftlab.quant.bases import quantize_base, restore_layout
from peftlab.tuners import structural
from peftlab.tuners.base import Tuner, TunerContext
from peftlab.tuners.modules import SplitQKV, fuse_qkv, replace_modules, split_qkv
from peftlab.tuners.targets import ModulesConfig

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel


@dataclass(frozen=True)
class InjectionPlan:
    """Where the adapters go, decided from the model's module names without changing it."""

    head: str  # the classifier module, trained in full (PEFT's modules_to_save)
    targets: list[str]  # module names to adapt, after the split (``blocks.0.attn.qkv.q``)
    to_split: list[str]  # timm's fused qkv modules split into q, k, v Linears first
    head_trains: bool = True  # False: a causal LM's LM head, frozen as the base

    @property
    def target_modules(self) -> str:
        """The targets as PEFT's ``target_modules``: an exact, anchored alternation (PEFT full-matches a string)."""
        return "|".join(re.escape(t) for t in self.targets)

    @property
    def modules_to_save(self) -> list[str] | None:
        return [self.head.rpartition(".")[2]] if self.head_trains else None


def plan_targets(model: nn.Module, cfg: ModulesConfig) -> tuple[list[str], list[str]]:
    """(fused qkv modules to split, module names to adapt), without touching the model: the plan of its
    structure (``tuners.structural``, which a model record answers from too)."""
    return structural.plan_targets(structure_of(model), cfg)


def plan_injection(model: nn.Module, cfg: ModulesConfig) -> InjectionPlan:
    to_split, targets = plan_targets(model, cfg)
    return InjectionPlan(head=head_prefix(model), targets=targets, to_split=to_split, head_trains=trains_head(model))


def inject(model: nn.Module, plan: InjectionPlan, ctx: TunerContext, config: PeftConfig) -> PeftModel:
    """Split the planned qkv modules, quantize the base when ``ctx.quant`` asks for it (so PEFT wraps
    the bitsandbytes layers as its own bnb layers), and wrap the model with PEFT's ``config``."""
    from peft import get_peft_model  # peft (and transformers): not for checks

    replace_modules(model, plan.to_split, split_qkv)
    quantize_base(model, ctx.quant, ctx.device)
    return get_peft_model(model, config)


def for_transformers_model(config: dict, state: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """An adapter PEFT wrapped around peftlab's ``HFLogits``, renamed for the transformers model inside
    it, which is what a user wraps: ``model.`` off every target (peftlab's patterns are escaped names
    joined by ``|``), rank and alpha pattern, and ``base_model.model.model.`` keys one level up."""

    def unwrapped(pattern: str) -> str:
        return "|".join(part.removeprefix(r"model\.") for part in pattern.split("|"))

    config = dict(config)
    for key in ("target_modules", "feedforward_modules", "modules_to_save"):
        value = config.get(key)
        if isinstance(value, str):
            config[key] = unwrapped(value)
        elif isinstance(value, list):
            config[key] = [name.removeprefix("model.") for name in value]
    for key in ("rank_pattern", "alpha_pattern"):
        if isinstance(config.get(key), dict):
            config[key] = {unwrapped(pattern): value for pattern, value in config[key].items()}
    prefix = "base_model.model."
    state = {
        prefix + k.removeprefix(prefix + "model.") if k.startswith(prefix + "model.") else k: v
        for k, v in state.items()
    }
    return config, state


def unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict safetensors can write: each tensor detached and contiguous, and a copy of each one
    whose memory an earlier key's tensor shares (RandLoRA's and Lily's matrices shared by every layer appear under
    every layer's key, and safetensors refuses to write shared memory twice)."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        value = value.detach().contiguous()
        storage = value.untyped_storage().data_ptr()
        out[key] = value.clone() if storage in seen else value
        seen.add(storage)
    return out


def peft_export(tuner: Tuner) -> tuple[dict, dict[str, torch.Tensor]] | str:
    """What ``peftlab export --peft`` writes for ``tuner``, PEFT's (adapter_config.json, weights), or why it writes
    nothing, in words: the one answer behind the export and the run's warning, so the two never disagree."""
    label = getattr(tuner, "label", tuner.name)
    peft = tuner.peft_adapter()
    if peft is None:
        if getattr(tuner, "adapts_slices", lambda: False)():
            return PEFT_EXPORT_REFUSAL.format(method=label)
        return (
            f"PEFT cannot load the adapter of method {label!r} on the plain base (the PEFT-backed methods export; "
            "this one is peftlab's own or changes the base itself)"
        )
    inner = getattr(getattr(tuner.model, "base_model", None), "model", tuner.model)
    if family_of(inner).attention == "fused-bias" and any(".attn.qkv." in key for key in peft[1]):
        return (
            f"PEFT cannot load the {label} adapter on the plain base's qkv: plain timm computes this model's qkv "
            "with F.linear on its weight, never calling the module PEFT wraps, so a loaded adapter would do nothing"
        )
    return peft


# why `export --peft` has nothing to write for an adapter on q/k/v slices (the run's warning and the refusal say it)
PEFT_EXPORT_REFUSAL = (
    "the {method} adapter sits on q/k/v slices of timm's fused qkv, which PEFT cannot load on the plain base (no "
    "exact rewrite onto the whole qkv exists for it; train it on whole modules, e.g. method.target_modules: [qkv], "
    "for a PEFT-format adapter)"
)


class PeftTuner(Tuner):
    """A model wrapped by PEFT (``get_peft_model``): what every PEFT-backed method shares."""

    is_adapter = True

    @property
    def adapter_prefix(self) -> str:
        """PEFT's prefix of the method's own parameter names (``lora_``, ``hada_``, ``oft_``...)."""
        return self.model.base_model.prefix

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return unshared(get_peft_model_state_dict(self.model))

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.model, state)
        missing = [k for k in result.missing_keys if self.adapter_prefix in k or "modules_to_save" in k]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"adapter weights do not match the model: missing {missing[:3]}, "
                f"unexpected {list(result.unexpected_keys)[:3]}"
            )

    def adapts_slices(self) -> bool:
        """True when some adapter sits on a q/k/v slice of timm's fused ``qkv`` (not a module PEFT finds in timm)."""
        return any(isinstance(m, SplitQKV) for m in self.model.modules())

    def warnings(self) -> list[str]:
        """That PEFT cannot load the adapter on the plain base, exactly when ``peftlab export --peft`` refuses it
        (``peft_export``): the run says so at its end rather than the export after it."""
        export = peft_export(self)
        return [f"{export}; `peftlab export --merged` works"] if isinstance(export, str) else []

    @property
    def label(self) -> str:
        """The method as its config names it (a PEFT type through the bridge: ``peft (VERA)``)."""
        peft_type = getattr(self, "peft_type", None)
        return f"{self.name} ({peft_type})" if peft_type else self.name

    def peft_adapter(self) -> tuple[dict, dict[str, torch.Tensor]] | None:
        """PEFT's own config and weights, which load on the plain base when every target is a
        module of it; with q/k/v slices, ``fused_peft_adapter`` (None: no exact rewrite exists)."""
        from peft import get_peft_model_state_dict

        hf = isinstance(self.model.base_model.model, HFLogits)
        if self.adapts_slices():
            fused = self.fused_peft_adapter()
            return for_transformers_model(*fused) if fused and hf else fused
        config = self.model.peft_config[self.model.active_adapter].to_dict()
        config["inference_mode"] = True
        state = unshared(get_peft_model_state_dict(self.model))
        config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
        return for_transformers_model(config, state) if hf else (config, state)

    def fused_peft_adapter(self) -> tuple[dict, dict[str, torch.Tensor]] | None:
        """The adapter rewritten onto timm's fused ``qkv``, for methods where that is exact."""
        return None

    def merged_model(self, quantized: bool = False) -> nn.Module:
        """PEFT's ``merge_and_unload`` on a copy, the q/k/v Linears fused back into timm's ``qkv``."""
        restore_layout(self.model)  # PEFT's bnb merge reads the standard 4-bit layout
        merged = self.merge(copy.deepcopy(self.model), quantized)
        split = [
            n
            for n, m in merged.named_modules()
            if isinstance(m, SplitQKV) and all(type(p) is nn.Linear for p in (m.q, m.k, m.v))
        ]
        replace_modules(merged, split, fuse_qkv)
        return merged

    def merge(self, peft_model: PeftModel, quantized: bool) -> nn.Module:
        unwrap_trained_copies(peft_model)
        return peft_model.merge_and_unload()


def unwrap_trained_copies(peft_model: nn.Module) -> None:
    """Put each ``modules_to_save`` module's trained copy in its wrapper's place. PEFT's own unloading
    of VeRA, IA3, LoHa, LoKr, OFT and BOFT copies a wrapper's ``weight`` into the module it unloads to,
    which fails on a head without one of its own (RoBERTa's two-layer classification head)."""
    from peft.utils import ModulesToSaveWrapper

    wrapped = [(n, m) for n, m in peft_model.named_modules() if isinstance(m, ModulesToSaveWrapper)]
    for name, wrapper in wrapped:
        parent_name, _, child = name.rpartition(".")
        parent = peft_model.get_submodule(parent_name) if parent_name else peft_model
        setattr(parent, child, wrapper.modules_to_save[wrapper.active_adapters[0]])
