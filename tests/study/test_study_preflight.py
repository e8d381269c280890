"""A study's pre-flight: what would stop it is one line and exit 2 before any run starts, and its
dry-run refuses the same things in the same line (both call ``preflight.check_study``).

The study and its dry-run run in this process (``cli.run_command``): each refusal comes before
anything is trained or written, so each case takes a fraction of a second.
"""

import contextlib
import hashlib
import io
import json
import signal
import sys

import pytest
import yaml
from testkit import TINY_MODEL

from peftlab import cli

BASE = {
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32},
    "method": {"name": "lora", "r": 2},
    "train": {"epochs": 1, "batch_size": 16},
}
GRID = {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid"}
HALVING = {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "halving", "trials": 2}


def write_study(tmp_path, tune: dict = GRID, base: dict = BASE):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    path = tmp_path / "study.yaml"
    path.write_text(
        yaml.safe_dump({"name": "s", "base": "base.yaml", "seeds": 1, "methods": {"lora": {}}, "tune": tune})
    )
    return path


def study(path, out, *args: str) -> tuple[int, str]:
    """(exit status, stderr) of ``peftlab study PATH --study-dir OUT ARGS`` in this process."""
    stderr, previous = io.StringIO(), signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            status = cli.run_command(["study", str(path), "--study-dir", str(out), "--quiet", *args])
    finally:
        signal.signal(signal.SIGTERM, previous)
    return status, stderr.getvalue()


def assert_refused_alike(path, out, *args: str, needle: str) -> str:
    """The dry-run and the study refuse with the same one line (naming ``needle``), and nothing was
    written in ``out`` that was not there before."""
    before = sorted(p.relative_to(out) for p in out.rglob("*")) if out.exists() else None
    dry = study(path, out, "--dry-run", *args)
    assert dry[0] == 2 and dry[1].count("\n") == 1 and needle in dry[1], dry
    real = study(path, out, *args)
    assert real == dry, (real, dry)
    assert (sorted(p.relative_to(out) for p in out.rglob("*")) if out.exists() else None) == before
    return dry[1]


def test_halving_through_submitit_is_refused_by_the_dry_run_as_by_the_run(tmp_path):
    path = write_study(tmp_path, HALVING)
    line = assert_refused_alike(
        path,
        tmp_path / "out",
        "--executor",
        "submitit",
        "--slurm-cluster",
        "local",
        needle="tune.search: halving (method 'lora') stops pruned trials while they run",
    )
    assert line.startswith("peftlab: error: ")


def no_package(name):
    def arrange(monkeypatch, tmp_path):
        monkeypatch.setitem(sys.modules, name, None)  # an import or find_spec finds nothing, as if not installed

    return arrange


def no_slurm(monkeypatch, tmp_path):
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))


# Every refusal of an executor before it runs anything: (executor options, tune section, arrange, line)
EXECUTOR_REFUSALS = {
    "halving on submitit": (
        ["--executor", "submitit", "--slurm-cluster", "local"],
        HALVING,
        None,
        "tune.search: halving (method 'lora') stops pruned trials while they run",
    ),
    "halving on ray": (
        ["--executor", "ray"],
        HALVING,
        None,
        "tune.search: halving (method 'lora') stops pruned trials while they run",
    ),
    "no submitit": (
        ["--executor", "submitit", "--slurm-cluster", "local"],
        GRID,
        no_package("submitit"),
        "--executor submitit needs the submitit package: pip install -e .[slurm]",
    ),
    "no slurm": (
        ["--executor", "submitit"],
        GRID,
        no_slurm,
        "--executor submitit: no Slurm here (sbatch or srun is not on PATH)",
    ),
    "no ray": (["--executor", "ray"], GRID, no_package("ray"), "--executor ray needs the ray package"),
}


@pytest.mark.parametrize("case", EXECUTOR_REFUSALS)
def test_every_executor_refusal_of_the_run_is_a_dry_run_refusal(tmp_path, monkeypatch, case):
    args, tune, arrange, needle = EXECUTOR_REFUSALS[case]
    if arrange is not None:
        arrange(monkeypatch, tmp_path)
    assert_refused_alike(write_study(tmp_path, tune), tmp_path / "out", *args, needle=needle)


def run_dir(out, name="runs/0123456789ab"):
    path = out / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def dir_where_file(out, name, base="runs/0123456789ab"):
    (run_dir(out, base) / name).mkdir(parents=True)
    return f"{out / base / name} is a directory: expected a regular file"


