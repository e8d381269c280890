"""LoKr's method config (PEFT's ``LoKrConfig``): the update is a Kronecker product w1 ⊗ w2, the
larger factor w2 itself of rank r when r is below half its size."""

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field
from peftlab.tuners.loha.config import check_rank_options
from peftlab.tuners.targets import ModulesConfig


@dataclass(frozen=True)
class LoKrMethodConfig(ModulesConfig):
    name: str = "lokr"
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "for which PEFT has no bitsandbytes layers (use lora or dora)"
    r: int = 8  # rank of the low-rank Kronecker factor(s)
    alpha: float = 8.0  # the update is scaled by alpha / r
    rank_dropout: float = 0.0  # dropout of whole ranks during training
    module_dropout: float = 0.0  # probability of skipping a module's update during training
    decompose_both: bool = False  # the small factor w1 low-rank too
    decompose_factor: int = -1  # -1: split each dimension into the two factors closest to its square root

    def __post_init__(self):
        super().__post_init__()
        check_rank_options(self)
        check_field(
            self.decompose_factor == -1 or self.decompose_factor > 0,
            "method.decompose_factor",
            self.decompose_factor,
            "-1 or an integer > 0",
        )
