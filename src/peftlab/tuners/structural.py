"""Target plans, the size bound and the counts of the methods a model's structure decides: no torch.

    to_split, targets = plan_targets(structure, cfg)     # fused qkv to split, module names to adapt
    bound = bound_total(structure, method)               # an upper bound of the adapted model's size
    ranks = check_structure(cfg, structure)              # validate's model checks, refused as train refuses
    counts = count_structure(cfg.model.name, cfg.method, structure, num_classes)   # peftlab params

A method in ``PLANS`` is counted and checked from its plan alone (``Plan``): its targets and ranks come
from the structure's Linears, its size from their shapes. The live code calls the same functions on
``structure_of(model)`` (``tuners.peft_injection``, ``tuners.params``, the methods' hooks), so a model
record's answer is the live model's. A method outside ``PLANS`` (its count needs its own modules, or PEFT's)
is applied on the meta device to be counted, and its answers are recorded per method config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peftlab.config.sections import MethodConfig, ModelConfig, QuantConfig
from peftlab.models.families import canonical_names, refuse_family
from peftlab.models.structure import Param, Structure
from peftlab.tuners.adapter.config import ADAPTER_PLACES, AdapterConfig
from peftlab.tuners.ia3.config import IA3MethodConfig, feedforward_targets
from peftlab.tuners.lora.config import LoraMethodConfig, check_patterns, module_ranks
from peftlab.tuners.peft_bridge.config import PeftBridgeConfig
from peftlab.tuners.size_check import refuse_size
from peftlab.tuners.targets import ModulesConfig, match_targets, target_patterns
from peftlab.tuners.vpt.config import REFUSED, VPTConfig
from peftlab.utils.errors import ConfigError

QKV = ("attn.qkv", "attn.c_attn")  # the fused (3d, d) q, k, v Linears: timm's, GPT-2's (a Linear once built)


def is_head_param(name: str, head: str) -> bool:
    """True for the head's own parameters and for PEFT's trainable copy of the head."""
    return name.startswith(head + ".") or f".{head}." in name or name.endswith(f".{head}")


def linear_names(structure: Structure) -> list[str]:
    """The Linears outside the head."""
    return [m.name for m in structure.linears if not m.name.startswith(structure.head)]


def qkv_names(structure: Structure) -> list[str]:
    return [m.name for m in structure.linears if m.name.endswith(QKV)]


def plan_targets(structure: Structure, cfg: ModulesConfig) -> tuple[list[str], list[str]]:
    """(fused qkv modules to split, module names to adapt), without touching the model."""
    fused = qkv_names(structure)  # an HF vision model has none
    split_names = [f"{n}.{part}" for n in fused for part in ("q", "k", "v")]
    # the whole fused qkv (one adapter over q, k and v) or its slices, never both
    candidates = linear_names(structure) + split_names
    if isinstance(cfg.target_modules, str):  # a preset: the same layers on every family
        aliases = canonical_names(candidates, structure.family)
        targets = [n for key in match_targets(target_patterns(cfg), list(aliases)) for n in aliases[key]]
    else:
        targets = match_targets(target_patterns(cfg), candidates)
    to_split = [n for n in fused if any(t.startswith(n + ".") for t in targets)]
    both = [n for n in to_split if n in targets]
    if both:
        raise ConfigError(
            f"method.target_modules adapts both the whole fused {both[0]!r} and its q/k/v slices; choose one"
        )
    if isinstance(cfg, LoraMethodConfig):
        check_patterns(cfg, targets)
    return to_split, targets


def target_shape(structure: Structure, name: str) -> tuple[int, int]:
    """(in_features, out_features) of a planned target, before the split: a q/k/v slice of a fused
    ``qkv`` is a third of its rows (``split_qkv``'s Linears)."""
    parent, _, part = name.rpartition(".")
    if part in ("q", "k", "v") and parent in qkv_names(structure):
        fused = structure.linear(parent)
        return fused.in_features, fused.out_features // 3
    module = structure.linear(name)
    return module.in_features, module.out_features


def largest_rank(method: MethodConfig) -> int:
    """The largest rank ``method`` builds a module with (0 for a method without ranks): ``r``, AdaLoRA's
    ``init_r``, the adaptive method's ``built_rank`` (its adapters are built at max_rank), the values of a
    ``rank_pattern``; the PEFT bridge's ``r`` and ``rank_pattern`` options (``PeftBridgeConfig.option_ranks``)."""
    ranks = [getattr(method, key, 0) or 0 for key in ("r", "init_r", "built_rank")]
    ranks += list((getattr(method, "rank_pattern", None) or {}).values())
    ranks += method.option_ranks if isinstance(method, PeftBridgeConfig) else []
    return max(ranks)


def bound_total(structure: Structure, method: MethodConfig) -> int:
    """The model's parameters with rank-r adapters on every Linear (and the method's shared ones)."""
    bound = largest_rank(method) * sum(m.in_features + m.out_features for m in structure.linears)
    return structure.total + bound + getattr(method, "shared_size", 0)


# The methods counted from their plan ---------------------------------------------------------------------


def lora_ranks(structure: Structure, cfg: LoraMethodConfig) -> dict[str, int]:
    """The rank of every module LoRA would adapt; a budget the bounds cannot hold, a missing importance
    file and an unmatched pattern are refused here."""
    return module_ranks(cfg, plan_targets(structure, cfg)[1])


def lora_size(structure: Structure, cfg: LoraMethodConfig) -> int:
    """r x (in + out) per adapted module: PEFT's ``lora_A`` (r x in) and ``lora_B`` (out x r)."""
    return sum(rank * sum(target_shape(structure, name)) for name, rank in lora_ranks(structure, cfg).items())


def dora_size(structure: Structure, cfg: LoraMethodConfig) -> int:
    """LoRA's and one magnitude per output row of each adapted module (PEFT's ``lora_magnitude_vector``)."""
    targets = plan_targets(structure, cfg)[1]
    return lora_size(structure, cfg) + sum(target_shape(structure, name)[1] for name in targets)


def each_target(per_target: Callable[[int, int, MethodConfig], int]):
    """The size of a method that adds ``per_target(in, out, cfg)`` parameters to each module it adapts."""

    def size(structure: Structure, cfg: ModulesConfig) -> int:
        return sum(per_target(*target_shape(structure, name), cfg) for name in plan_targets(structure, cfg)[1])

    return size


def targets_only(structure: Structure, cfg: ModulesConfig) -> None:
    plan_targets(structure, cfg)


def ia3_size(structure: Structure, cfg: IA3MethodConfig) -> int:
    """One vector per target: of its input's width for a feed-forward module, of its output's otherwise."""
    targets = plan_targets(structure, cfg)[1]
    feedforward = feedforward_targets(cfg, targets, structure.family)
    return sum(target_shape(structure, t)[0 if t in feedforward else 1] for t in targets)


# BEiT's and a fused EVA's query and value biases, kept outside their bias-less qkv Linear
SEPARATE_BIASES = ("q_bias", "v_bias")


def is_bias_name(param_name: str) -> bool:
    """A layer's bias, or the q and v biases BEiT and EVA keep beside their qkv (not BEiT's relative
    position bias tables, which are position embeddings)."""
    return param_name == "bias" or param_name in SEPARATE_BIASES


def is_affine_name(param_name: str) -> bool:
    return param_name in ("weight", "bias")


def selected_size(structure: Structure, select: Callable[[Param], bool]) -> int:
    """The parameters outside the head and the modules never called that ``select`` keeps
    (``tuners.selective.selected_names`` on the live model)."""
    unused = tuple(f"{name}." for name in structure.unused)
    return sum(
        p.numel
        for p in structure.params
        if not f"{p.module}.".startswith(unused)
        and not is_head_param(f"{p.module}.{p.name}" if p.module else p.name, structure.head)
        and select(p)
    )


def selecting(select: Callable[[Param], bool], what: str, method: str):
    """The check of a selective method: a ConfigError when ``select`` keeps nothing."""

    def check(structure: Structure, cfg: MethodConfig) -> None:
        if not selected_size(structure, select):
            raise ConfigError(
                f"method.name={method!r} needs a model with {what}; {structure.model_class} has none outside the head"
            )

    return check


def biases(p: Param) -> bool:
    return is_bias_name(p.name)


def layernorms(p: Param) -> bool:
    return p.layernorm and is_affine_name(p.name)


# timm's module and class names of the blocks the hand-written methods know (``tuners.timm_blocks``)
BLOCKS = {
    "timm.models.vision_transformer": "Block",
    "timm.models.eva": "EvaBlock",
    "timm.models.beit": "Block",
    "timm.models.swin_transformer": "SwinTransformerBlock",
}


def check_timm_blocks(structure: Structure, method: str) -> list[str]:
    """The model's block names; a ConfigError unless every block is one of timm's known blocks."""
    if not structure.blocks:
        raise ConfigError(
            f"method.name={method!r} supports timm ViT, EVA, BEiT and Swin models (model.source: timm), "
            f"not {structure.shown_class}"
        )
    unknown = sorted({b.kind for b in structure.blocks if BLOCKS.get(b.module) != b.kind})
    if unknown:
        raise ConfigError(
            f"method.name={method!r} wraps the attn and mlp of timm's ViT, EVA, BEiT and Swin blocks; this "
            f"model's blocks are {', '.join(unknown)}"
        )
    return [b.name for b in structure.blocks]


def check_vpt(structure: Structure, cfg: VPTConfig) -> None:
    check_timm_blocks(structure, "vpt")
    if structure.model_class in REFUSED:
        raise ConfigError(f"method.name='vpt' on {structure.model_class}: {REFUSED[structure.model_class]}")


def vpt_size(structure: Structure, cfg: VPTConfig) -> int:
    """``prompt_tokens`` x d prompts before the first block, and before every other one when deep."""
    return cfg.prompt_tokens * structure.embed_dim * (len(structure.blocks) if cfg.deep else 1)


def adapter_size(structure: Structure, cfg: AdapterConfig) -> int:
    """A bottleneck (d -> b -> d, with biases) at each of the method's places in every block."""
    places = len(ADAPTER_PLACES[cfg.name])
    return sum(places * (2 * b.dim * cfg.bottleneck + cfg.bottleneck + b.dim) for b in structure.blocks)


def check_ssf(structure: Structure, cfg: MethodConfig) -> None:
    check_timm_blocks(structure, "ssf")
    for name, _, affine in structure.norms:
        if not affine and not name.startswith(structure.head):
            raise ConfigError(
                f"method.name='ssf' scales each LayerNorm's affine weight, but {name} has none "
                "(elementwise_affine=False)"
            )


def ssf_size(structure: Structure, cfg: MethodConfig) -> int:
    """A scale and a shift of every output channel of each Linear and LayerNorm outside the head, and
    of the patch embedding's convolution."""
    widths = [m.out_features for m in structure.linears if not m.name.startswith(structure.head)]
    widths += [width for name, width, _ in structure.norms if not name.startswith(structure.head)]
    return 2 * (sum(widths) + (structure.patch_channels or 0))


def check_head(structure: Structure, cfg: MethodConfig) -> None:
    if not structure.trains_head:
        raise ConfigError(
            f"method.name={cfg.name!r} trains a classifier head alone: a causal LM has none to train "
            "(expected model.task classification)"
        )


@dataclass(frozen=True)
class Plan:
    """How a method is checked and sized from a structure. ``trains``: ``adapter`` (its own parameters
    and the head), ``all`` (every weight, as full fine-tuning), ``selected`` (the base's own parameters
    ``selected`` counts, and the head) or ``head`` (the head alone)."""

    check: Callable[[Structure, MethodConfig], object]  # raises ConfigError for what the model refuses
    added: Callable[[Structure, MethodConfig], int]  # the parameters it adds
    ranks: Callable[[Structure, MethodConfig], dict[str, int]] | None = None
    trains: str = "adapter"
    frozen: Callable[[Structure, MethodConfig], int] = lambda structure, cfg: 0  # of those added, frozen ones
    selected: Callable[[Structure, MethodConfig], int] = lambda structure, cfg: 0  # trained in place (selective)


def nothing(structure: Structure, cfg: MethodConfig) -> int:
    return 0


PLANS = {
    "full": Plan(check=nothing, added=nothing, trains="all"),
    "linear": Plan(check=check_head, added=nothing, trains="head"),
    "lora": Plan(check=lora_ranks, added=lora_size, ranks=lora_ranks),
    "dora": Plan(check=lora_ranks, added=dora_size, ranks=lora_ranks),
    # PEFT's AdaLoRA: A (r x in), E (r x 1) and B (out x r) at init_r, and a frozen rank count (1)
    "adalora": Plan(
        check=targets_only,
        added=each_target(lambda i, o, cfg: cfg.init_r * (i + o + 1) + 1),
        ranks=lambda structure, cfg: {t: cfg.init_r for t in plan_targets(structure, cfg)[1]},
        frozen=each_target(lambda i, o, cfg: 1),
    ),
    # PEFT's LoHa on a Linear: two Hadamard factors, each (out x r)(r x in)
    "loha": Plan(
        check=targets_only,
        added=each_target(lambda i, o, cfg: 2 * cfg.r * (i + o)),
        ranks=lambda structure, cfg: {t: cfg.r for t in plan_targets(structure, cfg)[1]},
    ),
    # PEFT's VeRA: the vectors d (r) and b (out) per target; the shared projections are frozen buffers
    "vera": Plan(check=targets_only, added=each_target(lambda i, o, cfg: cfg.r + o)),
    "ia3": Plan(check=ia3_size, added=ia3_size),
    # peftlab's own modules in timm's blocks
    "vpt": Plan(check=check_vpt, added=vpt_size),
    **{
        name: Plan(check=lambda structure, cfg: check_timm_blocks(structure, cfg.name), added=adapter_size)
        for name in ("houlsby", "pfeiffer", "adaptformer")
    },
    "ssf": Plan(check=check_ssf, added=ssf_size),
    # selective: the base's own biases, or its LayerNorms' affine parameters, trained in place
    "bitfit": Plan(
        check=selecting(biases, "bias terms", "bitfit"),
        added=nothing,
        trains="selected",
        selected=lambda structure, cfg: selected_size(structure, biases),
    ),
    "ln": Plan(
        check=selecting(layernorms, "affine LayerNorms", "ln"),
        added=nothing,
        trains="selected",
        selected=lambda structure, cfg: selected_size(structure, layernorms),
    ),
}


def planned(method: MethodConfig, quant: QuantConfig) -> Plan | None:
    """``method``'s plan, where its checks and counts need nothing but the structure (an unquantized base:
    a quantized one is checked against bitsandbytes' layers, live)."""
    plan = PLANS.get(method.name)
    return plan if plan is not None and quant.mode == "none" else None


def check_structure(
    model_cfg: ModelConfig, method: MethodConfig, structure: Structure, num_classes: int
) -> dict[str, int] | None:
    """``tuners.params.check_against_model`` of a planned method (``planned``) on ``structure``: the same
    refusals in the same order (the size bound, the family, the method's check, the applied size) and the
    same ranks."""
    plan = PLANS[method.name]
    refuse_size(model_cfg, method, num_classes, bound_total(structure, method))
    refuse_family(structure.family, structure.model_class, method.name)
    plan.check(structure, method)
    refuse_size(model_cfg, method, num_classes, structure.total + plan.added(structure, method))
    return plan.ranks(structure, method) if plan.ranks else None


def count_structure(model_name: str, method: MethodConfig, structure: Structure, num_classes: int) -> dict:
    """``tuners.params.count_parameters`` of a planned method on ``structure``."""
    plan = PLANS[method.name]
    refuse_family(structure.family, structure.model_class, method.name)
    plan.check(structure, method)
    added = plan.added(structure, method)
    head = structure.head_size if structure.trains_head or plan.trains == "all" else 0
    in_place = {"all": structure.total - head, "selected": plan.selected(structure, method)}.get(plan.trains, 0)
    trainable = in_place + head + (added - plan.frozen(structure, method) if plan.trains == "adapter" else 0)
    total = structure.total + added
    return {
        "model": model_name,
        "method": method.name,
        "num_classes": num_classes,
        "total": total,
        "trainable": trainable,
        "trainable_ratio": trainable / total,
        "adapter": trainable - head if plan.trains == "adapter" else None,
        "in_place": in_place,
        "head": head,
    }
