"""The answers about a config's model, from model records: the inner loop without torch.

    ranks = check_against_model(cfg, weights=True)   # peftlab validate, a study's dry-run
    est = check_config_fits(cfg)                     # validate's memory estimate, refused as train refuses
    counts = count_parameters(cfg)                   # peftlab params
    flops = forward_flops(cfg)                       # the dry-run's compute line

Each answer is a record (``records.store``) keyed by what it depends on: the model's architecture and
classes, the method's config (and the files it names), the quantization and the run length for the checks,
the precision and input for the estimate, the libraries' versions. A record is built once by the live code
(``tuners.params``, ``training.preflight``, on the meta device where they count), which is the one truth;
a warm call reads it back without importing torch, timm, transformers or PEFT. What depends on this machine
now (the memory available, a weights file's bytes) is never recorded: the sizes are, and each call compares.
A local HF model directory is recorded as its files are now (``records.hf_dirs``: those its meta build reads,
by size and SHA-256); a hub snapshot is answered live, unrecorded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from peftlab.config.schema import RunConfig, to_dict
from peftlab.config.sections import MethodConfig, ModelConfig, architecture_only
from peftlab.models.structure import Structure
from peftlab.records.hf_dirs import dir_files
from peftlab.records.store import cached, write_record
from peftlab.tuners.plans import PLANS, check_structure, count_structure, planned
from peftlab.tuners.plugins import identity
from peftlab.tuners.size_check import refuse_size
from peftlab.utils.errors import ConfigError
from peftlab.utils.memory_fit import PARTS, at_batch, check_fits

if TYPE_CHECKING:
    from torch import nn

META_MODELS: dict[str, object] = {}  # the meta models this process built, by architecture (a study checks many)


def model_payload(model: ModelConfig, num_classes: int) -> dict | None:
    """What a model's structure depends on: its architecture's fields and, for a local HF directory, the
    files its meta build reads (``records.hf_dirs.dir_files``); None for a model answered live, unrecorded
    (a hub snapshot: huggingface_hub resolves it; a directory the checks refuse)."""
    payload = {"model": to_dict(architecture_only(model)), "num_classes": num_classes}
    if model.source == "timm":
        return payload
    files = None if model.pretrained == "hub" else dir_files(model.path)
    return None if files is None else {**payload, "files": files}


def file_identity(value) -> dict | None:
    """A file a config names (a weights or importance file) as it is now, or None: its path, size, inode and
    modification and change times. The change time is the one a write in place cannot hide: ``os.utime``
    puts the size and modification time back, and sets the change time to now."""
    if not isinstance(value, str) or not value or len(value) > 4096:
        return None
    try:
        stat = os.stat(value)
    except (OSError, ValueError):
        return None
    return {
        "path": str(Path(value).resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "ino": stat.st_ino,
    }


def method_payload(method: MethodConfig) -> dict:
    """The method's config, with the identity of every file it names (a changed file is another record) and,
    for a plugin's method, its code (``tuners.plugins.identity``: distribution, version, SHA-256 of its code)."""
    fields = to_dict(method)
    files = {k: file_identity(v) for k, v in fields.items() if file_identity(v) is not None}
    return {"method": fields, "files": files, "plugin": identity(method.name)}


def checks_payload(cfg: RunConfig) -> dict | None:
    model = model_payload(cfg.model, cfg.model.num_classes or 10)
    if model is None:
        return None
    return {**model, **method_payload(cfg.method), "quant": to_dict(cfg.quant), "max_steps": cfg.train.max_steps}


def meta_model_of(cfg: RunConfig, num_classes: int | None = None) -> nn.Module:
    """``cfg``'s meta model (with ``num_classes``, else the config's or 10), built once per architecture in
    this process (a cold study checks many methods)."""
    from peftlab.tuners.params import meta_backbone  # torch: only when a record is built

    num_classes = num_classes or cfg.model.num_classes or 10
    # an HF directory's files are in its payload: a config.json edited since is another model
    key = repr(model_payload(cfg.model, num_classes) or (to_dict(architecture_only(cfg.model)), num_classes))
    if key not in META_MODELS:
        META_MODELS[key] = meta_backbone(cfg.model, num_classes)
    return META_MODELS[key]


