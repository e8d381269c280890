"""Parameter counts and model-dependent config checks, on the meta device (no weights allocated)."""

from __future__ import annotations

import dataclasses

import psutil
import torch
from torch import nn

from peftlab.backbones import build_backbone, check_weights_file
from peftlab.config import DATASET_CLASSES, RunConfig, fail_field
from peftlab.errors import ConfigError
from peftlab.tuners import apply_tuner, check_config, planned_ranks
from peftlab.tuners.base import is_head_param


def _meta_model(cfg: RunConfig, num_classes: int):
    model_cfg = dataclasses.replace(cfg.model, pretrained="none")  # shapes only: weights are not read
    with torch.device("meta"):
        return build_backbone(model_cfg, num_classes, weights=False)


def meta_model(cfg: RunConfig) -> nn.Module:
    """The model ``check_against_model`` checks ``cfg`` against; checks leave it unchanged."""
    return _meta_model(cfg, cfg.model.num_classes or 10)


def count_parameters(cfg: RunConfig) -> dict:
    """Total, trainable, adapter and head parameters of ``cfg.model`` under ``cfg.method``.

    trainable = adapter (the method's own parameters; None for a method that adds none to merge)
    + in_place (the base's own parameters trained where they are: BitFit's biases, DiffFit's biases
    and LayerNorms) + head."""
    num_classes = cfg.model.num_classes or 1000
    model = _meta_model(cfg, num_classes)
    with torch.device("meta"):
        tuner = apply_tuner(model, cfg)
    counts = tuner.parameter_counts()
    head = sum(p.numel() for n, p in tuner.trainable_parameters().items() if is_head_param(n, tuner.head))
    in_place = sum(p.numel() for p in tuner.trained_in_place().values())
    return {
        "model": cfg.model.name, "method": cfg.method.name, "num_classes": num_classes, **counts,
        "trainable_ratio": counts["trainable"] / counts["total"],
        "adapter": counts["trainable"] - head - in_place if tuner.is_adapter else None,
        "in_place": in_place,
        "head": head,
    }


def check_model_size(cfg: RunConfig, num_classes: int, model: nn.Module | None = None) -> None:
    """One ConfigError line when the model's fp32 weights alone exceed the memory available now.

    Counted on the meta device (nothing is allocated), with rank-r adapters on every Linear (an
    upper bound for LoRA-like methods), before the real model is built: an absurd
    ``model.embed_dim`` or ``method.r`` fails here instead of in a 16 GB allocation.
    """
    model = model if model is not None else _meta_model(cfg, num_classes)
    total = sum(p.numel() for p in model.parameters())
    rank = max(getattr(cfg.method, "r", 0) or 0, getattr(cfg.method, "init_r", 0) or 0,
               getattr(cfg.method, "built_rank", 0) or 0)  # adaptive: adapters are built at max_rank
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    total += rank * sum(m.in_features + m.out_features for m in linears)
    need, available = 4 * total, psutil.virtual_memory().available
    if need > available:
        raise ConfigError(f"model {cfg.model.name!r} with these settings (model.*, method.*, {num_classes} classes) has "
                          f"{total:,} parameters, {need / 2**30:.1f} GiB in fp32: expected a model that fits the "
                          f"{available / 2**30:.1f} GiB of memory available")


def check_num_classes(cfg: RunConfig) -> None:
    """What train refuses once the data is read: a head with fewer classes than the data has, and
    ``data.classes`` labels the dataset does not have."""
    labels = DATASET_CLASSES.get(cfg.data.name)
    if cfg.data.classes and labels is not None and max(cfg.data.classes) >= labels:
        fail_field("data.classes", list(cfg.data.classes),
                   f"labels of {cfg.data.name}, which has {labels} classes (0 to {labels - 1})")
    classes = len(cfg.data.classes) if cfg.data.classes else labels
    if cfg.model.num_classes is not None and classes is not None and cfg.model.num_classes < classes:
        fail_field("model.num_classes", cfg.model.num_classes, f"at least {classes}, the classes of the data")


def check_against_model(cfg: RunConfig, weights: bool = False, here: bool = False,
                        model: nn.Module | None = None) -> dict[str, int] | None:
    """Raise ConfigError for what only the model can tell: its size, unmatched targets or patterns, group sizes;
    with ``weights``, also a local weights file whose tensors do not fit the model (read from its header).

    With ``here`` (``peftlab validate``), also what this machine refuses: a CUDA device or fp16
    where there is no GPU (a study's dry-run does not check it: its runs may run elsewhere), and
    what train refuses once it has read the data (``check_num_classes``).

    Returns the rank each adapted module starts with (low-rank methods), else None. ``model``: the
    meta model of ``cfg.model`` (``meta_model``), when the caller checks many configs of one.
    """
    if here:
        from peftlab.training.runtime import check_runtime

        check_runtime(cfg.train.device, cfg.train.precision)
        check_num_classes(cfg)
    num_classes = cfg.model.num_classes or 10
    model = model if model is not None else meta_model(cfg)
    if weights and cfg.model.source != "hf" and cfg.model.pretrained not in ("none", "hub"):  # a local file
        check_weights_file(model, cfg.model.pretrained)
    check_model_size(cfg, num_classes, model)
    check_config(cfg, model)
    return planned_ranks(cfg, model)
