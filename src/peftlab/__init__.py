"""peftlab: parameter-efficient fine-tuning studies of vision transformers.

The Python API, for notebooks and scripts (docs/python-api.md): the code the ``peftlab`` command calls, each
function importing what it needs when called, so that ``import peftlab`` stays light (no torch)::

    import peftlab

    result = peftlab.train("configs/downstream.yaml", ["method.r=16"], run_dir="runs/r16")  # result.json's record
    summary = peftlab.run_study("configs/studies/default.yaml", workers=2)                    # runs/default
    df = peftlab.load_results("runs/default")                                 # one row per run (pandas)
    tuner = peftlab.load_trained("runs/r16")                                  # tuner.model: the trained model
    peftlab.predict("runs/r16", ["cat.jpg"], top_k=3)                         # class names and probabilities
"""

from __future__ import annotations

__version__ = "0.1.0"

# First, before anything heavy: the command's Ctrl-C waits for the command to take it (utils/startup.py).
from peftlab.utils.startup import hold_stops_for_the_command

hold_stops_for_the_command()

# The methods register their config classes in peftlab.config.methods, the built-ins and the finder of
# plugins: imported here, the registry is filled whatever peftlab module is imported first (timm's models
# register themselves the same way). It imports no torch.
import peftlab.tuners.plugins  # noqa: E402, F401

__all__ = ["train", "run_study", "load_results", "load_trained", "predict"]  # the Python API, below

from typing import TYPE_CHECKING  # noqa: E402  (after the hold, as every import here)

if TYPE_CHECKING:
    from pathlib import Path


def train(config, overrides=(), *, run_dir: str | Path | None = None, progress: bool = False) -> dict:
    """Train one run, as ``peftlab train CONFIG [OVERRIDES] --run-dir DIR`` does (the command calls this).

    ``config``: a run config YAML (a path) or a loaded ``peftlab.config.schema.RunConfig``; ``overrides``: dotted
    ``key=value`` strings (``["method.r=16", "train.lr=1e-3"]``) or a nested dict, applied over the file.
    ``run_dir``: default ``runs/<config name>``; a directory that holds the run already resumes or returns it.
    Returns the run's record, as its result.json holds it (status, metrics, params, provenance, ...): a run that
    fails or diverges is a record with that status, not an exception; a config or data mistake raises
    ``peftlab.utils.errors.UserError`` (one line) before the run directory is made. ``train.reproducible``
    pins the CPU arithmetic, which must happen before torch is imported (a fresh kernel)."""
    from pathlib import Path

    from peftlab.config.schema import RunConfig, load_config
    from peftlab.utils.cpu import pin_arithmetic

    if isinstance(config, RunConfig):
        if overrides:
            raise TypeError("overrides go with a config file; apply them to a RunConfig with dataclasses.replace")
        cfg = config
    else:
        cfg = load_config(config, overrides if isinstance(overrides, dict) else list(overrides))
    if cfg.train.reproducible:
        pin_arithmetic()
    from peftlab.config.checks import check_modality
    from peftlab.training.run import train as train_run

    check_modality(cfg.model, cfg.data)
    run_dir = Path(run_dir or Path("runs") / cfg.name)
    if not run_dir.exists():
        # refused before the folder exists, as validate refuses it: what only the model tells (a method of another
        # family, a plugin without apply, a base weights file that is not there or does not fit: the meta device)
        # and what the data tells without decoding it (a missing root, one class folder, a list that does not parse)
        from peftlab.data.checks import check_data
        from peftlab.tuners.params import check_against_model

        check_against_model(cfg, weights=True)
        check_data(cfg.data, cfg.model.task == "causal-lm")
    return train_run(cfg, run_dir, progress=progress)


def run_study(
    study: str | Path,
    study_dir: str | Path | None = None,
    *,
    workers: int = 1,
    retry_failed: bool = False,
    report: bool = False,
    progress: bool = False,
):
    """Run every pending run of a study file, as ``peftlab study STUDY --study-dir DIR --workers N`` does
    (``peftlab.study.runner.run_study``, which the command calls; local worker processes). ``study_dir``:
    default ``runs/<study name>``; a second call resumes it. ``report``: write its report (report/report.md)
    once the runs are done. Returns the ``StudySummary`` (``.ok``, ``.completed``, ``.failed`` with their errors,
    ``.pending``); the results are then ``load_results(study_dir)``."""
    from pathlib import Path

    from peftlab.study.runner import run_study as run_study_dir
    from peftlab.study.spec import load_study
    from peftlab.utils.cpu import pin_arithmetic

    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        from peftlab.utils.errors import UserError

        raise UserError(f"workers={workers!r} is invalid: expected an integer >= 1")
    loaded = load_study(study)
    if any(spec.config.train.reproducible for spec in loaded.runs):
        pin_arithmetic()  # before the workers import torch: they inherit it
    study_dir = Path(study_dir or Path("runs") / loaded.name)
    summary = run_study_dir(
        loaded, study_dir, workers=workers, retry_failed=retry_failed, progress=progress, report=report
    )
    if report:
        from peftlab.analysis.report.build import write_report

        write_report(study_dir)
    return summary


def load_results(study_dir: str | Path):
    """A study's runs as a pandas DataFrame, one row per run (``peftlab results``' table): run_id, variant, method,
    seed, status, error, every config field as ``config.<section>.<field>``, the metrics (``metrics.test_top1``,
    ...), parameter counts, memory and timings (``peftlab.analysis.results.load.load_results``)."""
    from peftlab.analysis.results.load import load_results as load_study_results

    return load_study_results(study_dir)


def load_trained(run_dir: str | Path):
    """A finished run's tuned model, rebuilt from its config.yaml and adapter.safetensors on the CPU (what
    ``peftlab export`` loads): ``tuner.model`` is the trained model (a torch module taking images as the run's
    data made them), ``tuner.merged_model()`` the merged copy where the method merges."""
    from peftlab.training.export import load_trained as load_run

    return load_run(run_dir)


def predict(run_dir: str | Path, images, top_k: int = 5) -> list[dict]:
    """Each image's ``top_k`` classes by a finished run, most probable first, as ``peftlab predict`` prints them:
    ``[{"image": path, "top_k": [{"class": name, "index": i, "probability": p}, ...]}, ...]``. ``images``: an
    image file or folder, or a list of them. The images are made exactly as the run made its test images (its
    resize, interpolation and normalisation); the class names are the run's data's
    (``peftlab.training.evaluate.predict``)."""
    from peftlab.training.evaluate import predict as predict_images

    return predict_images(run_dir, images, top_k)
