"""DiffFit has no options of its own: biases, LayerNorms, a scale per residual branch and the head train."""

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.sections import MethodConfig


@dataclass(frozen=True)
class DiffFitConfig(MethodConfig):
    name: str = "difffit"
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = (
        "which trains the base's own biases and LayerNorms in place and folds its "
        "scales into base weights (not supported on a quantized base)"
    )
