"""Which modules a method adapts: the target presets, the configs that hold them and their matching.

A preset is written in the names of timm's ViT after its fused ``qkv`` is split (tuners/modules.py):
``blocks.N.attn.qkv.{q,k,v}``, ``blocks.N.attn.proj``, ``blocks.N.mlp.{fc1,fc2}``, and matched against
each layer's canonical name (``peftlab.models.families``: EVA's ``q_proj``, Swin's stages, an HF model's
``layer.N.attention.q_proj``), so it means the same layers on every family. A list of names is matched
against the model's own names. Every pattern is a regular expression that must match a whole module
name, so the patch embedding (``patch_embed.proj``) and the head are never caught by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field, check_regex
from peftlab.config.sections import MethodConfig
from peftlab.utils.errors import ConfigError

PRESETS = {
    "standard": [r"blocks\.\d+\.attn\.qkv\.(q|v)"],
    "extended": [r"blocks\.\d+\.attn\.qkv\.(q|k|v)", r"blocks\.\d+\.attn\.proj"],
    "all-linear": [r"blocks\.\d+\.attn\.qkv\.(q|k|v)", r"blocks\.\d+\.attn\.proj", r"blocks\.\d+\.mlp\.(fc1|fc2)"],
}


@dataclass(frozen=True)
class ModulesConfig(MethodConfig):
    """What every PEFT-backed method has: which modules it adapts. A method whose presets mean
    other places (IA3's paper adapts k, v and fc2) names its own in the class variables."""

    presets: ClassVar[dict[str, list[str]]] = PRESETS
    presets_help: ClassVar[str] = "standard (q, v), extended (q, k, v, proj), all-linear"
    # a preset (standard = q,v; extended = q,k,v,proj; all-linear) or a list of module
    # names / anchored regexes
    target_modules: str | tuple[str, ...] = "standard"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.target_modules, str):
            check_field(
                self.target_modules in self.presets,
                "method.target_modules",
                self.target_modules,
                f"one of {self.presets_help} or a list of module names/regexes",
            )
        else:
            check_field(
                len(self.target_modules) > 0, "method.target_modules", list(self.target_modules), "a non-empty list"
            )
            for pattern in self.target_modules:
                check_regex("method.target_modules", pattern)


@dataclass(frozen=True)
class TargetsConfig(ModulesConfig):
    """What every LoRA-like method has beyond its modules: LoRA's alpha and dropout."""

    lora_alpha: float = 16.0
    lora_dropout: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        check_field(self.lora_alpha > 0, "method.lora_alpha", self.lora_alpha, "a number > 0")
        check_field(0.0 <= self.lora_dropout < 1.0, "method.lora_dropout", self.lora_dropout, "a value in [0, 1)")


def target_patterns(cfg: ModulesConfig) -> list[str]:
    """The patterns of a preset (to match canonical names) or the configured list (the model's own names)."""
    return cfg.presets[cfg.target_modules] if isinstance(cfg.target_modules, str) else list(cfg.target_modules)


def match_targets(patterns: list[str], linear_names: list[str]) -> list[str]:
    """Names of Linear modules that some pattern matches whole; each pattern must match one."""
    matched = []
    for pattern in patterns:
        hits = [n for n in linear_names if re.fullmatch(pattern, n)]
        if not hits:
            raise ConfigError(
                f"method.target_modules entry {pattern!r} matches no Linear module of the model "
                f"(examples: {', '.join(linear_names[:4])})"
            )
        matched.extend(h for h in hits if h not in matched)
    return matched
