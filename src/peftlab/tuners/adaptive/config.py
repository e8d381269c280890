"""The ``adaptive`` method's config: LoRA whose per-module ranks a controller moves during training.

The adapters are built at ``max_rank``; every ``interval`` steps between ``warmup`` and
``final_step`` the controller scores each module (``importance``) and spreads the total
rank ``budget`` over the modules (``allocation``), within [min_rank, max_rank]. Step counts
are integers, or numbers below 1 for a fraction of the run's optimizer steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from peftlab.config.checks import check_field, check_steps
from peftlab.tuners.targets import TargetsConfig

IMPORTANCES = ("magnitude", "grad_norm", "fisher", "sensitivity")
ALLOCATIONS = ("proportional", "threshold", "top_k")


@dataclass(frozen=True)
class AdaptiveConfig(TargetsConfig):
    name: str = "adaptive"
    r: int = 8  # the mean rank: budget = r x adapted modules, scaling = lora_alpha / r (as LoRA at rank r)
    budget: int | None = None  # total rank over all modules (None: r x adapted modules)
    min_rank: int = 1
    max_rank: int | None = None  # the adapters' built rank (None: 2 r)
    init: Literal["default", "gaussian"] = "default"
    importance: Literal["magnitude", "grad_norm", "fisher", "sensitivity"] = "sensitivity"
    allocation: Literal["proportional", "threshold", "top_k"] = "proportional"
    quantile: float = 0.25  # threshold: modules below this quantile of importance drop to min_rank
    top_k: int | None = None  # top_k: how many modules get max_rank (None: as many as the budget holds)
    warmup: int | float = 0.2  # steps at max_rank before the first allocation
    interval: int | float = 0.1  # steps between two allocations
    final_step: int | float = 0.8  # no reallocation after this step: the ranks are frozen
    beta: float = 0.85  # moving average of the importance (sensitivity: of |p * grad|)
    beta2: float = 0.85  # sensitivity: moving average of its uncertainty

    def __post_init__(self):
        super().__post_init__()
        check_field(self.r >= 1, "method.r", self.r, "an integer >= 1")
        check_field(self.min_rank >= 1, "method.min_rank", self.min_rank, "an integer >= 1")
        check_field(
            self.max_rank is None or self.max_rank >= max(self.min_rank, self.r),
            "method.max_rank",
            self.max_rank,
            f"null or an integer >= method.r ({self.r}) and >= method.min_rank ({self.min_rank})",
        )
        check_field(self.budget is None or self.budget >= 1, "method.budget", self.budget, "null or an integer >= 1")
        check_field(0.0 < self.quantile < 1.0, "method.quantile", self.quantile, "a number in (0, 1)")
        check_field(self.top_k is None or self.top_k >= 1, "method.top_k", self.top_k, "null or an integer >= 1")
        for field_name in ("warmup", "interval", "final_step"):
            check_steps(getattr(self, field_name), f"method.{field_name}")
        check_field(self.interval != 0, "method.interval", self.interval, "at least one step (or a fraction > 0)")
        check_field(0.0 < self.beta < 1.0, "method.beta", self.beta, "a number in (0, 1)")
        check_field(0.0 < self.beta2 < 1.0, "method.beta2", self.beta2, "a number in (0, 1)")

    @property
    def built_rank(self) -> int:
        return self.max_rank if self.max_rank is not None else 2 * self.r
