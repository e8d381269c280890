"""BitFit (Ben Zaken et al., 2022): only the bias terms of the backbone and the head train.

The trained model is itself the merged model, as for full fine-tuning: nothing to fold, and
``export --merged`` writes it as a plain timm (or HF) model.
"""

from torch import nn

from peftlab.models.backbones import head_prefix
from peftlab.tuners.base import TunerContext
from peftlab.tuners.bitfit.config import BitFitConfig
from peftlab.tuners.selective import SelectiveTuner, is_bias, selected_names, train_only
from peftlab.utils.errors import ConfigError


class BitFitTuner(SelectiveTuner):
    name = "bitfit"


def check(model: nn.Module, cfg: BitFitConfig, ctx: TunerContext) -> None:
    if not selected_names(model, is_bias):
        raise ConfigError(
            f"method.name='bitfit' needs a model with bias terms; {type(model).__name__} has none outside the head"
        )


def apply(model: nn.Module, cfg: BitFitConfig, ctx: TunerContext) -> BitFitTuner:
    train_only(model, selected_names(model, is_bias))
    return BitFitTuner(model, head_prefix(model))
