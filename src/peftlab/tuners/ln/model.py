"""LayerNorm tuning (as in Basu et al., AAAI 2024): only the LayerNorms' affine parameters
(gamma and beta) and the head train. As for BitFit the trained model is the merged model."""

from torch import nn

from peftlab.models.backbones import head_prefix
from peftlab.tuners.base import TunerContext
from peftlab.tuners.ln.config import LayerNormConfig
from peftlab.tuners.selective import SelectiveTuner, is_layernorm_affine, selected_names, train_only
from peftlab.utils.errors import ConfigError


class LayerNormTuner(SelectiveTuner):
    name = "ln"


def check(model: nn.Module, cfg: LayerNormConfig, ctx: TunerContext) -> None:
    if not selected_names(model, is_layernorm_affine):
        raise ConfigError(
            f"method.name='ln' needs a model with affine LayerNorms; {type(model).__name__} has none outside the head"
        )


def apply(model: nn.Module, cfg: LayerNormConfig, ctx: TunerContext) -> LayerNormTuner:
    train_only(model, selected_names(model, is_layernorm_affine))
    return LayerNormTuner(model, head_prefix(model))
