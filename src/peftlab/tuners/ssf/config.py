"""SSF has no options of its own: a scale and a shift after every Linear, LayerNorm and the patch embedding."""

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.sections import MethodConfig


@dataclass(frozen=True)
class SSFConfig(MethodConfig):
    name: str = "ssf"
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = (
        "whose merge folds the scale into each base weight (not supported on a quantized base)"
    )
