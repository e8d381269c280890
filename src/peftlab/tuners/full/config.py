"""Full fine-tuning has no options of its own."""

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.sections import MethodConfig


@dataclass(frozen=True)
class FullConfig(MethodConfig):
    name: str = "full"
    quantizable: ClassVar[bool] = False  # every base weight trains: nothing to quantize
