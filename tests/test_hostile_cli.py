"""The command line against hostile input (issue 70): each case ends in one line, never a traceback or a hang.

The classes: a FIFO or a directory where a received study folder holds a file, and where a command writes its
output; a closed pipe on standard output; an over-long argument or path component; the bench's sizes; terminal
escape sequences in what a command prints from a file; an empty config file or argument. Most cases run in this
process (``cli.run_command``); a closed pipe needs a subprocess, and a FIFO case has a watchdog that ends a
blocked open() (by opening the FIFO's other end) so that a hang fails the test instead of the suite.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from testkit import REPO, command_in_process

sys.path.insert(0, str(Path(__file__).parent / "analysis"))  # studyfiles: the analysis tests' study folders
from studyfiles import write_study_dir

from peftlab.analysis.paper import build as paper
from peftlab.analysis.paper.latex import record_pdf
from peftlab.analysis.results.load import results_sha256

STUDY_YAML = REPO / "configs" / "studies" / "default.yaml"
RUN = "full-s0"  # a completed run of studyfiles' study
peftlab = command_in_process  # (exit status, stderr) of ``peftlab ARGS`` in this process
FIGURES_DRAWN = ()  # text and files read, no figure drawn (conftest.py)


def assert_one_line(result: tuple[int, str], *needles: str, status: int = 2) -> None:
    code, stderr = result
    assert code == status and stderr.count("\n") == 1 and "Traceback" not in stderr, result
    assert stderr.startswith("peftlab: error: "), stderr
    for needle in needles:
        assert needle in stderr, stderr


@pytest.fixture(scope="module")
def papered(tmp_path_factory) -> Path:
    """studyfiles' study with its paper (``compiled_paper``), written once: a test that needs the paper copies it
    (``with_paper``) into its own study, written alike."""
    study = write_study_dir(
        tmp_path_factory.mktemp("hostile") / "default", with_failure=False, variants=["full", "linear"]
    )
    compiled_paper(study)
    return study


@pytest.fixture
def study(tmp_path) -> Path:
    return write_study_dir(tmp_path / "default", with_failure=False, variants=["full", "linear"])


def compiled_paper(study: Path) -> Path:
    """The study's paper written without compiling, with a stand-in main.pdf recorded as a compile records it."""
    out = study / "paper"
    paper.write_paper(study, out, compile=False)
    (out / "main.pdf").write_bytes(b"%PDF-1.5 stand-in\n")
    record_pdf(out, results_sha256(study))
    return out


def with_paper(study: Path, papered: Path) -> Path:
    """The module's compiled paper copied into ``study``, whose runs are written as the module's study's are: the
    results' hash the paper records is also ``study``'s (its paths within the study made portable), which the first
    assertion checks."""
    assert results_sha256(study) == results_sha256(papered)
    return Path(shutil.copytree(papered / "paper", study / "paper", symlinks=True))


class Watchdog:
    """Ends a blocked open() of the FIFO at ``path`` after ``seconds`` (opening its other end, then closing it: a
    reader sees an empty file, a writer a closed pipe), and says whether it had to. The limit only ends a hang: a
    command that does not hang is done long before it."""

    def __init__(self, path: Path, seconds: float = 120):
        self.path, self.seconds, self.fired, self.done = path, seconds, False, threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def watch(self) -> None:
        if self.done.wait(self.seconds):
            return
        self.fired = True
        for flags in (os.O_WRONLY, os.O_RDONLY):  # a blocked reader, then a blocked writer (ENXIO: no reader)
            try:
                os.close(os.open(self.path, flags | os.O_NONBLOCK))
            except OSError:
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def plant(path: Path, kind: str) -> None:
    """A FIFO or a directory (holding a file, so that nothing removes it as an empty folder) at ``path``."""
    if path.is_dir():
        for child in path.iterdir():
            child.unlink()
        path.rmdir()
    else:
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
        (path / "inside").write_text("x")


# --- a FIFO or a directory where a received folder holds a file ---------------------------------------------------

# the files report and submission read from a study folder and its runs (the study's own records and a run's)
RECEIVED = [
    "phases.jsonl",
    "commands.jsonl",
    "selection.json",
    "command.json",
    "study.yaml",
    f"runs/{RUN}/result.json",
    f"runs/{RUN}/spec.json",
    f"runs/{RUN}/config.yaml",
    f"runs/{RUN}/metrics.jsonl",
    f"runs/{RUN}/monitors.jsonl",
    f"runs/{RUN}/importance.jsonl",
]


