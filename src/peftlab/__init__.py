"""peftlab: parameter-efficient fine-tuning studies of vision transformers and language models.

The Python API, for notebooks and scripts (docs/python-api.md): the code the ``peftlab`` commands call, each
function importing what it needs when called, so that ``import peftlab`` stays light (no torch)::

    import peftlab

    result = peftlab.train("configs/downstream.yaml", ["method.r=16"], run_dir="runs/r16")  # result.json's record
    peftlab.train({"method": {"name": "lora"}, "data": {"root": "images"}})  # a dict: its paths this folder's
    summary = peftlab.run_study("configs/studies/default.yaml", workers=2)                    # runs/default
    df = peftlab.load_results("runs/default")                                 # one row per run (pandas)
    tuner = peftlab.load_trained("runs/r16")                                  # tuner.model: the trained model
    peftlab.predict("runs/r16", ["cat.jpg"], top_k=3)                         # class names and probabilities

and one function per command beside them: ``export``, ``results``, ``report``, ``paper``, ``submission``,
``reproduce``, ``validate``, ``params``. Those on a study's results (``load_results``, ``results``, ``report``,
``paper``, ``submission``, ``reproduce``) are in ``peftlab/cli/api_results.py``, the rest here. A mistake is one
``peftlab.utils.errors.UserError`` naming the parameter; inside IPython it shows as its one line
(``peftlab.utils.errors``).
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
from peftlab.utils.errors import (  # noqa: E402  (after the hold, as every import here)
    api,
    check_bool,
    check_overrides,
    check_path,
    check_paths,
    show_errors_short,
)

__all__ = [  # the Python API, below
    "train",
    "run_study",
    "load_results",
    "load_trained",
    "predict",
    "export",
    "results",
    "report",
    "paper",
    "submission",
    "reproduce",
    "validate",
    "params",
]

show_errors_short()  # a UserError is its one line in IPython (and a short error in a script)

from typing import TYPE_CHECKING  # noqa: E402

# The API on a study's results (load_results, results, report, paper, submission, reproduce): a module of its own
from peftlab.cli.api_results import load_results, paper, report, reproduce, results, submission  # noqa: E402

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


class RunRecord(dict):
    """What ``train`` returns: the run's record as its result.json holds it (a dict: ``record["status"]``,
    ``record["metrics"]["test_top1"]``), and ``record.run_dir``, the folder the run is in (an attribute: result.json
    does not record where it lies, so the dict equals the file). A notebook cell that ends with it shows a table of
    its method, scores, parameters, pin and folder (``_repr_html_``; ``repr`` the same as a few lines, ``summary()``),
    not the whole record (``print(record)`` or ``dict(record)`` shows that)."""

    def __init__(self, record: dict, run_dir: str | Path):
        super().__init__(record)
        self.run_dir = run_dir

    def facts(self) -> tuple[str, list[tuple[str, str]]]:
        """(title, facts): the run folder and status, the error of a run that failed, its method, model and data, its
        test scores (top-1 and top-5 in %, a causal LM's perplexity, the others as numbers), its trainable parameters
        and whether its CPU arithmetic was pinned (where the record says)."""
        config, metrics, params = self.get("config") or {}, self.get("metrics") or {}, self.get("params") or {}
        method = config.get("method") or {}
        rank = f" (r={method['r']})" if method.get("r") is not None else ""
        facts = [("error", str(self["error"]))] if self.get("error") else []
        facts.append(("method", f"{method.get('name')}{rank}"))
        facts += [(key, str((config.get(key) or {}).get("name"))) for key in ("model", "data")]
        for name, value in metrics.items():  # test_top1 -> "test top-1", merged_test_top1, test_loss, ...
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "test_" in name:
                shown = f"{value:.2%}" if name.endswith(("_top1", "_top5")) else f"{value:.4g}"
                facts.append((name.replace("_", " ").replace("top1", "top-1").replace("top5", "top-5"), shown))
        if params.get("trainable") is not None and params.get("total"):
            facts.append(("trainable parameters", f"{params['trainable']:,} of {params['total']:,}"))
        pinned = ((self.get("provenance") or {}).get("arithmetic") or {}).get("pinned")
        if isinstance(pinned, bool):
            facts.append(("CPU arithmetic", "pinned" if pinned else "not pinned"))
        return f"run {self.run_dir}: {self.get('status')}", facts

    def summary(self) -> str:
        """A few lines: the run folder and status (the error of a run that failed), its method, model and data, and its
        test top-1 (a causal LM's perplexity) with its trainable parameters and its pin."""
        from peftlab.utils.files import printable

        title, facts = self.facts()
        found = dict(facts)
        error = f": {found['error']}" if "error" in found else ""
        lines = [title + error, f"method {found['method']}, model {found['model']}, data {found['data']}"]
        scores = [f"{name} {found[name]}" for name in ("test top-1", "test perplexity") if name in found]
        if "trainable parameters" in found:
            scores.append(found["trainable parameters"].replace(" of ", " trainable parameters of ", 1))
        if "CPU arithmetic" in found:
            scores.append(f"CPU arithmetic {found['CPU arithmetic']}")
        lines += ["; ".join(scores)] if scores else []
        lines.append('a dict of result.json\'s keys (record["metrics"], ...), record.run_dir: print(record) shows all')
        return "\n".join(printable(line) for line in lines)

    def __repr__(self) -> str:
        return self.summary()

    def __str__(self) -> str:  # print(record): the whole record, as a dict prints
        return dict.__repr__(self)

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        """IPython's text of the record (a notebook cell's last expression, the IPython prompt): its summary."""
        printer.text(self.summary())

    def _repr_html_(self) -> str:
        """A notebook's view of the record: its title and facts as a table, every text escaped."""
        from peftlab.utils.files import html_view

        return html_view(*self.facts())


@api(trains=True)
def run_study(
    study: str | Path | dict,
    study_dir: str | Path | None = None,
    *,
    workers: int = 1,
    retry_failed: bool = False,
    report: bool = False,
    progress: bool = False,
):
    """Run every pending run of a study, as ``peftlab study STUDY --study-dir DIR --workers N`` does
    (``peftlab.study.runner.run_study``, which the command calls; local worker processes). ``study``: a study file,
    or a dict of its keys whose paths (``base``, ``data.root``, ...) are the current directory's
    (``study.keys.study_file``; STUDY_DIR/study.yaml is then its study file). ``study_dir``: default ``runs/<study
    name>``; a second call resumes it. ``report``: write its report (report/report.md) once the runs are done.
    Returns a ``StudyResult``, the ``StudySummary`` (``.ok``, ``.completed``, ``.failed`` with their errors,
    ``.pending``) that a notebook shows with the report's main table; the results are then ``load_results(study_dir)``.
    The workers are processes of their own, started with the CPU arithmetic pinned where a run asks for it, whatever
    this process imported before."""
    import contextlib
    from pathlib import Path

    from peftlab.study.keys import study_file
    from peftlab.utils.errors import UserError

    if not isinstance(study, dict):
        check_path("study", study, what="a study file (a path) or a dict of its keys")
    check_path("study_dir", study_dir, optional=True)
    for name, value in (("retry_failed", retry_failed), ("report", report), ("progress", progress)):
        check_bool(name, value)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise UserError(f"workers={workers!r} is invalid: expected an integer >= 1")
    given = study_file(study, Path.cwd()) if isinstance(study, dict) else contextlib.nullcontext(study)
    with given as path:
        return run_study_file(path, study_dir, workers, retry_failed, report, progress)


def run_study_file(study, study_dir, workers: int, retry_failed: bool, report: bool, progress: bool):
    """``run_study`` of a study file, its arguments checked."""
    import contextlib
    from pathlib import Path

    from peftlab.cli.api_display import StudyResult
    from peftlab.study.runner import run_study as run_study_dir
    from peftlab.study.spec import load_study
    from peftlab.utils import cpu
    from peftlab.utils.progress import progress_line

    loaded = load_study(study)
    pinning = contextlib.nullcontext()
    if any(spec.config.train.reproducible for spec in loaded.runs):
        if cpu.torch_runs_unpinned():  # this process trains nothing: its workers start with the pin
            pinning = cpu.pinned_children()
        else:
            cpu.pin_arithmetic()  # before the workers import torch: they inherit it
    study_dir = Path(study_dir or Path("runs") / loaded.name)
    # without bars, a notebook's cell shows one line: the runs done and the time left
    line = progress_line(f"study {loaded.name}: {len(loaded.runs)} runs") if not progress else contextlib.nullcontext()
    with pinning, line:
        summary = run_study_dir(
            loaded, study_dir, workers=workers, retry_failed=retry_failed, progress=progress, report=report
        )
    if report:
        from peftlab.analysis.report.build import write_report

        write_report(study_dir)
    return StudyResult.of(summary, loaded.name, study_dir)


@api()
def load_trained(run_dir: str | Path):
    """A finished run's tuned model, rebuilt from its config.yaml and adapter.safetensors on the CPU (what
    ``peftlab export`` loads): ``tuner.model`` is the trained model (a torch module taking images as the run's
    data made them), ``tuner.merged_model()`` the merged copy where the method merges."""
    from peftlab.training.export import load_trained as load_run

    check_path("run_dir", run_dir, what="a run folder (a path)")
    return load_run(run_dir)


@api()
def predict(run_dir: str | Path, images, top_k: int = 5) -> list[dict]:
    """Each image's ``top_k`` classes by a finished run, most probable first, as ``peftlab predict`` prints them:
    ``[{"image": path, "top_k": [{"class": name, "index": i, "probability": p}, ...]}, ...]``. ``images``: an
    image file or folder, or a list (or generator) of them. The images are made exactly as the run made its test
    images (its resize, interpolation and normalisation); the class names are the run's data's
    (``peftlab.training.evaluate.predict``)."""
    from collections.abc import Iterator

    from peftlab.training.evaluate import predict as predict_images
    from peftlab.utils.errors import UserError

    check_path("run_dir", run_dir, what="a run folder (a path)")
    if isinstance(images, Iterator):  # a generator: taken once, as the checks and the answers each walk the list
        images = list(images)
    check_paths("images", images, what="an image file or folder (a path), or a list of them")
    if not isinstance(top_k, int) or isinstance(top_k, bool):  # its value: the command's check, in its words
        raise UserError(f"top_k={top_k!r} is invalid: expected an integer >= 1")
    return predict_images(run_dir, images, top_k)


@api()
def export(
    run_dir: str | Path,
    *,
    merged: str | Path | None = None,
    quantized: str | Path | bool | None = None,
    peft: str | Path | None = None,
    force: bool = False,
    replace: bool = False,
):
    """A finished run's model written for use without peftlab, as ``peftlab export RUN --merged OUT`` (``--quantized``,
    ``--peft DIR``) writes it (the command calls this); returns the path written. ``merged``: the merged model, a
    timm state dict in one .safetensors file (an HF model: a folder for ``from_pretrained``); ``quantized``: on a
    quantized base, the merged model kept quantized (a path, or True with ``merged``'s); ``peft``: a folder for
    ``peft.PeftModel.from_pretrained`` on the plain base. ``force``: export even a run whose merge check failed.
    ``replace``: write over an output that holds another run's export (every export records its run), which is
    refused otherwise, naming that run."""
    from pathlib import Path

    from peftlab.training.export import export_merged, export_peft
    from peftlab.utils.errors import UserError

    check_path("run_dir", run_dir, what="a run folder (a path)")
    check_path("merged", merged, optional=True)
    check_path("peft", peft, optional=True)
    check_bool("force", force)
    check_bool("replace", replace)
    if quantized is not None and quantized is not True:
        check_path("quantized", quantized, what="a path, or True with merged's path")
    if peft is not None:
        if merged is not None or quantized is not None:
            raise UserError("export(peft=DIR) writes the adapter alone: give it without merged and quantized")
        return export_peft(Path(run_dir), Path(peft), replace=replace)
    out = merged if quantized in (None, True) else quantized
    if out is None or (merged is not None and quantized not in (None, True)):
        raise UserError(
            "export needs exactly one output: merged=OUT.safetensors, quantized=OUT.safetensors or "
            "merged=OUT.safetensors with quantized=True"
        )
    return export_merged(Path(run_dir), Path(out), quantized=quantized is not None, force=force, replace=replace)


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
