"""RepAdapter (Luo et al., 2023, "Towards Efficient Visual Adaption via Structural Re-parameterization").

Defaults are OSU-MLB/PETL_Vision's (``experiment/config/default_vtab_processed.yml``: ``repadapter_bottleneck``
8, ``repadapter_group`` 2, ``repadapter_scaler`` 1; its VTAB-1k runs searched dim over {8, 16, 32} and scale over
{0.1, 0.5, 1, 5, 10}), which are also the authors' (luogen1996/RepAdapter: hidden_dim 8, groups 2, scale 1).
"""

import math
from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field
from peftlab.config.sections import MethodConfig


@dataclass(frozen=True)
class RepAdapterConfig(MethodConfig):
    name: str = "repadapter"
    dim: int = 8  # hidden width of each adapter: conv_A d -> dim, conv_B dim -> d (the paper's hidden dimension)
    groups: int = 2  # groups of conv_B, the up-projection (the paper's group-wise transformation)
    scale: float = 1.0  # the adapter's output is multiplied by it (the paper's s, PETL_Vision's repadapter_scaler)
    dropout: float = 0.1  # dropout between conv_A and conv_B (the authors' 0.1)
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "whose merge writes into each base weight (not supported on a quantized base)"

    def __post_init__(self):
        super().__post_init__()
        check_field(self.dim > 0, "method.dim", self.dim, "an integer > 0")
        check_field(
            self.groups > 0 and self.dim % self.groups == 0,
            "method.groups",
            self.groups,
            f"a divisor of method.dim={self.dim}",
        )
        check_field(math.isfinite(self.scale) and self.scale > 0, "method.scale", self.scale, "a finite number > 0")
        check_field(0.0 <= self.dropout < 1.0, "method.dropout", self.dropout, "a value in [0, 1)")
