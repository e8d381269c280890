"""LoRA via PEFT on timm and HF vision transformers.

Injection: PEFT's ``LoraConfig`` through the one path of the PEFT-backed tuners
(peft_injection.py): split timm's fused ``qkv`` where a q/k/v slice is targeted (tuners/modules.py),
quantize the base when ``quant.mode`` asks for it (peftlab.quant.bases), ``peft.get_peft_model``
with an exact list of target modules, the head in ``modules_to_save``. Merge: PEFT's
``merge_and_unload`` on a copy, then fuse the q/k/v Linears back into one ``qkv`` so the result
is a plain timm model with timm's state-dict keys.
On a quantized base the fp32 merge is dequant(W) + ΔW, layer by layer; the quantized merge is
PEFT's (it re-quantizes) and keeps the split q/k/v, since quantized slices cannot be fused.

Adapter file names follow PEFT's convention (``get_peft_model_state_dict``):
``base_model.model.blocks.{i}.attn.qkv.{q|k|v}.lora_{A|B}.weight`` for the rows
[0:d] / [d:2d] / [2d:3d] of timm's ``blocks.{i}.attn.qkv``, ``...attn.proj.lora_A.weight``
and so on, and ``base_model.model.head.weight/bias`` for the trained head.
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import nn

from peftlab.models.backbones import HFLogits
from peftlab.models.structure import structure_of
from peftlab.quant.bases import dequantized_linear, dequantized_weight, is_quantized_linear
from peftlab.tuners import plans
from peftlab.tuners.base import TunerContext
from peftlab.tuners.lora.config import LoraMethodConfig, lora_config_kwargs, module_ranks
from peftlab.tuners.modules import SplitQKV, replace_modules
from peftlab.tuners.peft_injection import PeftTuner, inject, plan_injection


class LoraTuner(PeftTuner):
    name = "lora"

    def __init__(self, model: nn.Module, head: str, ranks: dict[str, int] | None = None, strategy: str = "uniform"):
        super().__init__(model, head)
        self._ranks = ranks or {}
        self.strategy = strategy

    def ranks(self) -> dict | None:
        return {
            "strategy": self.strategy,
            "sum": sum(self._ranks.values()),
            "modules": len(self._ranks),
            "final": dict(self._ranks),
        }

    def peft_adapter(self) -> tuple[dict, dict[str, torch.Tensor]] | None:
        """The adapter as plain PEFT LoRA on the unmodified base: (adapter_config.json, weights).

        ``PeftModel.from_pretrained(base, dir)`` loads it on a plain timm model (fused ``qkv``)
        or a plain HF model. Each module's update ``ΔW = B_eff @ A_eff`` is written with its
        scaling folded into B and ``lora_alpha = r`` (PEFT's scaling 1): AdaLoRA's ``A * E`` and
        ``1 / ranknum``, the adaptive method's masks (pruned ranks dropped) and a LoRA on timm's
        split q/k/v slices (rows [0:d], [d:2d], [2d:3d] of one block-structured B on the fused
        ``qkv``) all become plain LoRA factors with the same outputs. DoRA's magnitudes go with
        them (``use_dora``): per output row, so the fused ``qkv``'s are the slices' magnitudes and,
        for a slice without an adapter, the norm of its base rows (a factor of 1).
        """
        from peft import LoraConfig  # peft (and transformers): not for checks
        from peft.utils import ModulesToSaveWrapper

        inner = self.model.base_model.model
        strip = "model." if isinstance(inner, HFLogits) else ""  # PEFT wraps the transformers model itself
        factors: dict[str, list[tuple[torch.Tensor, torch.Tensor, int]]] = {}  # module -> [(A, B, row offset)]
        magnitudes: dict[str, list[tuple[torch.Tensor, int]]] = {}  # DoRA: module -> [(magnitude, row offset)]
        heads, state = [], {}
        for name, module in inner.named_modules():
            if isinstance(module, ModulesToSaveWrapper):
                heads.append(name.removeprefix(strip))
                for pname, param in module.modules_to_save[module.active_adapter].named_parameters():
                    state[f"base_model.model.{name.removeprefix(strip)}.{pname}"] = param.detach().clone()
            magnitude = dora_magnitude(module)
            pair = low_rank_factors(module, drop_unused=magnitude is None)
            if pair is None:
                continue
            a, b = pair
            parent, _, part = name.rpartition(".")
            offset = 0
            if isinstance(inner.get_submodule(parent) if parent else None, SplitQKV):  # a slice of the fused qkv
                split = inner.get_submodule(parent)
                offset = {"q": 0, "k": split.q.out_features, "v": split.q.out_features + split.k.out_features}[part]
                name = parent
            factors.setdefault(name, []).append((a, b, offset))
            if magnitude is not None:
                magnitudes.setdefault(name, []).append((magnitude, offset))
        ranks = {}
        for name, parts in with_a_rank(factors).items():
            kept = [(a, b, offset) for a, b, offset in parts if a.shape[0] > 0]
            if not kept:
                continue  # every rank pruned: no adapter on this module
            out_features = inner.get_submodule(name).out_features
            a_all = torch.cat([a for a, _, _ in kept])
            b_all = a_all.new_zeros(out_features, a_all.shape[0])
            column = 0
            for a, b, offset in kept:
                b_all[offset : offset + b.shape[0], column : column + a.shape[0]] = b
                column += a.shape[0]
            key = f"base_model.model.{name.removeprefix(strip)}"
            state[f"{key}.lora_A.weight"] = a_all.contiguous()
            state[f"{key}.lora_B.weight"] = b_all.contiguous()
            if name in magnitudes:
                state[f"{key}.lora_magnitude_vector"] = fused_magnitude(
                    inner.get_submodule(name), a_all, b_all, magnitudes[name]
                )
            ranks[name.removeprefix(strip)] = a_all.shape[0]
        r = max(ranks.values(), default=1)
        escaped = {re.escape(n): rank for n, rank in ranks.items()}
        config = LoraConfig(
            r=r,
            lora_alpha=r,
            lora_dropout=0.0,
            target_modules="|".join(escaped) or None,
            rank_pattern=escaped,
            alpha_pattern={k: float(v) for k, v in escaped.items()},
            modules_to_save=[h.rpartition(".")[2] for h in heads] or None,
            bias="none",
            use_dora=bool(magnitudes),
            # GPT-2's Linears are transformers' Conv1D in the plain model (peftlab builds them as nn.Linear):
            # the same factors, which PEFT applies to a Conv1D's transposed weight when told so
            fan_in_fan_out=isinstance(inner, HFLogits) and inner.model.config.model_type == "gpt2",
            inference_mode=True,
        )
        return {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}, state

    def merge(self, peft_model: nn.Module, quantized: bool) -> nn.Module:
        """On a quantized base, ``quantized=False`` merges into dequant(W); otherwise PEFT's merge."""
        with warnings.catch_warnings():  # PEFT warns that a bnb merge re-quantizes: known, and reported
            warnings.filterwarnings("ignore", message="Merge lora module to")
            if not quantized and any(is_quantized_linear(m) for m in peft_model.modules()):
                return dequantized_merge(peft_model)
            return peft_model.merge_and_unload()


def with_a_rank(factors: dict[str, list[tuple[torch.Tensor, torch.Tensor, int]]]) -> dict:
    """``factors`` (module -> [(A, B, row offset)]), or, where no rank adds anything (every rank pruned, or B still
    zero), its first module with one rank of zeros: PEFT refuses a LoRA without target modules, and a zero rank
    changes no output."""
    if not factors or any(a.shape[0] for parts in factors.values() for a, _, _ in parts):
        return factors
    name, parts = next(iter(factors.items()))
    a, b, offset = parts[0]
    return {name: [(a.new_zeros(1, a.shape[1]), b.new_zeros(b.shape[0], 1), offset)]}


def low_rank_factors(module: nn.Module, drop_unused: bool = True) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(A, B) with the module's active update = B @ A (scaling folded into B), ranks that add
    nothing (a zero row of A or column of B) dropped unless ``drop_unused`` is False (DoRA's
    norm is taken over W + BA, whatever its rank); None for a module without LoRA."""
    from peft.tuners.adalora import AdaLoraLayer
    from peft.tuners.lora import LoraLayer

    if not isinstance(module, LoraLayer) or not module.lora_A:
        return None
    (adapter,) = [a for a in module.active_adapters if a in module.lora_A]
    with torch.no_grad():
        if isinstance(module, AdaLoraLayer):  # B (A ⊙ E) · scaling / (ranknum + 1e-5)
            a = module.lora_A[adapter] * module.lora_E[adapter]
            b = module.lora_B[adapter] * (module.scaling[adapter] / (module.ranknum[adapter] + 1e-5))
        else:
            a = module.lora_A[adapter].weight
            b = module.lora_B[adapter].weight * module.scaling[adapter]
        keep = (a != 0).any(dim=1) & (b != 0).any(dim=0) if drop_unused else torch.ones(a.shape[0], dtype=torch.bool)
        return a[keep].detach().float().clone(), b[:, keep].detach().float().clone()


def dora_magnitude(module: nn.Module) -> torch.Tensor | None:
    """DoRA's learned magnitude of each output row of ``module``; None for plain LoRA and other modules."""
    from peft.tuners.lora import LoraLayer

    if not isinstance(module, LoraLayer) or not module.lora_A:
        return None
    (adapter,) = [a for a in module.active_adapters if a in module.lora_A]
    if not module.use_dora.get(adapter, False):
        return None
    return module.lora_magnitude_vector[adapter].weight.detach().float().clone()


def base_weight(module: nn.Module) -> torch.Tensor:
    """The float base weight under a PEFT layer (dequantized on a quantized base)."""
    layer = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    return dequantized_weight(layer) if is_quantized_linear(layer) else layer.weight.detach().float()


def fused_magnitude(
    module: nn.Module, a: torch.Tensor, b: torch.Tensor, parts: list[tuple[torch.Tensor, int]]
) -> torch.Tensor:
    """DoRA's magnitude for ``module`` (a SplitQKV: the fused qkv) under update B @ A: each adapted
    part's own rows; elsewhere the row norm of W + B @ A, so the factor is 1 there."""
    weight = (
        torch.cat([base_weight(p) for p in (module.q, module.k, module.v)])
        if isinstance(module, SplitQKV)
        else base_weight(module)
    )
    with torch.no_grad():
        magnitude = torch.linalg.norm(weight + b @ a, dim=1)
        for part, offset in parts:
            magnitude[offset : offset + part.shape[0]] = part
    return magnitude.contiguous()


def dequantized_merge(peft_model: nn.Module) -> nn.Module:
    """A float model whose adapted layers hold dequant(W) + ΔW (DoRA: its normalized form) and the others dequant(W)."""
    from peft.tuners.lora import LoraLayer

    for module in list(peft_model.modules()):
        if isinstance(module, LoraLayer) and is_quantized_linear(module.get_base_layer()):
            base = weight = dequantized_weight(module.get_base_layer())
            for adapter in [a for a in module.active_adapters if a in module.lora_A]:
                delta = module.get_delta_weight(adapter).float()
                if module.use_dora.get(adapter, False):  # DoRA: m / ||W + ΔW|| (W + ΔW), row by row
                    norm = torch.linalg.norm(weight + delta, dim=1, keepdim=True)
                    delta = (
                        module.lora_magnitude_vector[adapter].weight.detach().float()[:, None] / norm * (weight + delta)
                        - weight
                    )
                weight = weight + delta
            module.base_layer = dequantized_linear(module.get_base_layer(), weight - base)
    model = peft_model.unload()
    names = [n for n, m in model.named_modules() if is_quantized_linear(m)]
    replace_modules(model, names, dequantized_linear)
    for flag in ("is_loaded_in_8bit", "is_loaded_in_4bit"):
        model.__dict__.pop(flag, None)
    return model


def check(model: nn.Module, cfg: LoraMethodConfig, ctx: TunerContext) -> None:
    plans.lora_ranks(structure_of(model), cfg)  # a budget the bounds cannot hold, a missing importance file


def ranks(model: nn.Module, cfg: LoraMethodConfig) -> dict[str, int]:
    """The rank of every module LoRA would adapt (``peftlab validate --show`` prints it)."""
    return plans.lora_ranks(structure_of(model), cfg)


def size(model: nn.Module, cfg: LoraMethodConfig) -> int:
    """The parameters LoRA adds to ``model``, counted from its plan without PEFT (whose import takes
    seconds): ``tuners.plans.lora_size``."""
    return plans.lora_size(structure_of(model), cfg)


def apply(model: nn.Module, cfg: LoraMethodConfig, ctx: TunerContext) -> LoraTuner:
    from peft import LoraConfig  # peft (and transformers): not for checks

    plan = plan_injection(model, cfg)
    peft_model = inject(model, plan, ctx, LoraConfig(**lora_config_kwargs(cfg, plan.targets, plan.modules_to_save)))
    return LoraTuner(peft_model, plan.head, module_ranks(cfg, plan.targets), cfg.rank_strategy)
