"""The commands about a study: study, results, report, paper, submission.

Each ``add_<command>(subparsers)`` declares the command's arguments beside ``cmd_<command>(args)``,
which runs it and returns the exit status.
"""

from __future__ import annotations

import json
import sys
from importlib.util import find_spec
from pathlib import Path

from peftlab.cli.terminal import printable
from peftlab.utils.cpu import pin_arithmetic
from peftlab.utils.errors import UserError


def add_study(sub) -> None:
    p = sub.add_parser("study", help="run every run of a study (idempotent, resumable)")
    p.add_argument("study", help="study YAML")
    p.add_argument("--study-dir", help="default runs/<study name>")
    p.add_argument(
        "--workers",
        type=int,
        help="local worker processes, spread over the visible GPUs (CUDA_VISIBLE_DEVICES, else nvidia-smi's) in "
        "turn (default 1; with --runs-per-gpu N: N on each visible GPU)",
    )
    p.add_argument(
        "--runs-per-gpu",
        type=int,
        help="local: at most this many runs at once on one GPU; more --workers than that allows is refused",
    )
    p.add_argument(
        "--executor",
        choices=("local", "submitit", "ray"),
        default="local",
        help="where runs execute: local worker processes (default), Slurm jobs through submitit, or Ray "
        "tasks; submitit and ray need a file system shared with the driver (see docs/studies.md)",
    )
    p.add_argument(
        "--start-method",
        help="local: how worker processes start: forkserver (default on Linux: a process per run, forked from "
        "a server that imported torch once) or spawn (default on macOS: long-lived workers, each importing "
        "torch once and taking runs one after another)",
    )
    add_remote_flags(p)
    p.add_argument("--retry-failed", action="store_true", help="run failed and diverged runs again")
    p.add_argument(
        "--detach",
        action="store_true",
        help="with --executor submitit: submit the study as Slurm jobs that go on without this command (trials, "
        "then final runs, then the report, each after the one before) and return; the same command again says "
        "where it stands, and resumes what was lost",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="if another peftlab study holds the study directory, wait for it instead of exiting",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the study as a run would before it trains, then list the runs, their status and the time left",
    )
    p.add_argument(
        "--json", action="store_true", help="with --dry-run: print the plan (searches, runs, time left) as JSON"
    )
    p.add_argument(
        "--time-steps",
        action="store_true",
        help="with --dry-run: time a training step of each distinct configuration on this machine (random "
        "weights) and give the study's time from them, for sizing a study on a GPU before it starts",
    )
    p.add_argument("--report", action="store_true", help="write the report when the runs are done")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.set_defaults(func=cmd_study)


def add_remote_flags(p) -> None:
    """The flags of the Slurm (submitit) and Ray executors."""
    p.add_argument(
        "--slurm-cluster",
        choices=("slurm", "local"),
        help="submitit: slurm (default) or local (submitit's LocalExecutor: the jobs as local processes)",
    )
    p.add_argument("--slurm-partition", help="submitit: Slurm partition (default: the cluster's)")
    p.add_argument("--slurm-account", help="submitit: Slurm account to charge (sbatch --account; default: yours)")
    p.add_argument("--slurm-qos", help="submitit: Slurm quality of service (sbatch --qos; default: the account's)")
    p.add_argument(
        "--slurm-time", help="submitit: time limit per run, minutes or HH:MM:SS or D-HH:MM (default 4:00:00)"
    )
    p.add_argument("--slurm-cpus", type=int, help="submitit: CPUs per run (default 4)")
    p.add_argument("--slurm-gpus", type=int, help="submitit: GPUs per run (default 1 if train.device is cuda, else 0)")
    p.add_argument("--slurm-mem", type=int, help="submitit: memory per run in GB (default: the partition's)")
    p.add_argument("--slurm-constraint", help="submitit: node features a run needs (sbatch --constraint)")
    p.add_argument(
        "--slurm-sbatch",
        action="append",
        metavar="--NAME[=VALUE]",
        help="submitit: another sbatch option for every job, e.g. --slurm-sbatch=--exclusive (repeatable; replaces "
        "the study file's executor.slurm.sbatch)",
    )
    p.add_argument(
        "--slurm-array-parallelism",
        type=int,
        help="submitit: at most this many runs at once (default: submitit's, 256)",
    )
    p.add_argument(
        "--slurm-lost-after",
        type=float,
        help="submitit: seconds a job may be out of Slurm's queue before its result file appears, after "
        "which it counts as lost and its run stays pending (default 15; longer for a slow shared "
        "file system)",
    )
    p.add_argument(
        "--ray-address",
        help="ray: address of a running Ray cluster, e.g. 10.0.0.1:6379 (default "
        "$RAY_ADDRESS, else a local Ray started for the study)",
    )
    p.add_argument("--ray-cpus", type=float, help="ray: CPUs per run (default 1)")
    p.add_argument("--ray-gpus", type=float, help="ray: GPUs per run (default 1 if train.device is cuda, else 0)")
    p.add_argument(
        "--ray-resource",
        action="append",
        metavar="NAME=AMOUNT",
        help="ray: a custom resource per run (repeatable; replaces the study file's executor.ray.resources)",
    )


