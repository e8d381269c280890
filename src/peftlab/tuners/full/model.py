"""Full fine-tuning: every weight trains."""

from torch import nn

from peftlab.models.backbones import head_prefix
from peftlab.tuners.base import Tuner, TunerContext
from peftlab.tuners.full.config import FullConfig


class FullTuner(Tuner):
    name = "full"


def check(model: nn.Module, cfg: FullConfig, ctx: TunerContext) -> None:
    return None  # a quantized base is refused by the config itself (FullConfig.quantizable)


def apply(model: nn.Module, cfg: FullConfig, ctx: TunerContext) -> FullTuner:
    model.requires_grad_(True)
    return FullTuner(model, head_prefix(model))
