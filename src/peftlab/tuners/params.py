"""Parameter counts and model-dependent config checks, on the meta device (no weights allocated)."""

from __future__ import annotations

import copy
import json

import torch
from torch import nn

from peftlab.config.checks import check_num_classes  # noqa: F401  (its home before; callers import it here)
from peftlab.config.schema import RunConfig, to_dict
from peftlab.config.sections import MethodConfig, ModelConfig, QuantConfig, architecture_only
from peftlab.models.backbones import build_backbone, head_prefix, trains_head
from peftlab.models.meta import shapes_only
from peftlab.models.structure import structure_of
from peftlab.models.weights import check_weights_file
from peftlab.tuners import structural
from peftlab.tuners.base import Tuner, TunerContext, apply_tuner, check_config, is_head_param, planned_ranks
from peftlab.tuners.plugins import method_spec
from peftlab.tuners.size_check import refuse_size

COUNTED_STEPS = 10**6  # the run length methods are applied for when they are counted


def meta_backbone(model_cfg: ModelConfig, num_classes: int) -> nn.Module:
    """``model_cfg``'s backbone on the meta device: shapes only, its weights neither read nor initialised."""
    with shapes_only():
        return build_backbone(architecture_only(model_cfg), num_classes, weights=False)


def meta_model(cfg: RunConfig) -> nn.Module:
    """The model ``check_against_model`` checks ``cfg`` against; checks leave it unchanged."""
    return meta_backbone(cfg.model, cfg.model.num_classes or 10)


def count_parameters(cfg: RunConfig) -> dict:
    """Total, trainable, adapter and head parameters of ``cfg.model`` under ``cfg.method``.

    trainable = adapter (the method's own parameters; None for a method that adds none to merge)
    + in_place (the base's own parameters trained where they are: BitFit's biases, DiffFit's biases
    and LayerNorms) + head."""
    num_classes = cfg.model.num_classes or 1000
    model = meta_backbone(cfg.model, num_classes)
    sized = sized_without_applying(cfg.method, model)
    if sized is not None:  # an adapter method counted from its plan: no PEFT imported
        adapter, head = sized
        counts = {"total": sum(p.numel() for p in model.parameters()) + adapter, "trainable": adapter + head}
        is_adapter, in_place = True, 0
    else:
        tuner = meta_tuner(cfg.method, model)
        counts = tuner.parameter_counts()
        head = sum(p.numel() for n, p in tuner.trainable_parameters().items() if is_head_param(n, tuner.head))
        is_adapter, in_place = tuner.is_adapter, sum(p.numel() for p in tuner.trained_in_place().values())
    return {
        "model": cfg.model.name,
        "method": cfg.method.name,
        "num_classes": num_classes,
        **counts,
        "trainable_ratio": counts["trainable"] / counts["total"],
        "adapter": counts["trainable"] - head - in_place if is_adapter else None,
        "in_place": in_place,
        "head": head,
    }


def sized_without_applying(method: MethodConfig, model: nn.Module) -> tuple[int, int] | None:
    """(the parameters ``method`` adds to ``model``, the trainable head's) from the method's ``size``
    hook, checked as applying it checks, the model left unchanged; None for a method without the hook,
    which is applied on the meta device to be counted. The head trains as a copy (PEFT's
    ``modules_to_save``), so a model applied holds it twice."""
    size = method_spec(method.name).size
    if size is None:
        return None
    check_config(method, model, counting_context())  # what meta_tuner would refuse
    head = sum(p.numel() for p in model.get_submodule(head_prefix(model)).parameters()) if trains_head(model) else 0
    return size(model, method), head


def meta_tuner(method: MethodConfig, model: nn.Module) -> Tuner:
    """``method`` applied to ``model``, a meta model, on the meta device: shapes only, nothing
    allocated. The base is left unquantized: it holds as many (logical) weights, and bitsandbytes
    cannot quantize a meta tensor. A run's length changes no size: a long run is assumed (an epoch-based
    run's is known only once the data is read), so that no check of steps refuses here what the run takes."""
    with torch.device("meta"):  # not shapes_only: PEFT's layers write few values and the mode slowed their build
        return apply_tuner(model, method, counting_context())


