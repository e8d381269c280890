"""The size refusal of a config's model, from its counts alone: no torch (``peftlab validate`` answers it
from a model record; ``tuners.params`` counts on the meta device)."""

from __future__ import annotations

import psutil

from peftlab.config.schema import to_dict
from peftlab.config.sections import MethodConfig, ModelConfig
from peftlab.utils.errors import ConfigError


def refuse_size(model_cfg: ModelConfig, method: MethodConfig, num_classes: int, total: int) -> None:
    """The ConfigError of ``check_model_size`` when ``total`` fp32 weights exceed the memory available."""
    need, available = 4 * total, psutil.virtual_memory().available
    if need > available:
        hf = model_cfg.source != "timm"
        name = (model_cfg.path or model_cfg.name) if hf else model_cfg.name
        sizes = f"{name}/config.json" if hf else "model.*"
        raise ConfigError(
            f"model {name!r} with these settings ({sizes}, {size_settings(method)}, {num_classes} "
            f"classes) has {total:,} parameters, {need / 2**30:.1f} GiB in fp32: expected a model that "
            f"fits the {available / 2**30:.1f} GiB of memory available"
        )


def size_settings(method: MethodConfig) -> str:
    """The method's integer settings away from their defaults (the knobs that size it), else ``method.*``."""

    def sizes(value) -> bool:  # an integer, or a mapping of them (a rank pattern, the PEFT bridge's options)
        if isinstance(value, dict):
            return bool(value) and all(sizes(v) for v in value.values())
        return isinstance(value, int) and not isinstance(value, bool)

    defaults = to_dict(type(method)())
    changed = [
        f"method.{key}={value}" for key, value in to_dict(method).items() if value != defaults.get(key) and sizes(value)
    ]
    return ", ".join(changed) or "method.*"
