"""Parameter counts and model-dependent config checks, on the meta device (no weights allocated)."""

from __future__ import annotations

import dataclasses

import torch

from peftlab.backbones import build_backbone
from peftlab.config import RunConfig
from peftlab.tuners import apply_tuner, check_config, planned_ranks
from peftlab.tuners.base import is_head_param


def _meta_model(cfg: RunConfig, num_classes: int):
    model_cfg = dataclasses.replace(cfg.model, pretrained="none")  # shapes only: weights are not read
    with torch.device("meta"):
        return build_backbone(model_cfg, num_classes)


def count_parameters(cfg: RunConfig) -> dict:
    """Total, trainable, adapter and head parameters of ``cfg.model`` under ``cfg.method``."""
    num_classes = cfg.model.num_classes or 1000
    model = _meta_model(cfg, num_classes)
    with torch.device("meta"):
        tuner = apply_tuner(model, cfg)
    counts = tuner.parameter_counts()
    head = sum(p.numel() for n, p in tuner.trainable_parameters().items() if is_head_param(n, tuner.head))
    return {
        "model": cfg.model.name, "method": cfg.method.name, "num_classes": num_classes, **counts,
        "trainable_ratio": counts["trainable"] / counts["total"],
        "adapter": counts["trainable"] - head if tuner.is_adapter else None,
        "head": head,
    }


def check_against_model(cfg: RunConfig) -> dict[str, int] | None:
    """Raise ConfigError for what only the model can tell: unmatched targets or patterns, group sizes.

    Returns the rank each adapted module starts with (low-rank methods), else None.
    """
    model = _meta_model(cfg, cfg.model.num_classes or 10)
    check_config(cfg, model)
    return planned_ranks(cfg, model)
