"""LayerNorm tuning has no options of its own: every LayerNorm's affine weight and bias, and the head, train."""

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.sections import MethodConfig


@dataclass(frozen=True)
class LayerNormConfig(MethodConfig):
    name: str = "ln"
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = (
        "which trains the base's own LayerNorms in place (not supported on a quantized base)"
    )
