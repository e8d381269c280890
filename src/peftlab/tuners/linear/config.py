"""The linear probe has no options of its own: only the head trains."""

from dataclasses import dataclass

from peftlab.config.sections import MethodConfig


@dataclass(frozen=True)
class LinearConfig(MethodConfig):
    name: str = "linear"