def file_where_dir(out, name, base="runs/0123456789ab"):
    (run_dir(out, base) / name).write_text("x")
    return f"{out / base / name} is a regular file: expected a directory"


def in_tune(out, name):
    (out / "tune" / "lora").mkdir(parents=True)
    if name in ("journal", "journal lock"):
        name = tune_journals(out)[name == "journal lock"]
    (out / "tune" / "lora" / name).mkdir()
    return f"{out / 'tune' / 'lora' / name} is a directory: expected a regular file"


def tune_journals(out):
    from peftlab.study.search import journal_path
    from peftlab.study.spec import load_study

    search = load_study(out.parent / "study.yaml").tune["lora"]
    return [
        journal_path(out / "tune" / "lora", search).name,
        journal_path(out / "tune" / "lora", search).name + ".lock",
    ]


def in_report(out, name):
    (out / "report" / name).mkdir(parents=True)
    return f"{out / 'report' / name} is a directory: expected a regular file"


# Each path a study writes, found as the wrong kind: (make it, the extra options it needs)
WRONG_KINDS = {
    "final result.json": (lambda out: dir_where_file(out, "result.json"), []),
    "final spec.json": (lambda out: dir_where_file(out, "spec.json"), []),
    "final config.yaml": (lambda out: dir_where_file(out, "config.yaml"), []),
    "final metrics.jsonl": (lambda out: dir_where_file(out, "metrics.jsonl"), []),
    "checkpoint a file": (lambda out: file_where_dir(out, "checkpoint"), []),
    "checkpoint/last.pt": (lambda out: dir_where_file(out, "checkpoint/last.pt"), []),
    "run directory a file": (lambda out: file_where_dir(out, "0123456789ab", base="runs"), []),
    "trial result.json": (lambda out: dir_where_file(out, "result.json", base="tune/lora/runs/ba9876543210"), []),
    "selection.json": (lambda out: in_tune(out, "selection.json"), []),
    "journal": (lambda out: in_tune(out, "journal"), []),
    "journal lock": (lambda out: in_tune(out, "journal lock"), []),
    "tune a file": (lambda out: file_where_dir(out, "tune", base="."), []),
    "study.yaml": (lambda out: dir_where_file(out, "study.yaml", base="."), []),
    "library.log": (lambda out: dir_where_file(out, "library.log", base="."), []),
    "phases.jsonl": (lambda out: dir_where_file(out, "phases.jsonl", base="."), []),
    "report.md": (lambda out: in_report(out, "report.md"), ["--report"]),
    "a figure": (lambda out: in_report(out, "figures/tuning.png"), ["--report"]),
    "a table": (lambda out: in_report(out, "tables/main_table.tex"), ["--report"]),
    "executor folder": (
        lambda out: file_where_dir(out, "slurm", base="."),
        ["--executor", "submitit", "--slurm-cluster", "local"],
    ),
}


@pytest.mark.parametrize("case", WRONG_KINDS)
def test_a_path_of_the_wrong_kind_is_one_line_before_anything_runs(tmp_path, case):
    make, args = WRONG_KINDS[case]
    if "--executor" in args:
        pytest.importorskip("submitit")
    path, out = write_study(tmp_path), tmp_path / "out"
    out.mkdir()
    needle = make(out)
    assert_refused_alike(path, out, *args, needle=needle)


def test_a_figure_folder_of_other_files_is_left_alone(tmp_path):
    """Only the names the report writes are checked: a folder of one's own in figures/ is no refusal."""
    from peftlab.study.preflight import check_report_files

    (tmp_path / "report" / "figures" / "old").mkdir(parents=True)
    check_report_files(tmp_path / "report")


def test_the_dry_run_refuses_runs_of_a_changed_base_as_the_run_does(tmp_path):
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "base.safetensors"
    model = timm.create_model(TINY_MODEL["name"], **{k: v for k, v in TINY_MODEL.items() if k != "name"})
    save_file(model.state_dict(), str(weights))
    path = write_study(tmp_path, base={**BASE, "model": {**TINY_MODEL, "pretrained": str(weights)}})
    out = tmp_path / "out"
    (run_dir(out) / "result.json").write_text(
        json.dumps(
            {
                "status": "completed",
                "config": {"model": {"pretrained": str(weights)}},
                "provenance": {"base_sha256": hashlib.sha256(b"the weights it was trained on").hexdigest()},
            }
        )
    )
    assert_refused_alike(path, out, needle=f"{weights} changed after 1 finished run(s)")