def model_structure(cfg: RunConfig, num_classes: int) -> Structure:
    """The structure of ``cfg``'s timm model with ``num_classes`` classes, from its record: one per model
    and its arguments (and the libraries' versions), whatever the method, its ranks or the run."""

    def live() -> dict:
        from peftlab.models.structure import structure_of  # torch: only when the record is built

        return structure_of(meta_model_of(cfg, num_classes)).to_body()

    payload = model_payload(cfg.model, num_classes)
    body, _ = cached("structure", payload, live)
    try:
        return Structure.from_body(body)
    except ValueError:  # a record of another layout that its checksum let through: built again, written over
        body = live()
        write_record("structure", payload, body)
        return Structure.from_body(body)


def live_checks(cfg: RunConfig) -> dict:
    """The checks' record, from the meta model: its two size totals, the first ConfigError a check raises
    (its line) and the planned ranks. The first total is refused here already: a model too large for
    this machine is never built further, and no record is written of it."""
    from peftlab.tuners.base import TunerContext, check_config, planned_ranks  # torch: only when built
    from peftlab.tuners.params import applied_total, bound_total

    model, num_classes = meta_model_of(cfg), cfg.model.num_classes or 10
    bound = bound_total(model, cfg.method)
    refuse_size(cfg.model, cfg.method, num_classes, bound)
    try:
        applied = applied_total(model, cfg.method)
        check_config(cfg.method, model, TunerContext.for_checks(cfg))
        ranks = planned_ranks(cfg.method, model)
    except ConfigError as err:
        return {"sizes": [bound, None], "error": str(err), "ranks": None}
    return {"sizes": [bound, applied], "error": None, "ranks": None if ranks is None else list(ranks.items())}


def check_against_model(cfg: RunConfig, weights: bool = False) -> dict[str, int] | None:
    """``tuners.params.check_against_model`` from the config's records: the same refusals in the same order
    (the weights file, the size bound, a check's error, the applied size), the same ranks."""
    if weights and cfg.model.source == "timm" and cfg.model.pretrained not in ("none", "hub"):
        check_weights(cfg)
    num_classes = cfg.model.num_classes or 10
    if planned(cfg.method, cfg.quant) is not None and model_payload(cfg.model, num_classes) is not None:
        # answered from the structure (a timm model's, a local HF directory's)
        return check_structure(cfg.model, cfg.method, model_structure(cfg, num_classes), num_classes)
    payload = checks_payload(cfg)
    if payload is None:
        from peftlab.tuners.params import check_against_model as live  # torch: a model built from files

        return live(cfg, weights=weights, model=meta_model_of(cfg))
    body, _ = cached("checks", payload, lambda: live_checks(cfg))
    bound, applied = body["sizes"]
    refuse_size(cfg.model, cfg.method, num_classes, bound)
    if body["error"] is not None:
        raise ConfigError(body["error"])
    refuse_size(cfg.model, cfg.method, num_classes, applied)
    return None if body["ranks"] is None else dict(body["ranks"])


def check_weights(cfg: RunConfig) -> None:
    """A local weights file checked against the model once per (model, file as it is now): a file that
    changes (size, inode, modification or change time: ``file_identity``) is checked again; a refusal is
    never recorded."""
    identity = file_identity(cfg.model.pretrained)
    payload = model_payload(cfg.model, cfg.model.num_classes or 10)

    def live() -> dict:
        from peftlab.models.weights import check_weights_file  # torch: only when the file is new

        check_weights_file(meta_model_of(cfg), cfg.model.pretrained)
        return {"checked": True}

    if identity is None:  # missing: the live check says so in its words
        live()
        return
    cached("weights", {**payload, "file": identity}, live)


