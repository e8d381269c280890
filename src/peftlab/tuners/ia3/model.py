"""IA3 (Liu et al., NeurIPS 2022) through PEFT's ``IA3Config`` on the one injection path.

A vector l rescales a target's output (keys, values) or, for a feed-forward module, its input
(the MLP's inner activations); PEFT starts l at one, the base model. Merge: ``PeftTuner``'s.
The PEFT-format export rewrites output vectors on q/k/v slices onto timm's fused ``qkv``: one
vector of 3d entries, ones on the rows of a slice without one.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from peftlab.models.backbones import HFLogits
from peftlab.models.families import family_of
from peftlab.tuners.base import TunerContext
from peftlab.tuners.ia3.config import IA3MethodConfig, feedforward_targets
from peftlab.tuners.modules import SplitQKV
from peftlab.tuners.peft_injection import PeftTuner, inject, plan_injection, plan_targets


class IA3Tuner(PeftTuner):
    name = "ia3"

    def fused_peft_adapter(self) -> tuple[dict, dict[str, torch.Tensor]] | None:
        from peft import get_peft_model_state_dict
        from peft.tuners.ia3 import IA3Layer

        inner = self.model.base_model.model
        state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()}
        targets, feedforward, slices = [], [], {}  # slices: fused qkv -> {part: l}
        for name, module in inner.named_modules():
            if not isinstance(module, IA3Layer):
                continue
            parent, _, part = name.rpartition(".")
            if isinstance(inner.get_submodule(parent), SplitQKV):
                if module.is_feedforward:
                    return None  # an input scale per slice has no single-input equivalent on the fused qkv
                slices.setdefault(parent, {})[part] = state.pop(f"base_model.model.{name}.ia3_l")
                continue
            targets.append(name)
            if module.is_feedforward:
                feedforward.append(name)
        for parent, parts in slices.items():
            split = inner.get_submodule(parent)
            state[f"base_model.model.{parent}.ia3_l"] = torch.cat(
                [parts[p] if p in parts else torch.ones(getattr(split, p).out_features, 1) for p in ("q", "k", "v")]
            )
            targets.append(parent)
        config = self.model.peft_config[self.model.active_adapter].to_dict()
        config.update(
            target_modules="|".join(re.escape(t) for t in targets),
            feedforward_modules="|".join(re.escape(t) for t in feedforward) or [],
            inference_mode=True,
            # GPT-2's fused c_attn is a Conv1D, its weight (in, out)
            fan_in_fan_out=isinstance(inner, HFLogits) and inner.model.config.model_type == "gpt2",
        )
        return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}, state


def check(model: nn.Module, cfg: IA3MethodConfig, ctx: TunerContext) -> None:
    feedforward_targets(cfg, plan_targets(model, cfg)[1], family_of(model))


def apply(model: nn.Module, cfg: IA3MethodConfig, ctx: TunerContext) -> IA3Tuner:
    from peft import IA3Config  # peft (and transformers): not for checks

    plan = plan_injection(model, cfg)
    feedforward = feedforward_targets(cfg, plan.targets, family_of(model))
    config = IA3Config(
        target_modules=plan.target_modules,
        init_ia3_weights=True,
        feedforward_modules="|".join(re.escape(t) for t in feedforward) or [],
        modules_to_save=plan.modules_to_save,
    )
    return IA3Tuner(inject(model, plan, ctx, config), plan.head)
