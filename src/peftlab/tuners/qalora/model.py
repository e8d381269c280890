"""QA-LoRA on timm and HF vision transformers, peftlab's own (no GPTQ, no CUDA needed).

Injection: (1) split timm's fused ``qkv`` where a q/k/v slice is targeted (tuners/modules.py),
(2) replace every Linear that ``quant.skip`` does not name (all block Linears; not the head,
not the patch embedding) by a ``GroupQuantLinear`` in ``method.format`` with groups of
``method.group_size`` input columns, recording each layer's quantization error, (3) wrap the
targets in ``QALoraLinear``; only the adapters and the head train.

The schedule sets λ in every quantized layer: ``constant`` keeps λ = 1; ``linear`` / ``cosine``
move it from 0 at step 0 to 1 at ``schedule_steps`` (the recipe's ``after_step`` hook), so the
final model is fully quantized. λ is a function of the step, which the tuner state holds.

Merge: ``merged_model(quantized=True)`` folds each update into its layer's zeros / offsets and
keeps the codes (the deployable model: a quantized model, nothing re-quantized);
``merged_model()`` is the same model with float weights, q/k/v fused back into timm's ``qkv``.
Adapter names: ``blocks.{i}.attn.qkv.{q|v}.lora_{A|B}.weight``, ``head.weight`` and so on.
"""

from __future__ import annotations

import copy
import math
import re

import torch
from torch import nn

from peftlab.models.backbones import head_prefix, trains_head
from peftlab.quant.allocator import let_go, release_freed_memory
from peftlab.quant.bases import in_file, is_skipped, materialized, quantizable_linears
from peftlab.tuners.base import Tuner, TunerContext
from peftlab.tuners.modules import SplitQKV, fuse_qkv, replace_modules, split_qkv
from peftlab.tuners.peft_injection import plan_targets
from peftlab.tuners.qalora.config import QALoraConfig
from peftlab.tuners.qalora.layer import GroupQuantLinear, QALoraLinear, dequantized_linear
from peftlab.tuners.qalora.quantizer import relative_error
from peftlab.utils.errors import ConfigError


def schedule_lambda(schedule: str, step: int, steps: int | None) -> float:
    """λ at optimizer step ``step``: 1 for constant; from 0 at step 0 to 1 at ``steps`` otherwise."""
    if schedule == "constant":
        return 1.0
    progress = min(1.0, step / steps)
    return progress if schedule == "linear" else 0.5 * (1.0 - math.cos(math.pi * progress))


def plan(model: nn.Module, cfg: QALoraConfig, quant) -> tuple[list[str], list[str], dict[str, int]]:
    """(fused qkv to split, module names to adapt, {quantized module: in_features}), the model untouched."""
    head = head_prefix(model)
    to_split, targets = plan_targets(model, cfg)  # LoRA's targets and q/k/v split, the same rules
    if not is_skipped(head, quant.skip):
        raise ConfigError(
            f"quant.skip={list(quant.skip)!r} must name the classifier head {head!r}: the head trains "
            "and cannot be quantized"
        )
    quantized = {}
    for name in quantizable_linears(model, quant):
        width = model.get_submodule(name).in_features
        for part in [f"{name}.{p}" for p in ("q", "k", "v")] if name in to_split else [name]:
            quantized[part] = width
    skipped = [t for t in targets if t not in quantized]
    if skipped:
        raise ConfigError(
            f"method.target_modules adapts {skipped[0]!r}, which quant.skip={list(quant.skip)!r} "
            "leaves unquantized; QA-LoRA adapts quantized layers only"
        )
    check_group_size(cfg.group_size, quantized)
    return to_split, targets, quantized


def check_group_size(group_size: int, widths: dict[str, int]) -> None:
    """Every quantized layer's in_features must be a multiple of the group size."""
    for name, width in widths.items():
        if width % group_size:
            common = math.gcd(*widths.values())
            sizes = [d for d in range(1, common + 1) if common % d == 0]
            raise ConfigError(
                f"method.group_size={group_size} is invalid: {name} has in_features={width}; "
                f"group sizes that divide every quantized layer: {', '.join(map(str, sizes))}"
            )


