"""BOFT's method config (PEFT's ``BOFTConfig``): an orthogonal rotation of each target's input, a
product of butterfly-permuted block-diagonal rotations, and a scale per output; give either the
block size or the number of blocks, not both."""

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field
from peftlab.tuners.targets import ModulesConfig


@dataclass(frozen=True)
class BOFTMethodConfig(ModulesConfig):
    name: str = "boft"
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "which peftlab has not tested on a bitsandbytes base (use lora or dora)"
    boft_block_size: int = 4  # size of each orthogonal block (0: set by boft_block_num)
    boft_block_num: int = 0  # number of blocks per module (0: set by boft_block_size)
    boft_n_butterfly_factor: int = 1  # butterfly factors; 1: one block-diagonal rotation (more need PEFT's CUDA kernel)
    boft_dropout: float = 0.0  # probability of replacing an orthogonal block by the identity during training

    def __post_init__(self):
        super().__post_init__()
        check_field(self.boft_block_size >= 0, "method.boft_block_size", self.boft_block_size, "an integer >= 0")
        check_field(self.boft_block_num >= 0, "method.boft_block_num", self.boft_block_num, "an integer >= 0")
        check_field(
            (self.boft_block_num == 0) != (self.boft_block_size == 0),
            "method.boft_block_size",
            self.boft_block_size,
            f"0 when method.boft_block_num is set ({self.boft_block_num}), and > 0 "
            "when it is 0 (blocks x block size = in_features)",
        )
        check_field(
            self.boft_n_butterfly_factor >= 1,
            "method.boft_n_butterfly_factor",
            self.boft_n_butterfly_factor,
            "an integer >= 1",
        )
        check_field(0.0 <= self.boft_dropout < 1.0, "method.boft_dropout", self.boft_dropout, "a value in [0, 1)")
