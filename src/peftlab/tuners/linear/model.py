"""Linear probe: only the classifier head trains (on a quantized base if ``quant.mode`` says so)."""

from torch import nn

from peftlab.models.backbones import head_prefix, trains_head
from peftlab.quant.bases import quantize_base
from peftlab.tuners.base import Tuner, TunerContext
from peftlab.tuners.linear.config import LinearConfig
from peftlab.utils.errors import ConfigError


class LinearTuner(Tuner):
    name = "linear"


def check(model: nn.Module, cfg: LinearConfig, ctx: TunerContext) -> None:
    if not trains_head(model):
        raise ConfigError(
            "method.name='linear' trains a classifier head alone: a causal LM has none to train "
            "(expected model.task classification)"
        )


def apply(model: nn.Module, cfg: LinearConfig, ctx: TunerContext) -> LinearTuner:
    head = head_prefix(model)
    quantize_base(model, ctx.quant, ctx.device)
    model.requires_grad_(False)
    model.get_submodule(head).requires_grad_(True)
    return LinearTuner(model, head)
