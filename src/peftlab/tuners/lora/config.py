"""LoRA's method config, its target presets and the translation into PEFT's LoraConfig.

Module names are those of the model after timm's fused ``qkv`` is split (see layer.py):
``blocks.N.attn.qkv.{q,k,v}``, ``blocks.N.attn.proj``, ``blocks.N.mlp.{fc1,fc2}``. Every
pattern is a regular expression that must match a whole module name, so the patch
embedding (``patch_embed.proj``) and the head are never caught by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from peftlab.config_checks import NAME_SUFFIX, check_field, check_regex
from peftlab.config_sections import MethodConfig
from peftlab.errors import ConfigError
from peftlab.tuners.ranks import read_importance, static_ranks

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


@dataclass(frozen=True)
class ModulesConfig(MethodConfig):
    """What every PEFT-backed method has: which modules it adapts. A method whose presets mean
    other places (IA3's paper adapts k, v and fc2) names its own in the class variables."""

    timm_presets: ClassVar[dict[str, list[str]]] = TIMM_PRESETS
    hf_presets: ClassVar[dict[str, list[str]]] = HF_PRESETS
    presets_help: ClassVar[str] = "standard (q, v), extended (q, k, v, proj), all-linear"
    # a preset (standard = q,v; extended = q,k,v,proj; all-linear) or a list of module
    # names / anchored regexes
    target_modules: str | tuple[str, ...] = "standard"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.target_modules, str):
            check_field(self.target_modules in self.timm_presets, "method.target_modules", self.target_modules,
                        f"one of {self.presets_help} or a list of module names/regexes")
        else:
            check_field(len(self.target_modules) > 0, "method.target_modules", list(self.target_modules),
                   "a non-empty list")
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


@dataclass(frozen=True)
class LoraMethodConfig(TargetsConfig):
    name: str = "lora"
    r: int = 8
    init: Literal["default", "gaussian"] = "default"
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    # static per-module ranks (tuners/ranks.py): a strategy spreads a total budget
    # (default r x adapted modules, so strategies compare at equal parameter counts)
    rank_strategy: Literal["uniform", "linear_decay", "linear_increase", "attention_heavy", "empirical"] = "uniform"
    rank_budget: int | None = None
    min_rank: int = 1
    max_rank: int | None = None  # None: no cap below the budget
    importance_from: str | None = None  # empirical: a run directory (or its importance.jsonl)

    def __post_init__(self):
        super().__post_init__()
        check_field(self.r > 0, "method.r", self.r, "an integer > 0")
        for key, rank in self.rank_pattern.items():
            check_regex("method.rank_pattern", key, NAME_SUFFIX)
            check_field(rank > 0, f"method.rank_pattern[{key!r}]", rank, "an integer > 0")
        for key, alpha in self.alpha_pattern.items():
            check_regex("method.alpha_pattern", key, NAME_SUFFIX)
            check_field(alpha > 0, f"method.alpha_pattern[{key!r}]", alpha, "a number > 0")
        check_field(self.min_rank >= 1, "method.min_rank", self.min_rank, "an integer >= 1")
        check_field(self.max_rank is None or self.max_rank >= self.min_rank, "method.max_rank", self.max_rank,
                    f"null or an integer >= method.min_rank ({self.min_rank})")
        check_field(self.rank_budget is None or self.rank_budget >= 1, "method.rank_budget", self.rank_budget,
                    "null or an integer >= 1")
        check_field((self.rank_strategy == "empirical") == (self.importance_from is not None),
                    "method.importance_from", self.importance_from,
                    "a run directory when rank_strategy is 'empirical', and null otherwise")
        if self.rank_pattern and self.static_allocation:
            raise ConfigError("method.rank_pattern and method.rank_strategy/rank_budget both set ranks; use one")

    @property
    def static_allocation(self) -> bool:
        """True when a strategy (not r alone, nor rank_pattern) decides the ranks."""
        return self.rank_strategy != "uniform" or self.rank_budget is not None


def resolve_steps(value: int | float, total: int, field_name: str) -> int:
    """An integer is a number of optimizer steps; a number below 1 a fraction of the run's steps."""
    if isinstance(value, float):
        return int(round(value * total))
    return int(value)


def check_steps(value: int | float, field_name: str) -> None:
    if isinstance(value, float):
        check_field(0.0 <= value < 1.0, field_name, value, "an integer number of steps >= 0 or a fraction in [0, 1)")
    else:
        check_field(value >= 0, field_name, value, "an integer number of steps >= 0 or a fraction in [0, 1)")


def target_patterns(cfg: ModulesConfig, hf: bool) -> list[str]:
    if not isinstance(cfg.target_modules, str):
        return list(cfg.target_modules)
    presets = cfg.hf_presets if hf else cfg.timm_presets
    if cfg.target_modules not in presets:
        raise ConfigError(f"method.target_modules={cfg.target_modules!r} names no modules of an HF model for "
                          f"{cfg.name}; give a list of module names/regexes")
    return presets[cfg.target_modules]


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
    return re.match(NAME_SUFFIX.replace("{}", key), name) is not None


def check_patterns(cfg: LoraMethodConfig, targets: list[str]) -> None:
    """PEFT silently ignores pattern keys that match nothing; peftlab refuses them."""
    for field_name, patterns in (("rank_pattern", cfg.rank_pattern), ("alpha_pattern", cfg.alpha_pattern)):
        for key in patterns:
            if not any(pattern_matches(key, name) for name in targets):
                raise ConfigError(f"method.{field_name} key {key!r} matches no adapted module "
                                  f"(adapted: {', '.join(targets[:4])}{', ...' if len(targets) > 4 else ''})")


def lora_config_kwargs(cfg: LoraMethodConfig, targets: list[str], head: str) -> dict:
    """Keyword arguments for ``peft.LoraConfig``; a static strategy's ranks become an exact rank_pattern."""
    rank_pattern = dict(cfg.rank_pattern)
    if cfg.static_allocation:
        rank_pattern = {re.escape(name): rank for name, rank in module_ranks(cfg, targets).items()}
    return {
        "r": cfg.r,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "init_lora_weights": True if cfg.init == "default" else cfg.init,
        # an exact, anchored alternation of the modules found (PEFT full-matches a string)
        "target_modules": "|".join(re.escape(t) for t in targets),
        "rank_pattern": rank_pattern,
        "alpha_pattern": dict(cfg.alpha_pattern),
        "modules_to_save": [head.rpartition(".")[2]],
        "bias": "none",
    }


def module_ranks(cfg: LoraMethodConfig, targets: list[str]) -> dict[str, int]:
    """The rank each adapted module gets: the static strategy's allocation, or r and rank_pattern
    resolved by PEFT's rule (the first pattern key that matches, else r)."""
    if cfg.static_allocation:
        budget = cfg.rank_budget if cfg.rank_budget is not None else cfg.r * len(targets)
        importance = read_importance(cfg.importance_from) if cfg.rank_strategy == "empirical" else None
        return static_ranks(cfg.rank_strategy, targets, budget, cfg.min_rank, cfg.max_rank or budget, importance)
    ranks = {}
    for name in targets:
        key = next((k for k in cfg.rank_pattern if pattern_matches(k, name)), None)
        ranks[name] = cfg.rank_pattern[key] if key is not None else cfg.r
    return ranks