def counting_context() -> TunerContext:
    """The context a method is applied (or checked) in to be counted: a long run, an unquantized base."""
    return TunerContext(total_steps=COUNTED_STEPS, device=torch.device("cpu"), quant=QuantConfig())


def check_model_size(
    model_cfg: ModelConfig, method: MethodConfig, num_classes: int, model: nn.Module | None = None
) -> None:
    """One ConfigError line when the model's fp32 weights alone, the method's included, exceed the
    memory available now, before the real model is built.

    Counted on the meta device (nothing is allocated), in two steps: rank-r adapters on every
    Linear (``bound_total``: an upper bound for LoRA-like methods, so that an absurd ``method.r`` is
    refused before even its meta adapters and their CPU bookkeeping are built), then the method applied
    to a copy of the meta model (``applied_total``). ``model``: the meta model of ``model_cfg``, left as found.
    """
    key = size_key(model_cfg, method, num_classes)
    totals = COUNTED.get(key) if key is not None else None
    if totals is None:
        model = model if model is not None else meta_backbone(model_cfg, num_classes)
        bound = bound_total(model, method)
        refuse_size(model_cfg, method, num_classes, bound)  # before the method's meta adapters are built
        totals = (bound, applied_total(model, method))
        if key is not None:
            if len(COUNTED) >= 64:
                COUNTED.clear()
            COUNTED[key] = totals
    for total in totals:  # against the memory available now
        refuse_size(model_cfg, method, num_classes, total)


# the two totals of each (model, method, classes) this process counted: a run's are counted twice, before its run
# directory is written (``check_against_model``) and before its model is built (``build.build_tuned``); on a meta
# copy each time, 10% of a shortest run's time (tests/test_shortest_runs.py's cProfile, 2026-11-30)
COUNTED: dict[str, tuple[int, int]] = {}


def size_key(model_cfg: ModelConfig, method: MethodConfig, num_classes: int) -> str | None:
    """The configs as JSON, for a timm model (a Hugging Face directory's files may change under the same config);
    None for the others, which are counted each time."""
    if model_cfg.source != "timm":
        return None
    return json.dumps([to_dict(model_cfg), to_dict(method), num_classes], sort_keys=True, default=repr)


def bound_total(model: nn.Module, method: MethodConfig) -> int:
    """The model's parameters with rank-r adapters on every Linear (``tuners.structural.bound_total``)."""
    return structural.bound_total(structure_of(model), method)


def applied_total(model: nn.Module, method: MethodConfig) -> int:
    """The parameters of ``model`` with ``method`` applied (every method's own: VPT's prompts, the adapters'
    bottlenecks, the ranks a budget or pattern sets), counted from the ``size`` hook or on a meta copy."""
    sized = sized_without_applying(method, model)
    if sized is not None:
        return sum(p.numel() for p in model.parameters()) + sum(sized)
    tuner = meta_tuner(method, copy.deepcopy(model))
    return sum(p.numel() for p in tuner.model.parameters())


def check_against_model(cfg: RunConfig, weights: bool = False, model: nn.Module | None = None) -> dict[str, int] | None:
    """Raise ConfigError for what only the model can tell: its size, unmatched targets or patterns, group sizes;
    with ``weights``, also a local weights file whose tensors do not fit the model (read from its header).
    (``peftlab validate`` checks before it what this machine refuses, ``check_runtime``, and what train
    refuses once it has read the data, ``check_num_classes``; a study's dry-run does not: its runs may run
    elsewhere.)

    Returns the rank each adapted module starts with (low-rank methods), else None. ``model``: the
    meta model of ``cfg.model`` (``meta_model``), when the caller checks many configs of one.
    """
    num_classes = cfg.model.num_classes or 10
    model = model if model is not None else meta_model(cfg)
    if weights and cfg.model.source == "timm" and cfg.model.pretrained not in ("none", "hub"):  # a local file
        check_weights_file(model, cfg.model.pretrained)
    check_model_size(cfg.model, cfg.method, num_classes, model)
    check_config(cfg.method, model, TunerContext.for_checks(cfg))
    return planned_ranks(cfg.method, model)
