"""What ``peftlab params`` counts (``peftlab.params``, which the command calls): a run config file with its
overrides and the options applied beside it, or a model name (timm), an HF model folder or an HF hub repository
sized by the options. Builds the RunConfig only; the counts come from the model's records (``records.answers``)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace

from peftlab.utils.errors import UserError


def params_config(model, overrides, options: dict):
    """The RunConfig whose parameters ``peftlab params MODEL [OVERRIDES] [--option ...]`` counts; ``model`` a name, a
    folder, a repository or a run config (a file, or in Python a dict of its keys or a RunConfig); ``overrides``
    dotted strings or a nested dict; ``options`` by the flags' names (``num_classes``, ``r``, ...), None for one not
    given."""
    args = SimpleNamespace(model=model, overrides=overrides or [], **{name: options.get(name) for name in OPTIONS})
    is_config = not isinstance(model, str) or model.endswith((".yaml", ".yml"))
    return params_config_of_file(args) if is_config else params_config_of_name(args)


def params_config_of_file(args):
    """A run config (the model and method it configures), its classes from --num-classes or the data."""
    from peftlab.config.checks import DATASET_CLASSES
    from peftlab.config.schema import run_config
    from peftlab.data.checks import folder_classes  # an image folder's class folders, no image opened

    if isinstance(args.overrides, dict):  # a nested dict (Python's): the options laid over it
        cfg = run_config(run_config(args.model, args.overrides), flag_overrides(args))
    else:  # an option that sets a key an override sets too is refused, as a key set twice
        cfg = run_config(args.model, [*args.overrides, *flag_overrides(args)])
    pretrained = cfg.model.pretrained
    unsized = [name for name in SIZE_OPTIONS if getattr(cfg.model, name) is None]
    if cfg.model.source == "timm" and pretrained not in (None, "none", "hub") and not Path(pretrained).exists():
        if unsized:  # a base's sizes come from the manifest beside it: without it these are the model name's
            print(
                f"peftlab: note: model.pretrained={pretrained} is not there (`peftlab pretrain` or the study makes "
                f"it): model.{unsized[0]} and any other size the config leaves out are {cfg.model.name}'s own, "
                "not the base's",
                file=sys.stderr,
            )
    if cfg.model.task == "causal-lm":  # its head is the vocabulary's: no classes to give
        refuse_classes(args)
        return cfg
    classes = (
        args.num_classes
        if args.num_classes is not None
        else cfg.model.num_classes
        or (len(cfg.data.classes) if cfg.data.classes else DATASET_CLASSES.get(cfg.data.name))
        or folder_classes(cfg.data)
    )
    if classes is None:
        raise UserError(
            f"{args.model if isinstance(args.model, str) else 'config'}: the number of classes of "
            f"data.name={cfg.data.name!r} is known only once "
            "the data is read; give --num-classes"
        )
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=classes))


def refuse_classes(args) -> None:
    """One UserError line for --num-classes on a causal LM, whose head is its vocabulary's."""
    if args.num_classes is not None:
        raise UserError(
            f"--num-classes {args.num_classes} sizes a classifier's head: a causal LM (model.task causal-lm) predicts "
            "the tokens of its vocabulary, with no classes"
        )


def flag_overrides(args) -> list[str]:
    """The options given beside a run config as dotted overrides after the config's own (an option the config
    cannot take is refused by the config's checks, never left unapplied), in CONFIG_KEYS' order: --method
    before the method's keys, which are checked against it."""
    return [f"{key}={getattr(args, flag)}" for flag, key in CONFIG_KEYS.items() if getattr(args, flag) is not None]


def params_config_of_name(args):
    """A timm model name or an HF model directory, and the options (--depth, --r, ...): no dotted overrides here."""
    from peftlab.config.schema import load_config, method_fields

    if args.overrides:
        raise UserError(
            f"dotted overrides ({next(iter(args.overrides))}) go with a run config: peftlab params CONFIG "
            "[overrides]; with a model name use the options (--depth, --r, ...)"
        )
    from peftlab.config.checks import HUB_REPO_ID

    if Path(args.model).is_dir():
        model = params_model_of_dir(args)
    elif HUB_REPO_ID.fullmatch(args.model):
        model = params_model_of_dir(args, hub=True)
    else:
        model = params_model_of_name(args)
    name = args.method or "full"
    method = {"r": args.r, "target_modules": args.targets, "num_virtual_tokens": args.num_virtual_tokens}
    method = {k: v for k, v in method.items() if v is not None}
    for key in method:
        if key not in method_fields(name):
            flag = next(f for f, k in CONFIG_KEYS.items() if k == f"method.{key}")
            raise UserError(f"--{flag.replace('_', '-')} sets method.{key}, which method {name!r} does not take")
    method["name"] = name
    return load_config(overrides={"model": {k: v for k, v in model.items() if v is not None}, "method": method})


def params_model_of_dir(args, hub: bool = False) -> dict:
    """The model section of an HF model directory, or with ``hub`` of an HF hub repository ``org/name[@revision]``
    (``pretrained: hub``: its snapshot in the hub cache, fetched first with network, weights left out): an image
    classifier (``source: hf``) or a text one (``hf-text``) as its config.json's ``model_type`` says; its sizes
    are the file's, not options."""
    from peftlab.records.hf_dirs import hf_source  # from the directory's record: torch only to build it

    given = [f"--{name.replace('_', '-')}" for name in SIZE_OPTIONS if getattr(args, name) is not None]
    if given:
        what = "an HF hub repository" if hub else "an HF model directory"
        raise UserError(f"{given[0]} sizes a timm model: {args.model} is {what}, sized by its config.json")
    if args.task == "causal-lm":
        refuse_classes(args)
    if not hub:
        source, labels = hf_source(args.model)
        return {"source": source, "path": args.model, "num_classes": args.num_classes or labels, "task": args.task}
    from peftlab.models.backbones import hf_source_of
    from peftlab.models.hub import hub_model_dir

    repo_id, _, revision = args.model.partition("@")
    source, labels = hf_source_of(hub_model_dir(repo_id, revision or None, weights=False))
    return {
        "source": source,
        "name": args.model,
        "pretrained": "hub",
        "num_classes": args.num_classes or labels,
        "task": args.task,
    }


SIZE_OPTIONS = ("img_size", "patch_size", "depth", "embed_dim", "num_heads")
# the options of a model name, and the config key each sets beside a run config (flag_overrides)
CONFIG_KEYS = {
    **{name: f"model.{name}" for name in SIZE_OPTIONS},
    "task": "model.task",
    "method": "method.name",
    "r": "method.r",
    "targets": "method.target_modules",
    "num_virtual_tokens": "method.num_virtual_tokens",
}


def params_model_of_name(args) -> dict:
    """The model section of a timm model name and its size options."""
    return {
        "name": args.model,
        "num_classes": 1000 if args.num_classes is None else args.num_classes,
        "img_size": args.img_size,
        "patch_size": args.patch_size,
        "depth": args.depth,
        "embed_dim": args.embed_dim,
        "num_heads": args.num_heads,
        "task": args.task,  # refused: model.task is an HF text model's
    }  # 0 is refused, not taken for the default


OPTIONS = ("num_classes", *CONFIG_KEYS)  # the command's options beside MODEL and OVERRIDES, by their dest names
