"""The commands about one run: train, summary, pretrain, export, params, validate.

Each ``add_<command>(subparsers)`` declares the command's arguments beside ``cmd_<command>(args)``,
which runs it and returns the exit status.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
from pathlib import Path

from peftlab.cli.parsing import method_names
from peftlab.cli.summary import summarize_result
from peftlab.cli.terminal import printable
from peftlab.config.paths import REPO_ROOT
from peftlab.utils.cpu import pin_arithmetic
from peftlab.utils.errors import UserError

DEFAULT_PRETRAIN_CONFIG = REPO_ROOT / "configs" / "pretrain.yaml"


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train one run (resumes in an existing run directory)")
    p.add_argument("config", help="run config YAML")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4 method.r=16")
    p.add_argument("--run-dir", help="run directory (default runs/<name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from peftlab import train  # the Python API's, which notebooks call
    from peftlab.config.schema import load_config

    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    result = train(cfg, run_dir=run_dir, progress=not args.quiet)
    print(printable(summarize_result(result, run_dir)))
    for warning in result.get("warnings") or []:
        print(f"peftlab: warning: {warning}", file=sys.stderr)
    return 0 if result["status"] == "completed" else 1


def add_pretrain(sub) -> None:
    p = sub.add_parser("pretrain", help="train and cache a small ViT base on one real dataset")
    p.add_argument("config", nargs="?", help=f"pretraining config (default {DEFAULT_PRETRAIN_CONFIG})")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3")
    p.add_argument("--out", help="output directory (default cache/pretrained/<name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args) -> int:
    from peftlab.config.schema import load_config

    cfg = load_config(DEFAULT_PRETRAIN_CONFIG if args.config is None else args.config, args.overrides)
    if cfg.train.reproducible:
        pin_arithmetic()
    from peftlab.training.bases.pretrain import default_out_dir, pretrain  # torch: after the arithmetic is pinned

    out_dir = Path(args.out) if args.out else default_out_dir(cfg)
    manifest = pretrain(cfg, out_dir, progress=not args.quiet)
    state = "reused cached" if manifest["cached"] else "trained"
    score = (
        f"test perplexity {manifest['test_perplexity']:.1f}"
        if manifest.get("test_perplexity") is not None  # a text base: a causal LM
        else f"test top-1 {100 * manifest['test_top1']:.2f}%"
    )
    print(
        f"{state} base {out_dir / manifest['weights']}: {score} on {manifest['data']['name']}, "
        f"pretraining took {manifest['train_seconds']:.0f}s of training, sha256 {manifest['sha256'][:12]}"
    )
    return 0


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a run's merged model as a plain timm state dict")
    p.add_argument("run_dir", help="a completed run directory")
    p.add_argument("--merged", metavar="OUT.safetensors", help="the merged model with float weights (timm keys)")
    p.add_argument(
        "--quantized",
        nargs="?",
        const=True,
        metavar="OUT.safetensors",
        help="on a quantized base: the merged model kept quantized (QA-LoRA: same codes, folded zeros; "
        "QLoRA: re-quantized); `--merged OUT --quantized` says the same",
    )
    p.add_argument(
        "--peft",
        metavar="DIR",
        help="the adapter in PEFT's format (adapter_config.json, "
        "adapter_model.safetensors) for peft.PeftModel.from_pretrained on the plain base model",
    )
    p.add_argument("--force", action="store_true", help="export even a run whose merge check failed")
    p.set_defaults(func=cmd_export)


def export_format(path: Path) -> str | None:
    """The ``format`` an exported safetensors file declares in its header."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("format")


def cmd_export(args) -> int:
    from peftlab.training.export import export_merged, export_peft

    if args.peft is not None:
        if args.merged is not None or args.quantized is not None:
            raise UserError("export --peft DIR writes the adapter alone: give it without --merged and --quantized")
        print(
            f"wrote the adapter in PEFT's format to {export_peft(Path(args.run_dir), Path(args.peft))} "
            "(load with peft.PeftModel.from_pretrained(base, DIR))"
        )
        return 0
    quantized = args.quantized is not None
    out = args.merged if args.quantized in (None, True) else args.quantized
    if out is None or (args.merged is not None and args.quantized not in (None, True)):
        raise UserError(
            "export needs exactly one output: --merged OUT.safetensors, --quantized OUT.safetensors "
            "or --merged OUT.safetensors --quantized"
        )
    path = export_merged(Path(args.run_dir), Path(out), quantized=quantized, force=args.force)
    if quantized:
        what = "quantized model (load with peftlab.training.export.load_quantized)"
    elif not path.is_dir() and export_format(path) == "peftlab-unmerged":
        print(f"wrote the base with the method's unmerged modules to {path}")
        return 0
    elif path.is_dir():
        what = "HF model (load with from_pretrained of the run's transformers class: AutoModelFor...)"
    else:
        what = "timm state dict (timm.create_model with the header's timm_model and timm_kwargs)"
    print(f"wrote merged {what} to {path}")
    return 0


