"""OFT's method config (PEFT's ``OFTConfig``): a block-diagonal orthogonal rotation of each
target's input; give either the block size or the number of blocks r, not both."""

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field
from peftlab.tuners.targets import ModulesConfig


@dataclass(frozen=True)
class OFTMethodConfig(ModulesConfig):
    name: str = "oft"
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "which peftlab has not tested on a bitsandbytes base (use lora or dora)"
    oft_block_size: int = 32  # size of each orthogonal block (0: set by r)
    r: int = 0  # number of blocks per module (0: set by oft_block_size)
    module_dropout: float = 0.0  # probability of skipping a module's rotation during training
    coft: bool = False  # constrained OFT: the rotation stays within eps of the identity
    eps: float = 6e-5  # COFT's freedom of rotation
    block_share: bool = False  # one rotation block shared by all blocks of a module

    def __post_init__(self):
        super().__post_init__()
        check_field(self.oft_block_size >= 0, "method.oft_block_size", self.oft_block_size, "an integer >= 0")
        check_field(self.r >= 0, "method.r", self.r, "an integer >= 0")
        check_field(
            (self.r == 0) != (self.oft_block_size == 0),
            "method.oft_block_size",
            self.oft_block_size,
            f"0 when method.r is set ({self.r}), and > 0 when it is 0 (r x block size = in_features)",
        )
        check_field(0.0 <= self.module_dropout < 1.0, "method.module_dropout", self.module_dropout, "a value in [0, 1)")
        check_field(self.eps > 0, "method.eps", self.eps, "a number > 0")