def cmd_study(args) -> int:
    from peftlab.study.estimate import dry_run_plan, dry_run_table
    from peftlab.study.runner import run_study
    from peftlab.study.spec import load_study

    study = load_study(args.study)
    if any(spec.config.train.reproducible for spec in study.runs):
        pin_arithmetic()  # before the workers (forkserver or spawned) import torch: they inherit it
    study_dir = Path(args.study_dir or Path("runs") / study.name)
    if args.workers is None:
        from peftlab.study.executors.gpus import default_workers

        args.workers = default_workers(args.runs_per_gpu)
    if args.workers < 1:
        raise UserError(f"--workers={args.workers} is invalid: expected an integer >= 1")
    executor = executor_options(args, study.executor)
    if args.detach and args.executor != "submitit":
        raise UserError(
            f"--detach goes with --executor submitit (Slurm jobs that outlive the command), not {args.executor}"
        )
    if args.dry_run:  # refuses what the study would refuse before it trains, in the same words
        from peftlab.study.preflight import check_study, check_study_data

        check_study(study, study_dir, executor, report=args.report, data=False)
        if args.json:  # json.dumps escapes every control character a received study's names hold
            print(json.dumps(dry_run_plan(study, study_dir)), flush=True)
        else:
            print(printable(dry_run_table(study, study_dir), lines=True), flush=True)  # a received study's names
            if args.detach:
                print(
                    "--detach: each batch above would go to Slurm as a job array, followed by a job "
                    "(--dependency=afterany) that runs the study again and submits the next; nothing was submitted",
                    flush=True,
                )
        check_study_data(study)  # after the listing: a study planned on a machine without its data is still listed
        if args.time_steps:
            from peftlab.bench.plan import time_plan
            from peftlab.study.estimate import planned_configs

            say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
            print("\n".join(time_plan(planned_configs(study), progress=say)))
        return 0
    if args.time_steps or args.json:
        flag = "--time-steps times a study's steps" if args.time_steps else "--json prints a study's plan"
        raise UserError(f"{flag} for --dry-run: add --dry-run")
    if args.detach:
        from peftlab.study.executors.detach import detach_study

        summary = detach_study(study, study_dir, executor, continue_detached, args.report, args.retry_failed)
        record_command(study_dir)
        return 0 if summary is None else end_study(summary, study_dir, args.report)
    summary = run_study(
        study,
        study_dir,
        workers=args.workers,
        retry_failed=args.retry_failed,
        progress=not args.quiet,
        wait=args.wait,
        executor=executor,
        report=args.report,
        wait_flag="--wait",
    )
    record_command(study_dir, warn=summary.ok)
    return end_study(summary, study_dir, args.report)


def end_study(summary, study_dir: Path, report: bool) -> int:
    """The study's summary, then its report where asked: the exit status."""
    from peftlab.study.runner import format_summary

    print(printable(format_summary(summary, study_dir), lines=True))  # its runs' recorded errors, escaped
    if report:
        from peftlab.analysis.report.build import write_report

        name_superseded(study_dir)
        announce_report(study_dir, write_report(study_dir))
    return 0 if summary.ok else 1


def continue_detached(study_path: str, study_dir: str, executor, report: bool) -> int:
    """A detached study's continuation job (``study.executors.detach``): its next step, and its end (summary and
    report) as the command's, in the job's log."""
    from peftlab.study.executors.detach import detach_study
    from peftlab.study.spec import load_study
    from peftlab.utils.libraries import quiet_libraries

    quiet_libraries()  # as the command does: what Slurm's commands and the libraries say goes to library.log
    print(f"peftlab: continuing the detached study {study_path} in {study_dir}", flush=True)
    study = load_study(study_path)
    summary = detach_study(study, Path(study_dir), executor, continue_detached, report, continuing=True)
    return 0 if summary is None else end_study(summary, Path(study_dir), report)


