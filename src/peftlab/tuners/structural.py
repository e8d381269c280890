"""What the methods read of a model's structure (``models.structure``), shared by the live code and the
model records: no torch.

    to_split, targets = plan_targets(structure, cfg)     # fused qkv to split, module names to adapt
    bound = bound_total(structure, method)               # an upper bound of the adapted model's size
    blocks = check_timm_blocks(structure, "ssf")         # timm's blocks, refused in one line otherwise
    size = selected_size(structure, select)              # the base's own parameters a selective method trains

The live code calls these on ``structure_of(model)`` (``tuners.peft_injection``, ``tuners.params``,
``tuners.timm_blocks``, ``tuners.selective``), and ``tuners.plans`` on a model record's structure: one
answer either way.
"""

from __future__ import annotations

from collections.abc import Callable

from peftlab.config.sections import MethodConfig
from peftlab.models.families import canonical_names
from peftlab.models.structure import Param, Structure
from peftlab.tuners.lora.config import LoraMethodConfig, check_patterns
from peftlab.tuners.peft_bridge.config import PeftBridgeConfig
from peftlab.tuners.targets import ModulesConfig, match_targets, target_patterns
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
