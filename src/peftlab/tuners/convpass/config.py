"""Convpass (Jie & Deng, 2022): a convolutional bypass beside each block's attention and MLP.

Defaults are OSU-MLB/PETL_Vision's (``experiment/config/default_vtab_processed.yml``: ``convpass_bottleneck``
8, ``convpass_scaler`` 10, ``convpass_xavier_init`` false; its VTAB-1k runs searched dim over {8, 16}, scale
over {0.01, 0.1, 1, 10, 100} and both initializations).
"""

import math
from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field
from peftlab.config.sections import MethodConfig


@dataclass(frozen=True)
class ConvpassConfig(MethodConfig):
    name: str = "convpass"
    dim: int = 8  # channels of the bypass: d -> dim, a 3 x 3 convolution over the patch grid, dim -> d (the paper's)
    scale: float = 10.0  # the bypass's output is multiplied by it (the paper's s, PETL_Vision's convpass_scaler)
    # the 3 x 3 convolution's start: false, the identity (its centre taps, as the authors' default); true, Xavier
    xavier_init: bool = False
    dropout: float = 0.1  # dropout before the up-projection (the authors' 0.1)
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "whose bypasses peftlab has not tested on a quantized base"

    def __post_init__(self):
        super().__post_init__()
        check_field(self.dim > 0, "method.dim", self.dim, "an integer > 0")
        check_field(math.isfinite(self.scale) and self.scale > 0, "method.scale", self.scale, "a finite number > 0")
        check_field(0.0 <= self.dropout < 1.0, "method.dropout", self.dropout, "a value in [0, 1)")