COMMANDS_FILE = "commands.jsonl"  # every command that ran the study, one line each: REPRODUCE.md gives them all


def record_command(study_dir: Path, warn: bool = True) -> None:
    """Write STUDY_DIR/command.json: this process's ``peftlab`` arguments and the directory they were given in,
    and append the same record to commands.jsonl (earlier calls may have trained most runs). A file system
    that refuses it (full, read-only) costs the paper its command, not the study its results: one warning line,
    none after a study whose runs already said why they stay pending (the next command that finishes them
    records itself)."""
    import json
    import os

    from peftlab.study.records import COMMAND_FILE, CommandRecord
    from peftlab.utils.files import one_line, write_json_atomic

    record: CommandRecord = {"argv": ["peftlab", *sys.argv[1:]], "cwd": str(Path.cwd())}
    try:
        write_json_atomic(study_dir / COMMAND_FILE, record)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW  # never through a link
        with open(os.open(study_dir / COMMANDS_FILE, flags, 0o666), "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as err:
        if warn:
            print(
                f"peftlab: warning: the command was not recorded in {study_dir / COMMAND_FILE}: {one_line(err)}",
                file=sys.stderr,
            )


EXECUTOR_FLAGS = {
    "local": ("start_method", "runs_per_gpu"),
    "submitit": (
        "slurm_cluster",
        "slurm_partition",
        "slurm_account",
        "slurm_qos",
        "slurm_time",
        "slurm_cpus",
        "slurm_gpus",
        "slurm_mem",
        "slurm_array_parallelism",
        "slurm_lost_after",
        "slurm_constraint",
        "slurm_sbatch",
    ),
    "ray": ("ray_address", "ray_cpus", "ray_gpus", "ray_resource"),
}


def executor_options(args, section: dict | None = None):
    """``--executor`` and its options, over the study file's ``executor:`` section for that executor (``section``:
    ``Study.executor``); an option of another executor is an error, not ignored."""
    from peftlab.study.executors.executors import ExecutorOptions

    if args.workers > 1 and args.executor != "local":
        raise UserError(
            f"--workers goes with --executor local; with {args.executor} the jobs run as the "
            + ("--slurm-array-parallelism allows" if args.executor == "submitit" else "Ray cluster allows")
        )
    given = {}
    for name, flags in EXECUTOR_FLAGS.items():
        for flag in flags:
            value = getattr(args, flag)
            if value is None:
                continue
            if name != args.executor:
                raise UserError(f"--{flag.replace('_', '-')} goes with --executor {name}, not {args.executor}")
            given.update(flag_value(flag, value))
    from_study = (section or {}).get(args.executor, {})
    return ExecutorOptions(
        name=args.executor,
        **{**from_study, **given},
        from_study=frozenset(from_study) - set(given),
    )


def flag_value(flag: str, value) -> dict:
    """ExecutorOptions' field and value for one flag: ``--slurm-time`` in minutes, ``--slurm-sbatch`` checked,
    ``--ray-resource NAME=AMOUNT`` (repeated) as a mapping."""
    from peftlab.study.executors.section import parse_minutes, resources, sbatch_option

    try:
        if flag == "slurm_time":
            return {flag: parse_minutes(value)}
        if flag == "slurm_sbatch":
            return {flag: tuple(sbatch_option(item) for item in value)}
        if flag == "ray_resource":
            pairs = [item.partition("=") for item in value]
            if any(not equals for _, equals, _ in pairs):
                raise ValueError("expected NAME=AMOUNT")
            return {"ray_resources": resources({name: float(amount) for name, _, amount in pairs})}
    except ValueError as err:
        raise UserError(f"--{flag.replace('_', '-')}={' '.join(value)} is invalid: {err}") from None
    return {flag: value}


def add_results(sub) -> None:
    p = sub.add_parser("results", help="one row per run of a study: config axes, metrics, status")
    p.add_argument("study_dir", help="a study directory (runs/<study name>)")
    p.add_argument(
        "--format", choices=("csv", "parquet", "markdown"), default="csv", help="output format (default csv)"
    )
    p.add_argument(
        "--columns",
        help="comma-separated columns to keep, in that order (default: all; markdown: "
        "run_id, variant, seed, status, test top-1/top-5, trainable params, "
        "train seconds, error)",
    )
    p.add_argument("--out", help="output file (default stdout; parquet: STUDY_DIR/results.parquet)")
    p.set_defaults(func=cmd_results)


def cmd_results(args) -> int:
    from peftlab.cli.api import results  # the Python API's

    written = results(args.study_dir, args.out, format=args.format, columns=args.columns)
    name_superseded(args.study_dir)
    if args.format == "parquet":
        import pyarrow.parquet

        rows = pyarrow.parquet.ParquetFile(written).metadata.num_rows
        print(printable(f"wrote {rows} rows to {written}"))
    elif args.out is None:  # a received run's status or error holding an escape sequence: shown, not sent raw
        sys.stdout.write(printable(written, lines=True))
    return 0


def add_report(sub) -> None:
    p = sub.add_parser("report", help="statistics, figures, LaTeX tables and report.md of a study")
    p.add_argument("study_dir", help="a study directory (runs/<study name>)")
    p.add_argument("--baseline", help="variant the others are compared with (default: full, if present)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from peftlab.cli.api import report  # the Python API's

    if (Path(args.study_dir) / "runs").is_dir():
        name_superseded(args.study_dir)
    announce_report(Path(args.study_dir), report(args.study_dir, baseline=args.baseline))
    return 0


def name_superseded(study_dir) -> None:
    """One line on stderr naming the runs of another version of the study, which its outputs leave out."""
    from peftlab.analysis.results.load import superseded_line

    line = superseded_line(study_dir)
    if line:  # names from a received folder: no escape sequence reaches the terminal
        print(f"peftlab: note: {printable(line)}", file=sys.stderr, flush=True)


def announce_report(study_dir: Path, report: Path) -> None:
    """Print where the report is; a study tracked with MLflow also gets it on the study's parent run."""
    print(f"report: {report}")
    if find_spec("mlflow") is None:
        return
    from peftlab.training.tracking.mlflow_sink import attach_report

    files = [report] + sorted(p for p in (report.parent / "figures").glob("*") if p.suffix in (".png", ".pdf"))
    parent = attach_report(study_dir, files, report.parent)
    if parent:
        print(f"report: attached {len(files)} files to MLflow run {parent} (the study's parent run)")


def add_paper(sub) -> None:
    p = sub.add_parser("paper", help="LaTeX paper of a study (figures, tables, results.tex) compiled to main.pdf")
    p.add_argument("study_dir", help="a study directory (runs/<study name>)")
    p.add_argument("--out", help="output directory (default STUDY_DIR/paper)")
    p.add_argument("--baseline", help="variant the others are compared with (default: full, if present)")
    p.add_argument("--only", choices=("figures", "tables"), help="write only the figures or only the tables")
    p.add_argument("--no-compile", action="store_true", help="write the LaTeX sources without compiling them")
    p.add_argument("--literature", help="published numbers for the literature table (default configs/literature.yaml)")
    p.add_argument(
        "--all-literature",
        action="store_true",
        help="every row of the literature file (default: the rows measured on the study's datasets)",
    )
    p.set_defaults(func=cmd_paper)


def cmd_paper(args) -> int:
    from peftlab.cli.api import paper  # the Python API's

    name_superseded(args.study_dir)
    path = paper(
        args.study_dir,
        args.out,
        baseline=args.baseline,
        literature=args.literature,
        only=args.only,
        compile=not args.no_compile,
        all_literature=args.all_literature,
    )
    print(f"paper: {path}")
    return 0


def add_submission(sub) -> None:
    p = sub.add_parser("submission", help="one archive: paper, results, configs, lock file, REPRODUCE.md, SHA-256 sums")
    p.add_argument("study_dir", help="a study directory (runs/<study name>)")
    p.add_argument("--study", required=True, help="the study YAML the runs came from")
    p.add_argument("--paper", help="the compiled paper directory (default STUDY_DIR/paper)")
    p.add_argument("--out", help="archive path (default STUDY_DIR/<study>-submission.tar.gz)")
    p.set_defaults(func=cmd_submission)


def cmd_submission(args) -> int:
    from peftlab.cli.api import submission  # the Python API's

    name_superseded(args.study_dir)
    print(f"submission: {submission(args.study_dir, args.study, paper=args.paper, out=args.out)}")
    return 0
