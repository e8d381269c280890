"""LoRA's method config, its rank and alpha patterns and the translation into PEFT's LoraConfig.

Targets and presets are every PEFT-backed method's (tuners/targets.py); ``rank_pattern`` and
``alpha_pattern`` keys follow PEFT's rule and must each match an adapted module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from peftlab.config.checks import NAME_SUFFIX, check_field, check_regex
from peftlab.tuners.ranks import read_importance, static_ranks
from peftlab.tuners.targets import TargetsConfig
from peftlab.utils.errors import ConfigError


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
        check_field(
            self.max_rank is None or self.max_rank >= self.min_rank,
            "method.max_rank",
            self.max_rank,
            f"null or an integer >= method.min_rank ({self.min_rank})",
        )
        check_field(
            self.rank_budget is None or self.rank_budget >= 1,
            "method.rank_budget",
            self.rank_budget,
            "null or an integer >= 1",
        )
        check_field(
            (self.rank_strategy == "empirical") == (self.importance_from is not None),
            "method.importance_from",
            self.importance_from,
            "a run directory when rank_strategy is 'empirical', and null otherwise",
        )
        if self.rank_pattern and self.static_allocation:
            raise ConfigError("method.rank_pattern and method.rank_strategy/rank_budget both set ranks; use one")

    @property
    def static_allocation(self) -> bool:
        """True when a strategy (not r alone, nor rank_pattern) decides the ranks."""
        return self.rank_strategy != "uniform" or self.rank_budget is not None


def pattern_matches(key: str, name: str) -> bool:
    """PEFT's rule for rank_pattern / alpha_pattern keys: ``(.*\\.)?(key)$`` against a module name."""
    return re.match(NAME_SUFFIX.replace("{}", key), name) is not None


def check_patterns(cfg: LoraMethodConfig, targets: list[str]) -> None:
    """PEFT silently ignores pattern keys that match nothing; peftlab refuses them."""
    for field_name, patterns in (("rank_pattern", cfg.rank_pattern), ("alpha_pattern", cfg.alpha_pattern)):
        for key in patterns:
            if not any(pattern_matches(key, name) for name in targets):
                raise ConfigError(
                    f"method.{field_name} key {key!r} matches no adapted module "
                    f"(adapted: {', '.join(targets[:4])}{', ...' if len(targets) > 4 else ''})"
                )


def lora_config_kwargs(cfg: LoraMethodConfig, targets: list[str], modules_to_save: list[str] | None) -> dict:
    """Keyword arguments for ``peft.LoraConfig``; a static strategy's ranks become an exact rank_pattern;
    ``modules_to_save`` the head (InjectionPlan's: none for a causal LM)."""
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
        "modules_to_save": modules_to_save,
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
