"""LoHa's method config (PEFT's ``LoHaConfig``): the update is the Hadamard product of two rank-r products."""

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field
from peftlab.tuners.targets import ModulesConfig


@dataclass(frozen=True)
class LoHaMethodConfig(ModulesConfig):
    name: str = "loha"
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "for which PEFT has no bitsandbytes layers (use lora or dora)"
    r: int = 8  # rank of each of the two factor products
    alpha: float = 8.0  # the update is scaled by alpha / r
    rank_dropout: float = 0.0  # dropout of whole ranks during training
    module_dropout: float = 0.0  # probability of skipping a module's update during training

    def __post_init__(self):
        super().__post_init__()
        check_rank_options(self)


def check_rank_options(cfg) -> None:
    """LoHa's and LoKr's shared options."""
    check_field(cfg.r > 0, "method.r", cfg.r, "an integer > 0")
    check_field(cfg.alpha > 0, "method.alpha", cfg.alpha, "a number > 0")
    check_field(0.0 <= cfg.rank_dropout < 1.0, "method.rank_dropout", cfg.rank_dropout, "a value in [0, 1)")
    check_field(0.0 <= cfg.module_dropout < 1.0, "method.module_dropout", cfg.module_dropout, "a value in [0, 1)")