def phases_line() -> str:
    return json.dumps({"phase": "study", "runs": 6, "wall_seconds": 10.0, "run_seconds": 9.0}) + "\n"


@pytest.mark.parametrize("kind", ["fifo", "directory"])
@pytest.mark.parametrize(
    "where, command",
    [(where, "report") for where in RECEIVED] + [(where, "submission") for where in RECEIVED if "/" not in where],
)
def test_a_received_file_of_another_kind_is_one_line_or_passed_over(study, papered, where, command, kind):
    """The command ends without blocking or a traceback: a file it must read is refused in one line naming it;
    one it may do without (a run's curves, a record an older study lacks) is passed over as absent."""
    if command == "submission":
        with_paper(study, papered)
        (study / "study.yaml").write_bytes(STUDY_YAML.read_bytes())
    plant(study / where, kind)
    argv = ["report", str(study)] if command == "report" else ["submission", str(study), "--study", str(STUDY_YAML)]
    with Watchdog(study / where) as watchdog:
        status, stderr = peftlab(*argv)
    assert not watchdog.fired, f"{command} blocked opening the FIFO at {where}"
    assert "Traceback" not in stderr and status in (0, 2), (status, stderr)
    if status == 2:  # the entry named, or a run's record changed since the paper was built (submission)
        assert_one_line((status, stderr))
        assert Path(where).name in stderr or "built from other results" in stderr, stderr


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_phases_of_another_kind_are_refused_in_one_line(study, kind):
    """phases.jsonl is the header's record of the study's phases: one of another kind is refused, naming it."""
    (study / "phases.jsonl").write_text(phases_line())
    plant(study / "phases.jsonl", kind)
    with Watchdog(study / "phases.jsonl") as watchdog:
        result = peftlab("report", str(study))
    assert not watchdog.fired
    assert_one_line(result, "phases.jsonl", "FIFO" if kind == "fifo" else "directory")


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_literature_file_of_another_kind_is_refused_in_one_line(study, tmp_path, kind):
    plant(tmp_path / "literature.yaml", kind)
    with Watchdog(tmp_path / "literature.yaml") as watchdog:
        result = peftlab("paper", str(study), "--no-compile", "--literature", str(tmp_path / "literature.yaml"))
    assert not watchdog.fired
    assert_one_line(result, "literature.yaml", "FIFO" if kind == "fifo" else "directory")


# --- a FIFO or a directory where a command writes its output ------------------------------------------------------

OUTPUTS = {
    "report/report.md": lambda study: ["report", str(study)],
    "paper/main.tex": lambda study: ["paper", str(study), "--no-compile"],
    "paper/results.tex": lambda study: ["paper", str(study), "--no-compile"],
    "out.tar.gz": lambda study: ["submission", str(study), "--study", str(STUDY_YAML), "--out", f"{study}/out.tar.gz"],
    "default-submission.tar.gz": lambda study: ["submission", str(study), "--study", str(STUDY_YAML)],
    "out.parquet": lambda study: ["results", str(study), "--format", "parquet", "--out", str(study / "out.parquet")],
    "results.parquet": lambda study: ["results", str(study), "--format", "parquet"],
    "out.csv": lambda study: ["results", str(study), "--out", str(study / "out.csv")],
    "out.md": lambda study: ["results", str(study), "--format", "markdown", "--out", str(study / "out.md")],
}


@pytest.mark.parametrize("kind", ["fifo", "directory"])
@pytest.mark.parametrize("where", list(OUTPUTS))
def test_an_output_of_another_kind_is_refused_before_the_work(study, papered, where, kind):
    if where.startswith(("out.tar", "default-sub")):
        with_paper(study, papered)
    plant(study / where, kind)
    with Watchdog(study / where) as watchdog:
        result = peftlab(*OUTPUTS[where](study))
    assert not watchdog.fired, f"blocked opening the FIFO at {where}"
    assert_one_line(result, Path(where).name, "FIFO" if kind == "fifo" else "directory")
    assert (study / where).is_dir() == (kind == "directory")  # nothing replaced it


