"""VeRA's method config (PEFT's ``VeraConfig``): one pair of frozen random projections shared by
every adapted layer, and two trainable scaling vectors per layer."""

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field
from peftlab.tuners.targets import ModulesConfig


@dataclass(frozen=True)
class VeraMethodConfig(ModulesConfig):
    name: str = "vera"
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "which peftlab has not tested on a bitsandbytes base (use lora or dora)"
    r: int = 256  # rank of the shared frozen projections A (r x in) and B (out x r)
    vera_dropout: float = 0.0  # dropout on the adapter's input
    d_initial: float = 0.1  # start value of the trainable vector d (b starts at 0: the base model)
    projection_prng_key: int = 0  # seed of the shared random projections (saved with the adapter)

    def __post_init__(self):
        super().__post_init__()
        check_field(self.r > 0, "method.r", self.r, "an integer > 0")
        check_field(0.0 <= self.vera_dropout < 1.0, "method.vera_dropout", self.vera_dropout, "a value in [0, 1)")
        check_field(self.d_initial > 0, "method.d_initial", self.d_initial, "a number > 0")
        check_field(
            self.projection_prng_key >= 0, "method.projection_prng_key", self.projection_prng_key, "an integer >= 0"
        )
