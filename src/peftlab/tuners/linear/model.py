"""Linear probe: only the classifier head trains."""

from torch import nn

from peftlab.config import MethodConfig
from peftlab.tuners.base import Tuner, head_prefix


class LinearTuner(Tuner):
    name = "linear"


def apply_linear(model: nn.Module, cfg: MethodConfig) -> LinearTuner:
    head = head_prefix(model)
    model.requires_grad_(False)
    model.get_submodule(head).requires_grad_(True)
    return LinearTuner(model, head)