# --- a closed pipe ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded_cache(tmp_path_factory) -> dict:
    """An environment of its own caches, whose model records hold what ``params`` and ``validate`` count, written by
    the same commands in this process: their closed-pipe processes answer from them, as they do once a cache is
    warm, without importing torch and timm again (a cold command's imports: tests/test_cli_imports.py). The study's
    dry run is not warmed here: this process's torch was imported unpinned, and a reproducible study refuses it."""
    from peftlab.records import answers

    folder = tmp_path_factory.mktemp("caches")
    caches = {"PEFTLAB_MODEL_CACHE": str(folder / "models"), "PEFTLAB_DATA_CACHE": str(folder / "data")}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in caches.items():
            patch.setenv(name, value)
        for command in ("params", "validate"):
            answers.META_MODELS.clear()  # each command writes the records it reads, none answered from memory
            assert command_in_process(*PIPED[command](folder / "study")) == (0, "")
    answers.META_MODELS.clear()
    return dict(os.environ, **caches)


def tiny_config(folder: Path) -> Path:
    """A run config that validates without weights or data: a two-block ViT-Tiny, untrained."""
    path = folder / "tiny.yaml"
    path.write_text("name: t\nmodel: {name: vit_tiny_patch16_224, pretrained: none, depth: 2}\nmethod: {name: lora}\n")
    return path


PIPED = {
    "methods": lambda study: ["methods", "--json"],
    "cache": lambda study: ["cache", "list", "--json"],
    "results": lambda study: ["results", str(study), "--format", "markdown"],
    "params": lambda study: ["params", "vit_tiny_patch16_224", "--json"],
    "validate": lambda study: ["validate", str(tiny_config(study.parent)), "--show"],
    "study": lambda study: ["study", str(STUDY_YAML), "--dry-run", "--study-dir", str(study)],
}


