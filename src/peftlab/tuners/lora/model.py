"""LoRA via PEFT on timm and HF vision transformers.

Injection: (1) split timm's fused ``qkv`` where a q/k/v slice is targeted (layer.py),
(2) quantize the base when ``quant.mode`` asks for it (peftlab.quant), (3)
``peft.get_peft_model`` with an exact list of target modules, the head in
``modules_to_save``. Merge: PEFT's ``merge_and_unload`` on a copy, then fuse the q/k/v
Linears back into one ``qkv`` so the result is a plain timm model with timm's state-dict keys.
On a quantized base the fp32 merge is dequant(W) + ΔW, layer by layer; the quantized merge is
PEFT's (it re-quantizes) and keeps the split q/k/v, since quantized slices cannot be fused.

Adapter file names follow PEFT's convention (``get_peft_model_state_dict``):
``base_model.model.blocks.{i}.attn.qkv.{q|k|v}.lora_{A|B}.weight`` for the rows
[0:d] / [d:2d] / [2d:3d] of timm's ``blocks.{i}.attn.qkv``, ``...attn.proj.lora_A.weight``
and so on, and ``base_model.model.head.weight/bias`` for the trained head.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from peftlab.errors import ConfigError
from peftlab.quant import dequantized_linear, is_quantized_linear, quantize_base
from peftlab.tuners.base import Tuner, TunerContext, head_prefix
from peftlab.tuners.lora.config import (LoraMethodConfig, TargetsConfig, check_patterns, lora_config_kwargs,
                                        match_targets, module_ranks, target_patterns)
from peftlab.tuners.lora.layer import SplitQKV, fuse_qkv, replace_modules, split_qkv


def linear_names(model: nn.Module, head: str) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.startswith(head)]


def qkv_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n.endswith("attn.qkv") and isinstance(m, nn.Linear)]


def plan_targets(model: nn.Module, cfg: TargetsConfig) -> tuple[list[str], list[str]]:
    """(fused qkv modules to split, module names to adapt), without touching the model."""
    from peftlab.backbones import HFLogits

    head = head_prefix(model)
    hf = isinstance(model, HFLogits)
    fused = [] if hf else qkv_names(model)
    split_names = [f"{n}.{part}" for n in fused for part in ("q", "k", "v")]
    # the whole fused qkv (one adapter over q, k and v) or its slices, never both
    candidates = linear_names(model, head) + split_names
    targets = match_targets(target_patterns(cfg, hf), candidates)
    to_split = [n for n in fused if any(t.startswith(n + ".") for t in targets)]
    both = [n for n in to_split if n in targets]
    if both:
        raise ConfigError(f"method.target_modules adapts both the whole fused {both[0]!r} and its q/k/v slices; "
                          "choose one")
    if isinstance(cfg, LoraMethodConfig):
        check_patterns(cfg, targets)
    return to_split, targets


class LoraTuner(Tuner):
    name = "lora"
    is_adapter = True

    def __init__(self, model: nn.Module, head: str, ranks: dict[str, int] | None = None, strategy: str = "uniform"):
        super().__init__(model, head)
        self._ranks = ranks or {}
        self.strategy = strategy

    def ranks(self) -> dict | None:
        return {"strategy": self.strategy, "sum": sum(self._ranks.values()), "modules": len(self._ranks),
                "final": dict(self._ranks)}

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(self.model).items()}

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.model, state)
        missing = [k for k in result.missing_keys if "lora_" in k or "modules_to_save" in k]
        if missing or result.unexpected_keys:
            raise ValueError(f"adapter weights do not match the model: missing {missing[:3]}, "
                             f"unexpected {list(result.unexpected_keys)[:3]}")

    def merged_model(self, quantized: bool = False) -> nn.Module:
        model = copy.deepcopy(self.model)
        quantized_base = any(is_quantized_linear(m) for m in model.modules())
        with warnings.catch_warnings():  # PEFT warns that a bnb merge re-quantizes: known, and reported
            warnings.filterwarnings("ignore", message="Merge lora module to")
            merged = dequantized_merge(model) if quantized_base and not quantized else model.merge_and_unload()
        split = [n for n, m in merged.named_modules()
                 if isinstance(m, SplitQKV) and all(type(p) is nn.Linear for p in (m.q, m.k, m.v))]
        replace_modules(merged, split, fuse_qkv)
        return merged


def dequantized_merge(peft_model: nn.Module) -> nn.Module:
    """A float model whose adapted layers hold dequant(W) + ΔW and the others dequant(W)."""
    from peft.tuners.lora import LoraLayer

    for module in list(peft_model.modules()):
        if isinstance(module, LoraLayer) and is_quantized_linear(module.get_base_layer()):
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A)
            module.base_layer = dequantized_linear(module.get_base_layer(), delta)
    model = peft_model.unload()
    names = [n for n, m in model.named_modules() if is_quantized_linear(m)]
    replace_modules(model, names, dequantized_linear)
    for flag in ("is_loaded_in_8bit", "is_loaded_in_4bit"):
        model.__dict__.pop(flag, None)
    return model


def check_lora(model: nn.Module, cfg: LoraMethodConfig, ctx: TunerContext) -> None:
    _, targets = plan_targets(model, cfg)
    module_ranks(cfg, targets)  # a budget the bounds cannot hold, a missing importance file


def lora_ranks(model: nn.Module, cfg: LoraMethodConfig) -> dict[str, int]:
    """The rank of every module LoRA would adapt (``peftlab validate --show`` prints it)."""
    return module_ranks(cfg, plan_targets(model, cfg)[1])


def apply_lora(model: nn.Module, cfg: LoraMethodConfig, ctx: TunerContext) -> LoraTuner:
    from peft import LoraConfig, get_peft_model

    head = head_prefix(model)
    to_split, targets = plan_targets(model, cfg)
    replace_modules(model, to_split, split_qkv)
    quantize_base(model, ctx.quant, ctx.device)
    config = LoraConfig(**lora_config_kwargs(cfg, targets, head))
    peft_model = get_peft_model(model, config)
    return LoraTuner(peft_model, head, module_ranks(cfg, targets), cfg.rank_strategy)
