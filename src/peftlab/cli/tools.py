"""The commands beside runs and studies: bench, data info, data vtab-demo, data fortunes-task, data
fortunes-corpus, data fortunes-dialogue, config-reference, methods.

Each ``add_<command>(subparsers)`` declares the command's arguments beside ``cmd_<command>(args)``,
which runs it and returns the exit status.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from peftlab.cli.parsing import at_least, between
from peftlab.cli.terminal import printable

# every size the bench takes, (least, most): what it allocates (a batch, a model) or writes (JPEGs) grows with
# each, so one out of range is refused by the parser, before anything is built. The largest are beyond any
# figure benchmarks/ records (GPT-2 XL is 48 blocks of width 1600; GPT-2 has 1024 positions).
BENCH_SIZES = {
    "--img-size": (1, 1024),
    "--depth": (1, 48),
    "--embed-dim": (1, 4096),
    "--num-heads": (1, 64),
    "--patch-size": (1, 1024),
    "--batch": (1, 1024),
    "--repeats": (1, 1000),
    "--matmul-size": (1, 16_384),
    "--large-steps": (1, 1000),
    "--num-workers": (0, 64),
    "--data-images": (1, 20_000),
    "--text-layers": (1, 48),
    "--text-width": (1, 2048),
    "--text-heads": (1, 64),
    "--text-length": (1, 1024),
    "--text-batch": (1, 512),
}


ONLY_HELP = (
    "measure one figure: data (the data path / a deit_tiny step), precision (bf16 / fp32 steps "
    "and matmuls, nf4 with bitsandbytes' CPU kernel / reference), methods (every method's "
    "training step / LoRA's, with its trainable parameters) or steps (P1, P2, P5: the recipe / a "
    "hand-written PEFT loop, LoRA / full, MFU against the peak matmul) or compile (compiled / eager "
    "LoRA and full steps, LoRA / full compiled, the compile time) or bare (peftlab's LoRA, full, AdaLoRA "
    "and QLoRA nf4 steps, eager, and LoRA and full compiled, each / a bare timm + PEFT (+ bitsandbytes) "
    "loop's, and each ratio between methods beside the bare loop's) or P3b (peak RSS building and "
    "training --large-model: QLoRA / LoRA and / full) or text (a GPT-2 LoRA step, peftlab / a bare "
    "transformers + PEFT loop, wall and CPU time) or P6 (a run's fixed cost: the default study's LoRA run) "
    "or pin (train.reproducible's cost: full and LoRA steps pinned (oneDNN's products) / unpinned, under the "
    "former pin (MKL's COMPATIBLE branch) / unpinned, and both / the CPU's own arithmetic held to AVX2, one "
    "process a set of switches, one thread)"
)


def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="performance ratios measured side by side, against the matmul peak")
    p.add_argument("--model", default="deit_small_patch16_224", help="timm model name (default deit_small_patch16_224)")
    p.add_argument("--img-size", type=between(*BENCH_SIZES["--img-size"]), help="default: the model's own")
    for flag, what in (
        ("--depth", "blocks"),
        ("--embed-dim", "embedding width"),
        ("--num-heads", "attention heads"),
        ("--patch-size", "patch size"),
    ):
        p.add_argument(
            flag,
            type=between(*BENCH_SIZES[flag]),
            help=f"{what} (default: the model's own; a small model for a quick look)",
        )
    p.add_argument(
        "--batch", type=between(*BENCH_SIZES["--batch"]), default=32, help="batch size of the timed steps (default 32)"
    )
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="training precision (default fp32)")
    p.add_argument(
        "--repeats",
        type=between(*BENCH_SIZES["--repeats"]),
        default=5,
        help="interleaved timed repetitions (after warm-up)",
    )
    p.add_argument(
        "--default-study",
        default="configs/studies/default.yaml",
        help="P6: the study whose LoRA run's fixed cost is measured (skipped where absent or without its base)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the per-method peak RSS processes")
    p.add_argument(
        "--large-model",
        default="vit_large_patch16_224",
        help="P3b: a model where weights matter, trained at batch 4 per method ('' skips it)",
    )
    p.add_argument(
        "--large-steps", type=between(*BENCH_SIZES["--large-steps"]), default=2, help="P3b: training steps per method"
    )
    p.add_argument(
        "--large-weights",
        choices=("file", "random", "hf"),
        default="file",
        help="P3b: read each base from a safetensors file of random weights, as a pretrained base is read "
        "(QLoRA's quantized while loading; default), build it from timm's initialisation, or read an HF "
        "ViT of the model's sizes through transformers (hf)",
    )
    p.add_argument(
        "--malloc",
        choices=("system", "lean"),
        default="system",
        help="train.malloc for every figure: system keeps glibc's own rule (default), lean returns freed "
        "tensor memory to the system, for slower steps (peftlab.quant.allocator)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda", "auto"),
        help="where the steps run (default cpu); cuda leaves out the host-memory figures and P6",
    )
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="skip the compiled steps (train.compile; the compile and bare figures)",
    )
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="skip the pin figure (train.reproducible's cost: a process per mode and repetition)",
    )
    p.add_argument(
        "--only",
        choices=("data", "precision", "methods", "steps", "compile", "bare", "P3b", "P6", "text", "pin"),
        help=ONLY_HELP,
    )
    add_figure_flags(p)
    p.add_argument("--json", help="also write the full report as JSON")
    p.add_argument("--png", help="also draw the text figure (tokens/s and the ratio, wall and CPU) as a PNG")
    p.set_defaults(func=cmd_bench)


def add_figure_flags(p) -> None:
    """The flags of the precision, data and text figures: the sizes they measure at, or models of their own."""
    p.add_argument(
        "--matmul-size",
        type=between(*BENCH_SIZES["--matmul-size"]),
        default=1024,
        help="precision figure: the square matmul's side, fp32 and bf16 (default 1024)",
    )
    p.add_argument(
        "--num-workers",
        type=between(*BENCH_SIZES["--num-workers"]),
        help="data figure: decoding processes (default: chosen for the device)",
    )
    p.add_argument(
        "--data-images",
        type=between(*BENCH_SIZES["--data-images"]),
        default=512,
        help="data figure: JPEGs (256 px) per epoch (default 512)",
    )
    p.add_argument("--data-cache", action="store_true", help="data figure: time the cached path (data.cache)")
    p.add_argument(
        "--data-layout",
        choices=("imagefolder", "vtab1k"),
        default="imagefolder",
        help="data figure: class folders (default), or the same JPEGs read through VTAB-1k's lists",
    )
    p.add_argument(
        "--data-model",
        default="deit_tiny_patch16_224",
        help="data figure: the model whose LoRA step the data path is measured against",
    )
    for flag, default, what in (
        ("--text-layers", 12, "blocks"),
        ("--text-width", 768, "width"),
        ("--text-heads", 12, "attention heads"),
        ("--text-length", 128, "tokens per sequence"),
        ("--text-batch", 8, "sequences per step"),
    ):
        p.add_argument(
            flag,
            type=between(*BENCH_SIZES[flag]),
            default=default,
            help=f"text figure: the GPT-2's {what} (default {default})",
        )


def cmd_bench(args) -> int:
    from peftlab.bench.report import format_report, write_json
    from peftlab.bench.run import BenchOptions, run_bench
    from peftlab.bench.text import TextSizes
    from peftlab.utils.errors import UserError

    if args.png and args.only not in (None, "text"):
        raise UserError(f"--png draws the text figure, which --only {args.only} does not measure")
    architecture = {
        name: getattr(args, name)
        for name in ("depth", "embed_dim", "num_heads", "patch_size")
        if getattr(args, name) is not None
    }
    options = BenchOptions(
        model=args.model,
        img_size=args.img_size,
        architecture=architecture,
        batch=args.batch,
        dtype=args.dtype,
        repeats=args.repeats,
        matmul_size=args.matmul_size,
        device=args.device,
        default_study=Path(args.default_study),
        with_memory=not args.no_memory,
        large_model=args.large_model or None,
        large_steps=args.large_steps,
        large_weights=args.large_weights,
        malloc=args.malloc,
        with_compile=not args.no_compile,
        with_pin=not args.no_pin,
        only=args.only,
        num_workers=args.num_workers,
        data_images=args.data_images,
        data_cache=args.data_cache,
        data_layout=args.data_layout,
        data_model=args.data_model,
        text=TextSizes(args.text_layers, args.text_width, args.text_heads, args.text_length, args.text_batch),
    )
    report = run_bench(options, progress=lambda text: print(f"bench: {text}", file=sys.stderr, flush=True))
    if args.json:  # first: the measurement is kept whatever its printing does
        write_json(report, Path(args.json))
    print(format_report(report))
    if args.json:
        print(f"wrote {args.json}")
    if args.png:
        from peftlab.bench.plot import plot_text

        plot_text(report, Path(args.png))
        print(f"wrote {args.png}")
    return 0


def add_data(sub) -> None:
    p = sub.add_parser("data", help="dataset commands")
    data_sub = p.add_subparsers(
        dest="data_command",
        required=True,
        metavar="COMMAND",
        help="info, vtab-demo, fortunes-task, fortunes-corpus, fortunes-dialogue",
    )
    q = data_sub.add_parser("info", help="splits, sizes, classes and checksums of a dataset")
    q.add_argument("name", help="dataset name, e.g. fashion_mnist, cifar10, imagefolder")
    q.add_argument("--root", help="where the dataset lies (default: the places peftlab looks)")
    q.add_argument("--test-dir", help="imagefolder: the folder of class folders that is the test split")
    q.add_argument("--json", action="store_true", help='print JSON (with --check: its result under "check")')
    q.add_argument(
        "--check", action="store_true", help="check and decode every image file and list the ones a run refuses"
    )
    q.set_defaults(func=cmd_data_info)
    add_data_vtab_demo(data_sub)
    add_data_fortunes(data_sub)


def cmd_data_info(args) -> int:
    from peftlab.config.checks import TEXT_DATASET_NAMES
    from peftlab.config.schema import from_dict
    from peftlab.config.sections import DataConfig
    from peftlab.data import describe_data, format_data_info

    fields = {"name": args.name, "root": args.root, "test_dir": args.test_dir}
    cfg = from_dict(DataConfig, fields, prefix="data.")
    bad = []
    if args.check:  # first: describe_data refuses the first bad image, --check lists them all
        from peftlab.data.build import check_images

        checked, bad = check_images(cfg)
    info = None if bad else describe_data(cfg)
    if args.json:  # one JSON document, with or without bad images: a script parses it either way
        record = dataclasses.asdict(info) if info else {"name": cfg.name}
        if args.check:
            record["check"] = {"checked": checked, "bad": bad}
        print(json.dumps(record, indent=2))
        return 1 if bad else 0
    if info:
        print(printable(format_data_info(info), lines=True))  # class names are a received folder's names
    if args.check:
        for line in bad:
            print(printable(f"bad image: {line}"))
        if cfg.name in TEXT_DATASET_NAMES:  # every line of its files was read and checked above, as a run reads it
            print("checked   every text file, each line as a run reads it: none bad")
        else:
            print(f"checked   {checked:,} image files by decoding them: {len(bad):,} bad")
    return 1 if bad else 0


def add_data_vtab_demo(data_sub) -> None:
    q = data_sub.add_parser(
        "vtab-demo",
        help="write Fashion-MNIST as a task in VTAB-1k's layout (PNG files and "
        "list files), offline: the data of the end-to-end check configs/studies/vtab_demo.yaml",
    )
    q.add_argument("out", metavar="OUT", help="the folder that gets OUT/<task>/ (a VTAB-1k root)")
    q.add_argument("--task", default="fashion_mnist", help="the task's folder name (default fashion_mnist)")
    q.add_argument(
        "--test-size",
        type=at_least(0),
        default=2000,
        help="test images, class-stratified (default 2000; 0: all 10,000)",
    )
    q.add_argument("--seed", type=at_least(0), default=0, help="seed of the train800 / val200 / test draws (default 0)")
    q.add_argument("--root", help="where Fashion-MNIST lies (default: the places peftlab looks, never a download)")
    q.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    q.set_defaults(func=cmd_data_vtab_demo)


def cmd_data_vtab_demo(args) -> int:
    from peftlab.data.demo import write_vtab_demo

    task = write_vtab_demo(args.out, args.task, args.test_size, args.seed, args.root, progress=not args.quiet)
    for leftover in task.leftovers:
        print(f"note: {leftover} is what an interrupted vtab-demo left; delete it", file=sys.stderr)
    sizes = ", ".join(f"{name} {size:,}" for name, size in task.sizes.items())
    print(f"{'wrote' if task.written else 'already there, nothing written:'} {task.folder}: {sizes}")
    return 0


FORTUNES_DIR_HELP = "the fortune files (default: $PEFTLAB_FORTUNES_DIR, else /usr/share/games/fortunes)"
SEED_HELP = "seed of the {} (default 0)"


def add_data_fortunes(data_sub) -> None:
    commands = (
        (
            "fortunes-task",
            "write a text-classification task (data.name: text) from Debian's fortunes, offline: which category a "
            "quote comes from",
            "the task folder, data.root of a run (default: <data cache>/fortunes/task)",
            "per-class and test draws",
            "the classes: English fortune categories, comma-separated (default computers,men-women,politics,science)",
            cmd_data_fortunes_task,
        ),
        (
            "fortunes-corpus",
            "write the English fortunes outside the task's categories, one quote a line: an offline LM corpus",
            "the corpus folder (default: <data cache>/fortunes/corpus)",
            None,
            "the task's categories, left out of the corpus: the same --categories as fortunes-task's (default "
            "computers,men-women,politics,science)",
            cmd_data_fortunes_corpus,
        ),
        (
            "fortunes-dialogue",
            "write a dialogue-format instruction task (data.name: instructions) from Debian's fortunes, offline: "
            "a quote's first sentence as the user's turn, the rest as the reply",
            "the task folder, data.root of a run (default: <data cache>/fortunes/dialogue)",
            "train/validation/test draw",
            "English fortune categories, comma-separated (default computers,men-women,politics,science: those the "
            "fortunes corpus leaves out)",
            cmd_data_fortunes_dialogue,
        ),
    )
    for name, what, out, seeded, categories, func in commands:
        q = data_sub.add_parser(name, help=what)
        q.add_argument("--out", help=out)
        if seeded:
            q.add_argument("--seed", type=at_least(0), default=0, help=SEED_HELP.format(seeded))
        q.add_argument("--categories", help=categories)
        q.add_argument("--fortunes-dir", help=FORTUNES_DIR_HELP)
        q.set_defaults(func=func)


def cmd_data_fortunes_task(args) -> int:
    from peftlab.data.text.fortunes import parse_categories, write_fortunes_task

    task = write_fortunes_task(args.out, parse_categories(args.categories), args.seed, args.fortunes_dir)
    return report_fortunes(task, "fortunes-task")


def cmd_data_fortunes_corpus(args) -> int:
    from peftlab.data.text.fortunes import parse_categories, write_fortunes_corpus

    corpus = write_fortunes_corpus(args.out, parse_categories(args.categories), args.fortunes_dir)
    return report_fortunes(corpus, "fortunes-corpus")


def cmd_data_fortunes_dialogue(args) -> int:
    from peftlab.data.text.dialogue import write_fortunes_dialogue
    from peftlab.data.text.fortunes import parse_categories

    task = write_fortunes_dialogue(args.out, parse_categories(args.categories), args.seed, args.fortunes_dir)
    return report_fortunes(task, "fortunes-dialogue")


def report_fortunes(output, command: str) -> int:
    for leftover in output.leftovers:
        print(f"note: {leftover} is what an interrupted {command} left; delete it", file=sys.stderr)
    sizes = ", ".join(f"{name} {size:,} lines" for name, size in output.sizes.items())
    print(f"{'wrote' if output.written else 'already there, nothing written:'} {output.folder}: {sizes}")
    return 0


def add_config_reference(sub) -> None:
    p = sub.add_parser(
        "config-reference", help="every config key with its default and meaning (docs/configuration.md's table)"
    )
    p.set_defaults(func=cmd_config_reference)


def cmd_config_reference(args) -> int:
    from peftlab.config.reference import reference

    print(reference(), end="")
    return 0


def add_methods(sub) -> None:
    p = sub.add_parser(
        "methods",
        help="every method: built-in and PEFT's types by name (peft:<type>), what each adapts, whether it merges "
        "and whether it takes a quantized base",
    )
    p.add_argument("--json", action="store_true", help="one JSON list of rows instead of the table")
    p.set_defaults(func=cmd_methods)


def cmd_methods(args) -> int:
    from peftlab.tuners.catalog import method_rows, table_text

    rows = method_rows()
    print(json.dumps(rows, indent=1) if args.json else table_text(rows), end="\n" if args.json else "")
    return 0