def add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify image files with a finished run: top-k class names, probabilities")
    p.add_argument("run_dir", help="a completed run directory")
    p.add_argument("images", nargs="+", help="image files, or folders of them")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="classes shown per image (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON: a list, one object per image")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from tqdm.auto import tqdm

    from peftlab.training.evaluate import predictions  # peftlab.predict's: images made as the run made its tests
    from peftlab.utils.files import shown_path

    _, batches = predictions(args.run_dir, args.images, args.top_k, progress=True)
    first = True
    for batch in batches:  # each batch printed as it comes, above the bar: a folder of any size streams
        if args.json:  # the list peftlab.predict returns, as json.dumps(..., indent=2) writes it
            items = ",\n".join(textwrap.indent(json.dumps(row, indent=2), "  ") for row in batch)
            text = ("[\n" if first else ",\n") + items
        else:  # a file's or a class folder's name reaches the terminal escaped, class names from a received run
            text = "\n".join(
                printable(
                    f"{shown_path(row['image'])}: "
                    + "  ".join(f"{c['class']} {100 * c['probability']:.1f}%" for c in row["top_k"])
                )
                for row in batch
            )
        tqdm.write(text, file=sys.stdout, end="" if args.json else "\n")
        sys.stdout.flush()
        first = False
    if args.json:
        print("\n]")
    return 0


def add_params(sub) -> None:
    p = sub.add_parser("params", help="total and trainable parameter counts of a model and method")
    p.add_argument(
        "model",
        help="a timm model name, an HF model directory (config.json: image or text classifier), an HF hub "
        "repository org/name[@revision] (its config from the hub cache, fetched with network), "
        "or a run config YAML (then its model and method)",
    )
    p.add_argument("overrides", nargs="*", help="with a run config: dotted overrides, e.g. method.r=16")
    p.add_argument("--num-classes", type=int, help="classes of the head (default 1000; an HF directory: its own)")
    p.add_argument(
        "--task", choices=["classification", "causal-lm"], help="an HF text model: model.task (default classification)"
    )
    p.add_argument("--img-size", type=int, help="input size (default: the model's own)")
    p.add_argument("--patch-size", type=int, help="patch size (default: the model's own)")
    p.add_argument("--depth", type=int, help="number of blocks (default: the model's own)")
    p.add_argument("--embed-dim", type=int, help="embedding width (default: the model's own)")
    p.add_argument("--num-heads", type=int, help="attention heads (default: the model's own)")
    p.add_argument("--method", help=f"{method_names()} (default full; with a config: its method)")
    p.add_argument("--r", type=int, help="rank: method.r (default: the method's own, 8 for LoRA)")
    p.add_argument("--targets", help="standard, extended or all-linear")
    p.add_argument("--num-virtual-tokens", type=int, help="prompt_tuning, prefix_tuning: method.num_virtual_tokens")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_params)


def cmd_params(args) -> int:
    from peftlab.records.answers import count_parameters  # from the model's record: torch only to build it

    cfg = params_config_of_file(args) if args.model.endswith((".yaml", ".yml")) else params_config_of_name(args)
    counts = count_parameters(cfg)
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    name = cfg.model.path if cfg.model.source != "timm" and cfg.model.path else cfg.model.name
    head = "causal LM" if cfg.model.task == "causal-lm" else f"{counts['num_classes']} classes"
    print(f"model      {name} ({head}), method {cfg.method.name}")
    print(f"total      {counts['total']:,}")
    print(f"trainable  {counts['trainable']:,}  ({100 * counts['trainable_ratio']:.3f}%)")
    if counts["adapter"] is not None or counts["in_place"]:
        if counts["adapter"] is not None:
            print(f"  adapter  {counts['adapter']:,}")
        if counts["in_place"]:
            print(f"  in place {counts['in_place']:,}  (the base's own, trained where they are)")
        print(f"  head     {counts['head']:,}")
    return 0