def estimate_payload(cfg: RunConfig) -> dict | None:
    payload = checks_payload(cfg)
    if payload is None:
        return None
    classes = cfg.model.num_classes or (len(cfg.data.classes) if cfg.data.classes else 10)
    precision = "fp32" if cfg.train.precision == "auto" else cfg.train.precision  # on the CPU: preflight's rule
    payload.pop("max_steps")
    # train.test: a tested causal LM's estimate holds its base row's pass (preflight.base_pass_bytes)
    return {
        **payload,
        "num_classes": classes,
        "precision": precision,
        "max_length": cfg.data.max_length,
        "test": cfg.train.test,
    }


def config_estimate(cfg: RunConfig) -> dict:
    """``training.preflight.estimate_for_config``: its parts recorded, the sums at the config's micro-batch."""
    payload = estimate_payload(cfg)

    def live() -> dict:
        from peftlab.training.preflight import estimate_for_config  # torch: only when built

        est = estimate_for_config(cfg)
        return {part: est[part] for part in PARTS}

    parts = live() if payload is None else cached("estimate", payload, live)[0]
    return at_batch(parts, cfg.train.batch_size)


def check_config_fits(cfg: RunConfig) -> dict:
    """``training.preflight.check_config_fits`` from the estimate's record (the CPU's available memory now)."""
    import psutil

    est = config_estimate(cfg)
    check_fits(
        est,
        psutil.virtual_memory().available,
        cfg.train.batch_size,
        cfg.train.grad_accum,
        cfg.method.quantizable and cfg.quant.mode == "none",
    )
    return est


def count_parameters(cfg: RunConfig) -> dict:
    """``tuners.params.count_parameters`` from its record (a refusal recorded as its line); a causal LM's
    ``num_classes`` None (its head is its vocabulary's)."""
    counts = recorded_counts(cfg)
    return {**counts, "num_classes": None} if cfg.model.task == "causal-lm" else counts


def recorded_counts(cfg: RunConfig) -> dict:
    num_classes = cfg.model.num_classes or 1000
    from_files = model_payload(cfg.model, num_classes) is None
    if not from_files and cfg.method.name in PLANS:  # a built-in counted from its plan: the structure's record
        return count_structure(cfg.model.name, cfg.method, model_structure(cfg, num_classes), num_classes)

    def live() -> dict:
        from peftlab.tuners.params import count_parameters as count  # torch: only when built

        try:
            return {"counts": count(cfg), "error": None}
        except ConfigError as err:
            if from_files:
                raise
            return {"counts": None, "error": str(err)}

    if from_files:
        return live()["counts"]
    payload = {**model_payload(cfg.model, num_classes), **method_payload(cfg.method)}
    body, _ = cached("counts", payload, live)
    if body["error"] is not None:
        raise ConfigError(body["error"])
    return body["counts"]


def forward_flops(cfg: RunConfig) -> int | None:
    """The backbone's forward FLOPs for one image at the config's input size, on the meta model (torch's
    FlopCounterMode: no weights, no data); None where it cannot be counted (an HF text model, an op meta
    tensors cannot run)."""
    if cfg.model.source == "hf-text":  # its tokens per example are known once the data is tokenized
        return None

    def live() -> dict:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from peftlab.models.backbones import input_spec_for

        try:
            model, spec = meta_model_of(cfg), input_spec_for(cfg.model)
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                model(torch.empty(1, spec.in_chans, spec.img_size, spec.img_size, device="meta"))
            return {"flops": counter.get_total_flops()}
        except (RuntimeError, NotImplementedError, TypeError, ValueError):  # an op meta tensors cannot run
            return {"flops": None}

    payload = model_payload(cfg.model, cfg.model.num_classes or 10)
    return (live() if payload is None else cached("flops", payload, live)[0])["flops"]
