"""LoRA's method config, its target presets and the translation into PEFT's LoraConfig.

Module names are those of the model after timm's fused ``qkv`` is split (see layer.py):
``blocks.N.attn.qkv.{q,k,v}``, ``blocks.N.attn.proj``, ``blocks.N.mlp.{fc1,fc2}``. Every
pattern is a regular expression that must match a whole module name, so the patch
embedding (``patch_embed.proj``) and the head are never caught by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from peftlab.config import MethodConfig, check_field, check_regex
from peftlab.errors import ConfigError

TARGET_PRESETS = ("standard", "extended", "all-linear")


@dataclass(frozen=True)
class LoraMethodConfig(MethodConfig):
    name: str = "lora"
    r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    init: Literal["default", "gaussian"] = "default"
    # a preset (standard = q,v; extended = q,k,v,proj; all-linear) or a list of module
    # names / anchored regexes
    target_modules: str | tuple[str, ...] = "standard"
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        check_field(self.r > 0, "method.r", self.r, "an integer > 0")
        check_field(self.lora_alpha > 0, "method.lora_alpha", self.lora_alpha, "a number > 0")
        check_field(0.0 <= self.lora_dropout < 1.0, "method.lora_dropout", self.lora_dropout, "a value in [0, 1)")
        if isinstance(self.target_modules, str):
            check_field(self.target_modules in TARGET_PRESETS, "method.target_modules", self.target_modules,
                   "one of " + ", ".join(TARGET_PRESETS) + " or a list of module names/regexes")
        else:
            check_field(len(self.target_modules) > 0, "method.target_modules", list(self.target_modules),
                   "a non-empty list")
            for pattern in self.target_modules:
                check_regex("method.target_modules", pattern)
        for key, rank in self.rank_pattern.items():
            check_regex("method.rank_pattern", key)
            check_field(rank > 0, f"method.rank_pattern[{key!r}]", rank, "an integer > 0")
        for key, alpha in self.alpha_pattern.items():
            check_regex("method.alpha_pattern", key)
            check_field(alpha > 0, f"method.alpha_pattern[{key!r}]", alpha, "a number > 0")


TIMM_PRESETS = {
    "standard": [r"blocks\.\d+\.attn\.qkv\.(q|v)"],
    "extended": [r"blocks\.\d+\.attn\.qkv\.(q|k|v)", r"blocks\.\d+\.attn\.proj"],
    "all-linear": [r"blocks\.\d+\.attn\.qkv\.(q|k|v)", r"blocks\.\d+\.attn\.proj", r"blocks\.\d+\.mlp\.(fc1|fc2)"],
}
HF_PRESETS = {
    "standard": [r".*\.layers\.\d+\.attention\.(q_proj|v_proj)"],
    "extended": [r".*\.layers\.\d+\.attention\.(q_proj|k_proj|v_proj|o_proj)"],
    "all-linear": [r".*\.layers\.\d+\.attention\.(q_proj|k_proj|v_proj|o_proj)", r".*\.layers\.\d+\.mlp\.(fc1|fc2)"],
}


def target_patterns(cfg: LoraMethodConfig, hf: bool) -> list[str]:
    if isinstance(cfg.target_modules, str):
        return (HF_PRESETS if hf else TIMM_PRESETS)[cfg.target_modules]
    return list(cfg.target_modules)


def match_targets(patterns: list[str], linear_names: list[str]) -> list[str]:
    """Names of Linear modules that some pattern matches whole; each pattern must match one."""
    matched = []
    for pattern in patterns:
        hits = [n for n in linear_names if re.fullmatch(pattern, n)]
        if not hits:
            raise ConfigError(f"method.target_modules entry {pattern!r} matches no Linear module of the model "
                              f"(examples: {', '.join(linear_names[:4])})")
        matched.extend(h for h in hits if h not in matched)
    return matched


def pattern_matches(key: str, name: str) -> bool:
    """PEFT's rule for rank_pattern / alpha_pattern keys: ``(.*\\.)?(key)$`` against a module name."""
    return re.match(rf"(.*\.)?({key})$", name) is not None


def check_patterns(cfg: LoraMethodConfig, targets: list[str]) -> None:
    """PEFT silently ignores pattern keys that match nothing; peftlab refuses them."""
    for field_name, patterns in (("rank_pattern", cfg.rank_pattern), ("alpha_pattern", cfg.alpha_pattern)):
        for key in patterns:
            if not any(pattern_matches(key, name) for name in targets):
                raise ConfigError(f"method.{field_name} key {key!r} matches no adapted module "
                                  f"(adapted: {', '.join(targets[:4])}{', ...' if len(targets) > 4 else ''})")


def lora_config_kwargs(cfg: LoraMethodConfig, targets: list[str], head: str) -> dict:
    """Keyword arguments for ``peft.LoraConfig``."""
    return {
        "r": cfg.r,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "init_lora_weights": True if cfg.init == "default" else cfg.init,
        # an exact, anchored alternation of the modules found (PEFT full-matches a string)
        "target_modules": "|".join(re.escape(t) for t in targets),
        "rank_pattern": dict(cfg.rank_pattern),
        "alpha_pattern": dict(cfg.alpha_pattern),
        "modules_to_save": [head.rpartition(".")[2]],
        "bias": "none",
    }
