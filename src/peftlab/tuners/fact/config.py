"""FacT (Jie & Deng, AAAI 2023): every block's weight updates factorized through factors the blocks share.

Two forms, one registry row each: ``fact_tt`` (tensor-train: a core per weight matrix) and ``fact_tk``
(Tucker: one core tensor and a coefficient per weight matrix). The defaults are OSU-MLB/PETL_Vision's
(``experiment/config/default_vtab_processed.yml``: ``fact_dim`` 8, ``fact_scaler`` 1; its VTAB-1k runs searched
TT over r in {8, 16, 32} and TK over r in {16, 32, 64}, s over {0.01, 0.1, 1, 10, 100}): TT starts at r = 8,
TK at r = 16, the smallest rank of its own search (its file's 8 is a rank its TK runs never used).
"""

import math
from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field
from peftlab.config.sections import MethodConfig


@dataclass(frozen=True)
class FacTConfig(MethodConfig):
    """What both forms have: the rank of the shared factors, the scale of the update, its dropout."""

    # rank of the factors U (d -> r) and V (r -> d) every block shares (the paper's r, PETL_Vision's fact_dim)
    r: int = 8
    scale: float = 1.0  # the update is multiplied by it (the paper's s, PETL_Vision's fact_scaler)
    dropout: float = 0.1  # dropout on the r-wide path between the core and V (the authors' 0.1)
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "whose merge writes into each base weight (not supported on a quantized base)"

    def __post_init__(self):
        super().__post_init__()
        check_field(self.r > 0, "method.r", self.r, "an integer > 0")
        check_field(math.isfinite(self.scale) and self.scale > 0, "method.scale", self.scale, "a finite number > 0")
        check_field(0.0 <= self.dropout < 1.0, "method.dropout", self.dropout, "a value in [0, 1)")


@dataclass(frozen=True)
class FacTTTConfig(FacTConfig):
    """FacT-TT: per block, a core of its own for each of q, k, v, proj, fc1 and fc2."""

    name: str = "fact_tt"


@dataclass(frozen=True)
class FacTTKConfig(FacTConfig):
    """FacT-TK: one r x r x r core tensor and, per weight matrix, an r-vector of coefficients over it."""

    name: str = "fact_tk"
    r: int = 16  # rank of the shared factors U, V and of the r x r x r core (16: the smallest TK rank PETL_Vision ran)
