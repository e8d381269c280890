"""AdaLoRA's method config (PEFT's ``AdaLoraConfig``; ``total_step`` comes from the run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field, check_steps
from peftlab.tuners.targets import TargetsConfig


@dataclass(frozen=True)
class AdaLoraMethodConfig(TargetsConfig):
    name: str = "adalora"
    quantizable: ClassVar[bool] = False  # PEFT cannot merge AdaLoRA into bitsandbytes layers (it raises)
    init_r: int = 12  # every module starts at this rank
    target_r: int = 8  # mean rank per module at the end: the budget is target_r x adapted modules
    # tinit, tfinal: an integer is a number of optimizer steps, a number below 1 a fraction of the
    # run's steps; the budget falls (cubically) from init_r to target_r between them
    tinit: int | float = 0.1
    tfinal: int | float = 0.2
    deltaT: int = 1  # steps between two reallocations
    beta1: float = 0.85  # smoothing of the sensitivity |p * grad|
    beta2: float = 0.85  # smoothing of its uncertainty
    orth_reg_weight: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        check_field(self.init_r >= 1, "method.init_r", self.init_r, "an integer >= 1")
        check_field(
            1 <= self.target_r < self.init_r,
            "method.target_r",
            self.target_r,
            f"an integer in [1, method.init_r - 1 = {self.init_r - 1}] (AdaLoRA prunes from init_r to "
            "target_r; to keep every rank, use method.name=lora)",
        )
        check_steps(self.tinit, "method.tinit")
        check_steps(self.tfinal, "method.tfinal")
        if isinstance(self.tinit, float) and isinstance(self.tfinal, float):  # steps fit any run (tuners.adalora)
            check_field(
                self.tinit + self.tfinal < 1.0,
                "method.tfinal",
                self.tfinal,
                f"a fraction below 1 - method.tinit = {1.0 - self.tinit:g} (the two phases leave no step to "
                "prune ranks in a run of any length)",
            )
        check_field(self.deltaT >= 1, "method.deltaT", self.deltaT, "an integer >= 1")
        check_field(0.0 < self.beta1 < 1.0, "method.beta1", self.beta1, "a number in (0, 1)")
        check_field(0.0 < self.beta2 < 1.0, "method.beta2", self.beta2, "a number in (0, 1)")
        check_field(
            0.0 <= self.orth_reg_weight < float("inf"),
            "method.orth_reg_weight",
            self.orth_reg_weight,
            "a finite number >= 0",
        )