def params_config_of_file(args):
    """A run config (the model and method it configures), its classes from --num-classes or the data."""
    from peftlab.config.checks import DATASET_CLASSES
    from peftlab.config.schema import load_config
    from peftlab.data.checks import folder_classes  # an image folder's class folders, no image opened

    cfg = load_config(args.model, [*args.overrides, *flag_overrides(args)])
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
    classes = (
        args.num_classes
        if args.num_classes is not None
        else cfg.model.num_classes
        or (len(cfg.data.classes) if cfg.data.classes else DATASET_CLASSES.get(cfg.data.name))
        or folder_classes(cfg.data)
    )
    if classes is None:
        raise UserError(
            f"{args.model}: the number of classes of data.name={cfg.data.name!r} is known only once "
            "the data is read; give --num-classes"
        )
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=classes))


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
            f"dotted overrides ({args.overrides[0]}) go with a run config: peftlab params CONFIG "
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


def add_validate(sub) -> None:
    p = sub.add_parser("validate", help="check a run config (the model-dependent checks included)")
    p.add_argument("config", help="run config YAML")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. method.r=16")
    p.add_argument("--show", action="store_true", help="print the resolved config")
    p.add_argument("--json", action="store_true", help="print the verdict, ranks and memory estimate as JSON")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args) -> int:
    from peftlab.config.checks import check_num_classes
    from peftlab.config.schema import dump_config, load_config, to_dict
    from peftlab.data.checks import check_data
    from peftlab.records.answers import check_against_model, check_config_fits
    from peftlab.utils.libraries import without_bitsandbytes
    from peftlab.utils.memory_fit import format_estimate

    cfg = load_config(args.config, args.overrides)
    if cfg.quant.mode == "none":  # building a record, PEFT's LoRA would import bitsandbytes (torch._inductor)
        without_bitsandbytes()
    check_device(cfg)  # this machine: a CUDA device or fp16 where there is no GPU
    check_num_classes(cfg)  # what train refuses once it has read the data
    check_data(cfg.data, cfg.model.task == "causal-lm")  # found, its folders and lists, before any run folder
    ranks = check_against_model(cfg, weights=True)  # from the model's records: torch only to build them
    estimate = check_config_fits(cfg)  # train refuses a run whose training memory does not fit: so does validate
    if args.json:  # a refusal is the one line on stderr, exit 2, as without --json
        record = {"config": str(args.config), "valid": True, "ranks": ranks or None, "memory_estimate": estimate}
        print(json.dumps({**record, "resolved": to_dict(cfg)} if args.show else record, default=str))
        return 0
    if not args.show:
        print(f"{args.config}: valid")
        return 0
    print(dump_config(cfg), end="")
    if ranks:
        print(f"# ranks at the start ({len(ranks)} adapted modules, sum {sum(ranks.values())}):")
        for module, rank in ranks.items():
            print(f"#   {module}: {rank}")
    print("\n".join(format_estimate(estimate)))
    print("\n".join(records_used()))
    return 0


def check_device(cfg) -> None:
    """``training.runtime.check_runtime``, which imports torch, unless the answer is known without it: on the
    CPU or the device peftlab chooses (auto), fp32, bf16 (every device takes it) and auto pass; fp16 (not on a
    CPU) and a named GPU need torch to tell."""
    if cfg.train.device in ("auto", "cpu") and cfg.train.precision in ("auto", "fp32", "bf16"):
        return
    from peftlab.training.runtime import check_runtime

    check_runtime(cfg.train.device, cfg.train.precision)


def records_used() -> list[str]:
    """``# model records:`` lines: each record validate read (its age) or built now."""
    import time

    from peftlab.records.store import USED, age_words
    from peftlab.utils.files import read_json

    lines = [f"# model records ({len(USED)}, in {USED[0][1].parent}):"] if USED else ["# model records: none"]
    for kind, path, warm in USED:
        created = (read_json(path) or {}).get("created")
        age = f"{age_words(time.time() - created)} old" if isinstance(created, float | int) else "unreadable"
        lines.append(f"#   {kind:<10} {path.name}  ({'read' if warm else 'built now'}, {age})")
    return lines
