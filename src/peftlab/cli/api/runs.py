"""The Python API on one run (docs/python-api.md): ``train``, ``validate`` and ``params`` of a run config (a file, a
dict of its keys or a RunConfig). The commands ``peftlab train``, ``validate`` and ``params`` call these. Each function
imports what it needs when called, so that ``import peftlab`` stays light (no torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from peftlab.utils.errors import api, check_bool, check_overrides, check_path

if TYPE_CHECKING:
    from pathlib import Path


@api(trains=True)
def train(config, overrides=(), *, run_dir: str | Path | None = None, progress: bool = False) -> dict:
    """Train one run, as ``peftlab train CONFIG [OVERRIDES] --run-dir DIR`` does (the command calls this).

    ``config``: a run config YAML (a path), a dict of its keys (``{"method": {"name": "lora", "r": 8}, ...}``) or a
    ``peftlab.config.schema.RunConfig``; ``overrides``: dotted ``key=value`` strings (``["method.r=16",
    "train.lr=1e-3"]``) or a nested dict, applied over it. A file's relative paths are its folder's, a dict's and a
    RunConfig's the current directory's (``config.schema.run_config``), in this process and in the pinned child.
    ``run_dir``: default ``runs/<config name>``; a directory that holds the run already resumes or returns it.
    Returns the run's record, as its result.json holds it (status, metrics, params, provenance, ...), a ``RunRecord``:
    a dict that a notebook shows as a table, its folder ``record.run_dir``. A run that fails or diverges is a record
    with that status, not an exception; a config or data mistake raises ``peftlab.utils.errors.UserError`` (one line)
    before the run directory is made. ``train.reproducible`` pins the CPU arithmetic: where torch already runs
    unpinned in this process (a kernel that imported it first), the run trains in a child process started with the
    pin, as ``peftlab train`` trains it (the same record and weights)."""
    from pathlib import Path

    from peftlab.cli.api.display import RunRecord
    from peftlab.utils import cpu

    check_bool("progress", progress)
    check_path("run_dir", run_dir, optional=True)
    cfg = checked_config(config, overrides)
    run_dir = Path(run_dir or Path("runs") / cfg.name)
    if cfg.train.reproducible and cpu.torch_runs_unpinned():
        from peftlab.training.run import train_in_pinned_process

        check_before_run_dir(cfg, run_dir)
        return RunRecord(train_in_pinned_process(cfg, run_dir, progress=progress), run_dir)
    if cfg.train.reproducible:
        cpu.pin_arithmetic()  # torch not imported yet: pinned from its import on
    from peftlab.training.run import train as train_run
    from peftlab.utils.libraries import quieted

    check_before_run_dir(cfg, run_dir)
    with quieted():  # the libraries' warnings and records to the run's library.log, as the command's
        return RunRecord(train_run(cfg, run_dir, progress=progress), run_dir)


def checked_config(config, overrides):
    """The RunConfig of ``config`` (a run config file, a dict of its keys or a RunConfig) and ``overrides``
    (``config.schema.run_config``: the file's checks, its one-line errors), their types checked first."""
    from peftlab.config.schema import RunConfig, run_config

    if not isinstance(config, (dict, RunConfig)):
        check_path("config", config, what="a run config file (a path), a dict of its keys or a RunConfig")
    return run_config(config, check_overrides(overrides))


def check_before_run_dir(cfg, run_dir) -> None:
    """What ``train`` refuses before the run folder exists, as validate refuses it: what only the model tells (a
    method of another family, a plugin without apply, a base weights file that is not there or does not fit: the
    meta device) and what the data tells without decoding it (a missing root, one class folder, a list that does
    not parse)."""
    from peftlab.config.checks import check_modality
    from peftlab.training.tracking import check_trackers

    check_modality(cfg.model, cfg.data)
    check_trackers(cfg.track)  # each tracker's package, as validate refuses it
    if run_dir.exists():
        return
    from peftlab.data.checks import check_data
    from peftlab.tuners.params import check_against_model

    check_against_model(cfg, weights=True)
    check_data(cfg.data, cfg.model.task == "causal-lm")


@api()
def validate(config, overrides=()) -> dict:
    """Check a run config as ``peftlab validate`` does (the command calls this), the checks that need the model and
    the data included, before anything trains: a mistake is a ``UserError`` naming the field. ``config``: a run
    config file, a dict of its keys or a RunConfig, as ``train`` takes it. Returns ``{"config", "valid": True, "ranks",
    "memory_estimate", "resolved"}`` (``config`` the file's path, None for a dict or a RunConfig; the resolved config
    as a dict)."""
    from peftlab.config.checks import check_num_classes
    from peftlab.config.schema import RunConfig, to_dict
    from peftlab.data.checks import check_data
    from peftlab.records.answers import check_against_model, check_config_fits
    from peftlab.training.tracking import check_trackers

    cfg = checked_config(config, overrides)
    check_device(cfg)  # this machine: a CUDA device or fp16 where there is no GPU
    check_trackers(cfg.track)  # each tracker named in track is installed, as the run refuses it
    check_num_classes(cfg)  # what train refuses once it has read the data
    check_data(cfg.data, cfg.model.task == "causal-lm")  # found, its folders and lists, before any run folder
    ranks = check_against_model(cfg, weights=True)  # from the model's records: torch only to build them
    estimate = check_config_fits(cfg)  # train refuses a run whose training memory does not fit: so does validate
    return {
        "config": None if isinstance(config, (dict, RunConfig)) else str(config),
        "valid": True,
        "ranks": ranks or None,
        "memory_estimate": estimate,
        "resolved": to_dict(cfg),
    }


def check_device(cfg) -> None:
    """``training.runtime.check_runtime``, which imports torch, unless the answer is known without it: on the
    CPU or the device peftlab chooses (auto), fp32, bf16 (every device takes it) and auto pass; fp16 (not on a
    CPU) and a named GPU need torch to tell."""
    if cfg.train.device in ("auto", "cpu") and cfg.train.precision in ("auto", "fp32", "bf16"):
        return
    from peftlab.training.runtime import check_runtime

    check_runtime(cfg.train.device, cfg.train.precision)


@api()
def params(model: str | Path | dict, overrides=(), **options) -> dict:
    """Total and trainable parameter counts, as ``peftlab params`` prints them (the command calls this), from the
    model's records on the meta device (no weights read): ``model`` a timm model name, an HF model folder, an HF
    hub repository ``org/name[@revision]`` or a run config (a file, a dict of its keys or a RunConfig, as ``train``
    takes it: then its model and method, with ``overrides``). ``options`` as the command's flags: num_classes, task,
    img_size, patch_size, depth, embed_dim, num_heads, method, r, targets, num_virtual_tokens. Returns ``{"total",
    "trainable", "trainable_ratio", "adapter", "in_place", "head", "num_classes", "model", "method", "task",
    "path"}`` (``peftlab params --json`` prints all but the last two)."""
    from peftlab.config.schema import RunConfig
    from peftlab.records.answers import count_parameters
    from peftlab.records.params_request import OPTIONS, params_config
    from peftlab.utils.errors import UserError

    if not isinstance(model, (dict, RunConfig)):
        check_path(
            "model", model, what="a model name, an HF model folder or a run config (a file, a dict or a RunConfig)"
        )
        model = str(model)
    unknown = [name for name in options if name not in OPTIONS]
    if unknown:
        raise UserError(f"params() got an unknown option {unknown[0]}=: expected one of {', '.join(OPTIONS)}")
    cfg = params_config(model, check_overrides(overrides), options)
    path = cfg.model.path if cfg.model.source != "timm" else None  # an HF model folder's
    return {**count_parameters(cfg), "task": cfg.model.task, "path": path}
