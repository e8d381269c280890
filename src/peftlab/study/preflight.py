"""What a study checks before any run starts: one function, ``check_study``, which the study
(``runner.run_study``) and its dry-run (``peftlab study --dry-run``) both call, so that a dry-run
refuses whatever the study would refuse before training, in the same line.

- every method, quant and tracker against a meta model of each architecture (``validate_study``);
- the executor: a search it cannot run (halving needs to stop trials, which only the local executor
  does), and what it needs on this machine (submitit and Slurm's commands, Ray);
- every file and directory the study writes, found as an entry of the wrong kind (a directory where
  result.json belongs, a file where a run directory belongs): one line naming it, instead of a
  traceback once the first runs or trials have trained;
- finished runs trained on a base file that has changed since (``stale``), unless the study's own
  pretraining has yet to write that base: then the study checks once it has;
- the data and the base weights files (``check_study_data``), which a dry-run checks after its listing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from peftlab.config.schema import to_dict
from peftlab.study.executors.executors import ExecutorOptions, check_ready, with_folder
from peftlab.study.executors.gpus import with_gpu_requests
from peftlab.study.phases import PHASES_FILE
from peftlab.study.records import RUNS_FILE
from peftlab.study.search import SELECTION, journal_path, tune_dir
from peftlab.study.spec import Study
from peftlab.study.stale import refuse_other_products, refuse_stale_runs
from peftlab.utils.errors import DataError, UserError, WeightsError
from peftlab.utils.files import RUN_KINDS, check_entries, check_kind, check_run_dir, refuse_link
from peftlab.utils.libraries import LIBRARY_LOG

# what --report writes in <study dir>/report/: two files, and figures and tables in their folders
REPORT_FILES = ("report.md", "results.csv")
REPORT_DIRECTORIES = ("figures", "tables")
REPORT_SUFFIXES = (".png", ".pdf", ".tex")


def check_study(
    study: Study,
    study_dir: Path,
    executor: ExecutorOptions = ExecutorOptions(),
    report: bool = False,
    data: bool = True,
) -> None:
    """A UserError line for the first thing that would stop ``study`` in ``study_dir`` before it
    trains (``report``: the study writes its report too); nothing is written. ``data=False``: its data is
    checked by the caller (a dry-run lists the runs first, then says what of the data is missing)."""
    validate_study(study)
    if data:
        check_study_data(study)
    check_executor(study, executor)
    check_study_files(study, study_dir, executor, report)
    refuse_other_products(study_dir)  # before the base is pretrained: finished runs of another pin's products
    if study.pretrain is None:
        refuse_stale_runs(study_dir)


def check_study_data(study: Study) -> None:
    """The data of every run (``data.checks.check_data``, each distinct data config once) and its base weights
    file: a missing root or dataset, one class folder, a list that does not parse, a ``model.pretrained`` file
    that is not there (unless the study's own pretraining writes it) stop the study in one line before any run
    folder is made, rather than failing every run. The line names how many runs it stops."""
    from peftlab.data.checks import check_data, data_key

    seen: dict[tuple, list] = {}
    for spec in study.runs:
        seen.setdefault(data_key(spec.config.data), []).append(spec)
    for specs in seen.values():
        cfg = specs[0].config
        try:
            check_data(cfg.data, cfg.model.task == "causal-lm")
        except DataError as err:
            raise DataError(f"{err} [stops {stopped(specs)}]") from None
    if study.pretrain is not None:  # the study writes its base before its runs need it
        return
    missing: dict[str, list] = {}
    for spec in study.runs:
        pretrained = spec.config.model.pretrained
        if pretrained not in ("none", "hub") and not Path(pretrained).is_file():
            missing.setdefault(pretrained, []).append(spec)
    for path, specs in missing.items():
        from peftlab.models.weights import missing_weights  # torch: only on the way to this line

        raise WeightsError(f"{missing_weights(path)} [stops {stopped(specs)}]")


def stopped(specs: list) -> str:
    """``N runs (variant, ...)``: what a missing input stops."""
    variants = sorted({spec.variant for spec in specs})
    more = ", ..." if len(variants) > 3 else ""
    return f"{len(specs)} run{'s' if len(specs) > 1 else ''} ({', '.join(variants[:3])}{more})"


def check_executor(study: Study, executor: ExecutorOptions) -> None:
    """What the executor refuses: a halving search anywhere but local, a missing package or Slurm, and what its
    cluster could never run or refuses (``executors.check_ready``: Slurm's partitions, nodes and test submission;
    whether the Ray address answers and lets the driver in)."""
    if executor.name != "local":
        halving = [m for m, s in study.tune.items() if s.stops_trials]
        if halving:
            what = "search: halving" if study.tune[halving[0]].search == "halving" else "rungs"
            raise UserError(
                f"tune.{what} (method '{halving[0]}') stops pruned trials while they run, "
                "which only --executor local does: use the local executor, or a search that stops none "
                "(random, a grid without rungs)"
            )
    # refuses --ray-gpus 0 for cuda; the GPUs each job asks for, as the submission will
    check_ready(with_gpu_requests(executor, [spec.config.train.device for spec in study.runs]))


def check_study_files(study: Study, study_dir: Path, executor: ExecutorOptions, report: bool) -> None:
    """Each path the study writes that exists as another kind; run directories with all their entries."""
    what = "study directory entry"
    check_kind(study_dir, True, "study directory")  # a file or a device: one line, before mkdir fails
    for name in ("study.yaml", LIBRARY_LOG, ".lock", PHASES_FILE, "command.json", "commands.jsonl", RUNS_FILE):
        check_kind(study_dir / name, False, what, link_ok=False)
    folder = with_folder(executor, study_dir).folder
    if folder is not None:  # the remote executor's job files or attempt counts
        check_kind(folder, True, "executor folder", link_ok=False)
    check_run_dirs(study_dir / "runs")
    if study.tune:
        check_kind(study_dir / "tune", True, what, link_ok=False)
    for method, search in study.tune.items():
        directory, journal = tune_dir(study_dir, method), journal_path(tune_dir(study_dir, method), search)
        check_kind(directory, True, what, link_ok=False)
        for path in (directory / SELECTION, journal, Path(f"{journal}.lock")):  # Optuna's lock: a link to it
            check_kind(path, False, what)
        check_run_dirs(directory / "runs")
    if report:
        check_report_files(study_dir / "report")


def check_run_dirs(runs: Path) -> None:
    """``runs`` holds run directories: each entry (hidden names aside) a directory whose own entries
    are of their kinds (``files.check_run_dir``). A missing ``runs`` is a study not started."""
    check_kind(runs, True, "study directory entry", link_ok=False)
    try:
        entries = sorted((e for e in os.scandir(runs) if not e.name.startswith(".")), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            check_entries(runs / entry.name, RUN_KINDS, "run directory entry")
        else:
            refuse_link(runs / entry.name, "run directory")  # a study trains into its own folder only
            check_run_dir(runs / entry.name)  # names what it is instead


def check_report_files(report: Path) -> None:
    """The report's folder, its files, and the figures and tables it writes (by their suffixes: other
    entries of those folders are not the report's)."""
    what = "report entry"
    check_kind(report, True, what, link_ok=False)
    for name in REPORT_DIRECTORIES:
        check_kind(report / name, True, what, link_ok=False)
    for name in REPORT_FILES:
        check_kind(report / name, False, what, link_ok=False)
    for name in REPORT_DIRECTORIES:
        try:
            entries = sorted(os.listdir(report / name))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.endswith(REPORT_SUFFIXES):
                check_kind(report / name / entry, False, what, link_ok=False)


def unwritten_text_base(study: Study, cfg):
    """``cfg``, or for a text run whose base model the study's pretraining has yet to write, ``cfg`` with
    the pretraining's architecture (its config.json: the same sizes, the vocabulary its tokenizer fills)."""
    if cfg.model.source != "hf-text" or study.pretrain is None or cfg.model.pretrained == "hub":
        return cfg
    if (Path(cfg.model.path) / "config.json").is_file():
        return cfg
    from peftlab.config.schema import load_config

    base = load_config(study.pretrain)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=base.model.path))


