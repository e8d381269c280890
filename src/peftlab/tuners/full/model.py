"""Full fine-tuning: every weight trains."""

from torch import nn

from peftlab.config import MethodConfig
from peftlab.tuners.base import Tuner, head_prefix


class FullTuner(Tuner):
    name = "full"


def apply_full(model: nn.Module, cfg: MethodConfig) -> FullTuner:
    model.requires_grad_(True)
    return FullTuner(model, head_prefix(model))
