"""BitFit has no options of its own: every bias and the head train."""

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.sections import MethodConfig


@dataclass(frozen=True)
class BitFitConfig(MethodConfig):
    name: str = "bitfit"
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = (
        "which trains the base's own biases in place (not supported on a quantized base)"
    )