@pytest.mark.parametrize("command", list(PIPED))
def test_a_closed_pipe_ends_quietly(study, recorded_cache, command):
    """``peftlab ... | head -1``: the reader has gone after one line; the command ends with 0 or 141 (SIGPIPE's
    status), nothing on stderr. The pipe is closed before the command starts, so every write meets it."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "peftlab.cli", *PIPED[command](study)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=dict(recorded_cache, PYTHONPATH=str(REPO / "src")),
            timeout=600,
        )
    finally:
        os.close(write)
    assert done.returncode in (0, 141) and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, (
        done.returncode,
        done.stderr[-3000:],
    )


# --- an over-long argument or path component ----------------------------------------------------------------------

LONG = {
    "argument": lambda tmp: "x" * 5000,
    "component": lambda tmp: str(tmp / ("y" * 300) / "study"),
}
LONG_COMMANDS = {
    "params": lambda path, study: ["params", path],
    "results": lambda path, study: ["results", path],
    "report": lambda path, study: ["report", path],
    "paper": lambda path, study: ["paper", path, "--no-compile"],
    "submission": lambda path, study: ["submission", path, "--study", str(STUDY_YAML)],
    "results --out": lambda path, study: ["results", str(study), "--out", path],
    "paper --out": lambda path, study: ["paper", str(study), "--no-compile", "--out", path],
    "submission --out": lambda path, study: ["submission", str(study), "--study", str(STUDY_YAML), "--out", path],
}


@pytest.mark.parametrize("long", list(LONG))
@pytest.mark.parametrize("command", list(LONG_COMMANDS))
def test_an_over_long_name_is_one_line(study, papered, tmp_path, command, long):
    if command.startswith("submission"):
        with_paper(study, papered)
    path = LONG[long](tmp_path)
    status, stderr = peftlab(*LONG_COMMANDS[command](path, study))
    assert_one_line((status, stderr))
    assert len(stderr) < 1000, stderr  # the name is shown cut


# --- the bench's sizes ----------------------------------------------------------------------------------------------

BENCH_SIZES = [
    ("--batch", "2000000000"),
    ("--img-size", "1000000"),
    ("--repeats", "2000000000"),
    ("--depth", "100000"),
    ("--embed-dim", "10000000"),
    ("--num-heads", "100000"),
    ("--patch-size", "100000"),
    ("--large-steps", "2000000000"),
    ("--num-workers", "100000"),
    ("--data-images", "2000000000"),
    ("--text-layers", "100000"),
    ("--text-width", "10000000"),
    ("--text-heads", "100000"),
    ("--text-length", "100000"),
    ("--text-batch", "2000000000"),
]


@pytest.mark.parametrize("flag, value", BENCH_SIZES)
def test_a_bench_size_out_of_range_is_refused_before_anything_is_built(capsys, flag, value):
    """Refused by the parser, in one line naming the flag and its range: nothing is allocated, no JPEG written
    (the bench never starts)."""
    from peftlab.cli import build_parser

    only = {"--text-layers": "text", "--data-images": "data"}.get(flag, "steps")
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["bench", "--only", only, flag, value])
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2 and stderr.count("\n") == 1, stderr
    assert stderr.startswith("peftlab: error: ") and flag in stderr and "from " in stderr, stderr


# --- terminal escape sequences in what is read from files -----------------------------------------------------------

ESCAPES = "\x1b[2J\x1b]0;owned\x07\x9b31m"  # clear the screen, set the window's title, a C1 CSI


def commanded_output(*argv: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from peftlab import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.run_command(list(argv))
    return status, out.getvalue(), err.getvalue()


def with_escapes(study: Path) -> Path:
    path = study / "runs" / RUN / "result.json"
    result = json.loads(path.read_text())
    result["status"] = f"failed{ESCAPES}"
    result["error"] = f"boom{ESCAPES}"
    path.write_text(json.dumps(result))
    return study / "runs" / RUN


@pytest.mark.parametrize(
    "argv",
    [
        lambda study: ["summary", str(study / "runs" / RUN)],
        lambda study: ["results", str(study)],
        lambda study: ["results", str(study), "--format", "markdown"],
    ],
    ids=["summary", "results-csv", "results-markdown"],
)
def test_escape_sequences_read_from_a_file_are_shown_escaped(study, argv):
    with_escapes(study)
    status, out, err = commanded_output(*argv(study))
    assert "\x1b" not in out + err and "\x07" not in out + err and "\x9b" not in out + err, (out, err)
    assert "Traceback" not in err


def test_escape_sequences_in_a_received_dataset_s_class_names_are_shown_escaped(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for name in (f"cat{ESCAPES}", "dog"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8)).save(folder / f"{i}.png")
    status, out, err = commanded_output(
        "data", "info", "imagefolder", "--root", str(tmp_path / "train"), "--test-dir", str(tmp_path / "test")
    )
    assert status == 0 and "cat\\x1b[2J" in out, (out, err)
    assert "\x1b" not in out + err and "\x07" not in out + err and "\x9b" not in out + err, (out, err)


# --- an empty config file or argument -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        lambda tmp: ["train", str(tmp / "empty.yaml")],
        lambda tmp: ["train", str(tmp / "blank.yaml")],
        lambda tmp: ["train", ""],
        lambda tmp: ["pretrain", ""],
        lambda tmp: ["pretrain", str(tmp / "empty.yaml")],
        lambda tmp: ["validate", str(tmp / "empty.yaml")],
        lambda tmp: ["validate", ""],
    ],
    ids=["train-empty", "train-blank", "train-arg", "pretrain-arg", "pretrain-empty", "validate-empty", "validate-arg"],
)
def test_an_empty_config_is_refused(tmp_path, monkeypatch, argv):
    """Never a default run: refused before anything is trained (the trainer is never reached)."""
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "blank.yaml").write_text("# nothing here\n\n")
    monkeypatch.chdir(tmp_path)
    from peftlab.training import run as training_run

    monkeypatch.setattr(training_run, "train", lambda *a, **k: pytest.fail("a run started"))
    assert_one_line(peftlab(*argv(tmp_path)), "empty")
    assert not (tmp_path / "runs").exists()


def test_the_terminal_escaper_shows_every_control_and_bidirectional_character_as_its_code():
    from peftlab.cli.terminal import BIDI_CONTROLS, printable

    controls = [chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]] + list(BIDI_CONTROLS)
    for c in controls:
        shown = printable(f"a{c}b")
        assert shown.isprintable() and shown == f"a{ascii(c)[1:-1]}b", (c, shown)
    assert printable("naïve 中文 🙂 a b") == "naïve 中文 🙂 a b"  # printable text, spaces included, is left as is
    assert printable("row\x1b[2J\nnext", lines=True) == "row\\x1b[2J\nnext"
