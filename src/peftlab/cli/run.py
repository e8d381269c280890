"""The commands about one run: train, summary, pretrain, export, params, validate.

Each ``add_<command>(subparsers)`` declares the command's arguments beside ``cmd_<command>(args)``,
which runs it and returns the exit status.
"""

from __future__ import annotations

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
    p.add_argument("--json", action="store_true", help="print the run's record (result.json) as JSON, not its line")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from peftlab.cli.api import train  # the Python API's, which notebooks call
    from peftlab.config.schema import load_config
    from peftlab.utils.libraries import without_bitsandbytes

    cfg = load_config(args.config, args.overrides)
    if cfg.quant.mode == "none":  # PEFT's LoRA injection would import bitsandbytes (and torch._inductor with it)
        without_bitsandbytes()  # this process trains one run and ends, as a study's forked worker
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    result = train(cfg, run_dir=run_dir, progress=not args.quiet)
    if args.json:  # json.dumps escapes every control character a recorded error holds
        print(json.dumps(result))
    else:
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
    p.add_argument(
        "--replace",
        action="store_true",
        help="write over an output holding another run's export (refused otherwise, naming that run)",
    )
    p.set_defaults(func=cmd_export)


def export_format(path: Path) -> str | None:
    """The ``format`` an exported safetensors file declares in its header."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("format")


def cmd_export(args) -> int:
    from peftlab.cli.api import export  # the Python API's

    if args.peft is not None:
        if args.merged is not None or args.quantized is not None:
            raise UserError("export --peft DIR writes the adapter alone: give it without --merged and --quantized")
        path = export(args.run_dir, peft=args.peft, replace=args.replace)
        print(f"wrote the adapter in PEFT's format to {path} (load with peft.PeftModel.from_pretrained(base, DIR))")
        return 0
    quantized = args.quantized is not None
    out = args.merged if args.quantized in (None, True) else args.quantized
    if out is None or (args.merged is not None and args.quantized not in (None, True)):
        raise UserError(
            "export needs exactly one output: --merged OUT.safetensors, --quantized OUT.safetensors "
            "or --merged OUT.safetensors --quantized"
        )
    path = export(args.run_dir, merged=args.merged, quantized=args.quantized, force=args.force, replace=args.replace)
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
    from peftlab.utils.libraries import without_bitsandbytes

    if unquantized_run(Path(args.run_dir)):  # as `peftlab train` of such a run: PEFT's layers leave bitsandbytes out
        without_bitsandbytes()
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


def unquantized_run(run_dir: Path) -> bool:
    """The run's config.yaml asks for no quantized base; False where it cannot be read (``predictions`` says why)."""
    from peftlab.config.schema import load_config
    from peftlab.utils.errors import UserError

    try:
        return load_config(run_dir / "config.yaml", base_dir=Path.cwd()).quant.mode == "none"
    except (UserError, OSError):
        return False


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
    from peftlab.cli.api import params  # the Python API's: from the model's record, torch only to build it
    from peftlab.records.params_request import OPTIONS

    counts = params(args.model, args.overrides, **{name: getattr(args, name) for name in OPTIONS})
    if args.json:
        print(json.dumps({k: v for k, v in counts.items() if k not in ("task", "path")}, indent=2))
        return 0
    head = "causal LM" if counts["task"] == "causal-lm" else f"{counts['num_classes']} classes"
    print(f"model      {counts['path'] or counts['model']} ({head}), method {counts['method']}")
    print(f"total      {counts['total']:,}")
    print(f"trainable  {counts['trainable']:,}  ({100 * counts['trainable_ratio']:.3f}%)")
    if counts["adapter"] is not None or counts["in_place"]:
        if counts["adapter"] is not None:
            print(f"  adapter  {counts['adapter']:,}")
        if counts["in_place"]:
            print(f"  in place {counts['in_place']:,}  (the base's own, trained where they are)")
        print(f"  head     {counts['head']:,}")
    return 0


def add_validate(sub) -> None:
    p = sub.add_parser("validate", help="check a run config (the model-dependent checks included)")
    p.add_argument("config", help="run config YAML")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. method.r=16")
    p.add_argument("--show", action="store_true", help="print the resolved config")
    p.add_argument("--json", action="store_true", help="print the verdict, ranks and memory estimate as JSON")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args) -> int:
    from peftlab.cli.api import validate  # the Python API's
    from peftlab.config.schema import dump_config, load_config
    from peftlab.utils.libraries import without_bitsandbytes
    from peftlab.utils.memory_fit import format_estimate

    cfg = load_config(args.config, args.overrides)
    if cfg.quant.mode == "none":  # building a record, PEFT's LoRA would import bitsandbytes (torch._inductor)
        without_bitsandbytes()  # this process validates one config and ends
    record = validate(args.config, args.overrides)
    ranks, estimate = record["ranks"], record["memory_estimate"]
    if args.json:  # a refusal is the one line on stderr, exit 2, as without --json
        shown = {key: record[key] for key in ("config", "valid", "ranks", "memory_estimate")}
        print(json.dumps({**shown, "resolved": record["resolved"]} if args.show else shown, default=str))
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