def validate_study(study: Study) -> None:
    """Model-dependent checks for each distinct model/method/quant before any run starts, answered from
    model records (``records.answers``): where one is missing, one meta model per architecture (its shapes,
    no weights) is built and each distinct method and quant checked against it, so 10,000 ranks cost
    10,000 checks, not models, once; later dry-runs read the records without torch.
    Runs share section objects (a configuration's seeds; equal sections, built once by
    ``config.from_dict``): a run whose sections were checked is passed over before they are compared by value."""
    from peftlab.config.checks import check_modality
    from peftlab.records.answers import check_against_model  # model records: torch only to build them
    from peftlab.training.tracking import check_trackers

    checked, seen, trackers = set(), set(), set()
    for spec in study.runs:
        cfg = spec.config
        if cfg.track not in trackers:
            trackers.add(cfg.track)
            check_trackers(cfg.track)  # a missing tracker package fails before any run starts
        sections = (cfg.model, cfg.method, cfg.quant)
        try:
            check_modality(cfg.model, cfg.data)
        except UserError as err:
            raise type(err)(f"study run '{spec.variant}': {err}") from None
        if tuple(map(id, sections)) in checked:  # the study's runs keep these objects alive: ids stay theirs
            continue
        checked.add(tuple(map(id, sections)))
        key = json.dumps([to_dict(section) for section in sections], default=str)
        if key in seen:
            continue
        seen.add(key)
        pretrained = cfg.model.pretrained
        try:  # the weights' shapes too, unless the study's pretraining has yet to write them
            check_against_model(
                unwritten_text_base(study, cfg),
                weights=pretrained not in ("none", "hub") and Path(pretrained).is_file(),
            )
        except UserError as err:
            raise type(err)(f"study run '{spec.variant}': {err}") from None