class QALoraTuner(Tuner):
    name = "qalora"
    is_adapter = True
    exact_quantized_merge = True

    def __init__(self, model: nn.Module, head: str, cfg: QALoraConfig, steps: int | None, errors: dict[str, float]):
        super().__init__(model, head)
        self.schedule, self.steps = cfg.schedule, steps
        self.format, self.group_size = cfg.format, cfg.group_size
        self.errors = errors
        self.step = 0
        self.set_step(0)

    def quantized_layers(self, model: nn.Module | None = None) -> dict[str, GroupQuantLinear]:
        model = self.model if model is None else model
        return {n: m for n, m in model.named_modules() if isinstance(m, GroupQuantLinear)}

    @property
    def lam(self) -> float:
        return schedule_lambda(self.schedule, self.step, self.steps)

    def set_step(self, step: int) -> None:
        """Set λ in every quantized layer for optimizer step ``step``; at λ = 1 the fp32 copies are dropped."""
        self.step = step
        lam = self.lam
        for layer in self.quantized_layers().values():
            layer.lam = lam
            if lam >= 1.0:
                layer.float_weight = None

    def after_step(self, step: int) -> None:
        self.set_step(step + 1)  # the next step's λ

    def state_dict(self) -> dict:
        return {"schedule_step": self.step}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"schedule_step"}:
            raise ValueError(f"method 'qalora' keeps {{'schedule_step'}}, but the checkpoint holds {sorted(state)}")
        self.set_step(int(state["schedule_step"]))

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Adapters saved at the end of training: the schedule is at its end (λ = 1) too."""
        super().load_adapter_state_dict(state)
        self.set_step(self.steps or 0)

    def parameter_counts(self) -> dict[str, int]:
        """As the base class counts, plus out x in for each quantized weight (its codes are buffers)."""
        counts = super().parameter_counts()
        extra = sum(m.in_features * m.out_features for m in self.quantized_layers().values())
        return {"total": counts["total"] + extra, "trainable": counts["trainable"]}

    def quantization_report(self) -> dict:
        errors = list(self.errors.values())
        return {
            "format": self.format,
            "group_size": self.group_size,
            "schedule": self.schedule,
            "schedule_steps": self.steps,
            "lambda": self.lam,
            "mean_relative_error": sum(errors) / len(errors) if errors else None,
            "max_relative_error": max(errors, default=None),
            "layer_relative_error": dict(self.errors),
        }

    def merged_model(self, quantized: bool = False) -> nn.Module:
        """The adapters folded into the zeros / offsets (same codes); float weights unless ``quantized``."""
        model = copy.deepcopy(self.model)
        adapted = [n for n, m in model.named_modules() if isinstance(m, QALoraLinear)]
        replace_modules(model, adapted, lambda layer: layer.merged_base())
        for layer in self.quantized_layers(model).values():
            layer.lam, layer.float_weight = 1.0, None
        if quantized:
            return model
        replace_modules(model, list(self.quantized_layers(model)), dequantized_linear)
        split = [n for n, m in model.named_modules() if isinstance(m, SplitQKV)]
        replace_modules(model, split, fuse_qkv)
        return model

    def quantized_merge_facts(self, merged: nn.Module) -> dict:
        """Whether the merged model's codes and scales are bit-identical to the trained model's."""
        before, after = self.quantized_layers(), self.quantized_layers(merged)
        names = {re.sub(r"\.base_layer$", "", n) for n in before}
        same = names == set(after) and all(
            torch.equal(before[n].codes, after[re.sub(r"\.base_layer$", "", n)].codes)
            and torch.equal(before[n].scales, after[re.sub(r"\.base_layer$", "", n)].scales)
            for n in before
        )
        return {"codes_unchanged": same}


def total_schedule_steps(cfg: QALoraConfig, total_steps: int | None) -> int | None:
    if cfg.schedule == "constant":
        return None
    steps = cfg.schedule_steps or total_steps
    if steps is None:
        raise ConfigError(
            f"method.schedule_steps=None is invalid for method.schedule={cfg.schedule!r} when the run's "
            "length is unknown: expected a positive integer"
        )
    if total_steps is not None and steps > total_steps:
        raise ConfigError(
            f"method.schedule_steps={steps} is invalid: expected at most the run's {total_steps} "
            "optimizer steps, so that λ reaches 1 and the final model is fully quantized"
        )
    return steps


def check(model: nn.Module, cfg: QALoraConfig, ctx: TunerContext) -> None:
    plan(model, cfg, ctx.quant)
    if cfg.schedule_steps is not None and ctx.total_steps is not None:
        total_schedule_steps(cfg, ctx.total_steps)


def apply(model: nn.Module, cfg: QALoraConfig, ctx: TunerContext) -> QALoraTuner:
    head = head_prefix(model)
    to_split, targets, quantized = plan(model, cfg, ctx.quant)
    steps = total_schedule_steps(cfg, ctx.total_steps)
    replace_modules(model, to_split, split_qkv)
    model.requires_grad_(False)
    errors = {}
    for name in quantized:  # one layer at a time: the base is never held twice in fp32
        read = in_file(model.get_submodule(name))  # read here when quantized while loading (peftlab.quant.load)
        linear = materialized(model.get_submodule(name))
        if linear.weight.is_meta:  # shapes only (parameter counts): nothing to quantize
            layer = GroupQuantLinear(
                linear.in_features,
                linear.out_features,
                linear.bias is not None,
                cfg.format,
                cfg.group_size,
                device="meta",
            )
        else:
            linear = linear.to(ctx.device)
            layer = GroupQuantLinear.from_linear(linear, cfg.format, cfg.group_size, keep_float=steps is not None)
            errors[name] = relative_error(linear.weight, layer.dequantized_weight())
        replace_modules(model, [name], lambda _, layer=layer: layer)
        mapped = None if read else linear.weight
        del linear
        let_go(mapped)
    replace_modules(model, targets, lambda base: QALoraLinear(base, cfg.r, cfg.lora_alpha, cfg.lora_dropout))
    if trains_head(model):  # a causal LM's LM head stays frozen
        model.get_submodule(head).requires_grad_(True)
    release_freed_memory()
    return QALoraTuner(model, head, cfg, steps, errors)
