"""The TUNERS registry: method name -> ``apply(model, method_config) -> Tuner``.

Adding a method means one folder (config, layer, model), one line here and one row in the
table-driven tests.
"""

from __future__ import annotations

from torch import nn

from peftlab.config import METHOD_NAMES, QuantConfig, RunConfig
from peftlab.errors import ConfigError
from peftlab.tuners.base import Tuner
from peftlab.tuners.full import apply_full
from peftlab.tuners.linear import apply_linear
from peftlab.tuners.lora import apply_lora, plan_targets

TUNERS = {
    "full": apply_full,
    "linear": apply_linear,
    "lora": apply_lora,
}
assert tuple(TUNERS) == METHOD_NAMES, "config.METHOD_NAMES must list the registry"


def check_quant(quant: QuantConfig, model: nn.Module) -> None:
    """Quantized bases are not built yet: refuse them rather than train fp32 under their name."""
    if quant.group_size is not None:
        widths = {m.in_features for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".blocks." in f".{n}"}
        bad = sorted(w for w in widths if w % quant.group_size)
        if bad:
            raise ConfigError(f"quant.group_size={quant.group_size} is invalid: it must divide every adapted "
                              f"layer's input width, and does not divide {bad[0]}")
    if quant.mode != "none" or quant.group_size is not None:
        raise ConfigError(f"quant.mode={quant.mode!r} is not available yet in this peftlab version: use 'none'")


def check_config(cfg: RunConfig, model: nn.Module) -> None:
    """Checks that need the model: target and pattern matches, group sizes."""
    if cfg.method.name == "lora":
        plan_targets(model, cfg.method)
    check_quant(cfg.quant, model)


def apply_tuner(model: nn.Module, cfg: RunConfig) -> Tuner:
    check_config(cfg, model)
    return TUNERS[cfg.method.name](model, cfg.method)
