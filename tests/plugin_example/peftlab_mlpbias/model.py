from torch import nn

from peftlab.models.backbones import head_prefix
from peftlab.tuners.selective import SelectiveTuner, selected_names, train_only
from peftlab.utils.errors import ConfigError


class MlpBiasTuner(SelectiveTuner):
    name = "mlp_bias"


def mlp_biases(model: nn.Module, layers: str) -> list[str]:
    wanted = ("fc1", "fc2") if layers == "both" else (layers,)
    return selected_names(model, lambda module, _, param: param == "bias" and module.rsplit(".", 1)[-1] in wanted)


def check(model, cfg, ctx) -> None:
    if not mlp_biases(model, cfg.layers):
        raise ConfigError(f"method.name='mlp_bias' needs MLP Linears with biases; {type(model).__name__} has none")


def apply(model, cfg, ctx) -> MlpBiasTuner:
    train_only(model, mlp_biases(model, cfg.layers))
    return MlpBiasTuner(model, head_prefix(model))
