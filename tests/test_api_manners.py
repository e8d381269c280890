"""The Python API's manners (peftlab/cli/api/, the end of utils/errors.py): a wrong type or None is one UserError
naming the parameter, before anything runs; messages name the API's parameters, not the command's flags; a
UserError is one line in IPython and in a script; an interrupted training call says how to resume; every command
has its function; a mistyped key is named by edit distance over every key; validate checks the trackers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from testkit import REPO, TINY_MODEL, cli_here

import peftlab
from peftlab.utils.errors import Resumable, UserError, in_parameters

ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}


@pytest.fixture
def config(tmp_path):
    """A run config of the tiny ViT on an image folder of 3 classes (never trained here)."""
    from peftlab.data.synthetic import write_jpeg_folder

    write_jpeg_folder(tmp_path / "images", n_train=6, size=32, classes=3, n_test=3)
    run = {
        "name": "tiny",
        "model": TINY_MODEL,
        "method": {"name": "lora", "r": 2},
        "data": {"name": "imagefolder", "root": "images"},
        "train": {"max_steps": 1, "batch_size": 4},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    return tmp_path / "run.yaml"


def test_every_command_that_works_on_runs_and_studies_has_its_function():
    for name in ("export", "results", "report", "paper", "submission", "reproduce", "validate", "params"):
        assert name in peftlab.__all__ and callable(getattr(peftlab, name)) and getattr(peftlab, name).__doc__


def test_exports_flags_its_function_and_both_documents_agree():
    """Every option of `peftlab export` is a parameter of ``peftlab.export`` and the reverse, and docs/commands.md
    and docs/python-api.md name each one."""
    import argparse
    import inspect

    from peftlab.cli import build_parser

    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    flags = {o for a in commands.choices["export"]._actions for o in a.option_strings if o.startswith("--")}
    flags -= {"--help"}
    parameters = set(inspect.signature(peftlab.export).parameters) - {"run_dir"}
    assert {flag[2:].replace("-", "_") for flag in flags} == parameters
    commands_md, api_md = ((REPO / "docs" / name).read_text() for name in ("commands.md", "python-api.md"))
    (signature,) = [line for line in api_md.splitlines() if line.startswith("| `export(run_dir")]
    assert all(flag in commands_md and flag in signature for flag in flags), flags
    assert all(f"{name}=" in signature for name in parameters), signature


@pytest.mark.parametrize(
    "call, parameter",
    [
        (lambda c: peftlab.train(None), "config=None"),
        (lambda c: peftlab.train(["run.yaml"]), "config=['run.yaml']"),
        (lambda c: peftlab.train({"junk": 1}), "unknown config key 'junk'"),  # a dict: the keys of a file
        (lambda c: peftlab.run_study({"name": "x"}), "study: 'base' (the base run config) is required"),
        (lambda c: peftlab.train(c, 5), "overrides=5"),
        (lambda c: peftlab.train(c, run_dir=3), "run_dir=3"),
        (lambda c: peftlab.train(c, progress="yes"), "progress='yes'"),
        (lambda c: peftlab.run_study(None), "study=None"),
        (lambda c: peftlab.load_results(3), "study_dir=3"),
        (lambda c: peftlab.load_trained(None), "run_dir=None"),
        (lambda c: peftlab.predict(c.parent, None), "images=None"),
        (lambda c: peftlab.predict(c.parent, ["a.png"], top_k="3"), "top_k='3'"),
        (lambda c: peftlab.validate(c, 7), "overrides=7"),
        (lambda c: peftlab.export(None, merged="m.safetensors"), "run_dir=None"),
        (lambda c: peftlab.results(c.parent, format="xlsx"), "format='xlsx'"),
        (lambda c: peftlab.params("vit_tiny_patch16_224", rank=4), "rank="),
        (lambda c: peftlab.reproduce(None), "archive=None"),
        (lambda c: peftlab.reproduce(c, run_archive_code="yes"), "run_archive_code='yes'"),
        (lambda c: peftlab.reproduce(c, run_archive_code="885c387c"), "run_archive_code='885c387c'"),
    ],
)
def test_a_wrong_type_or_none_is_one_line_naming_the_parameter(config, call, parameter):
    with pytest.raises(UserError) as caught:
        call(config)
    assert parameter in str(caught.value) and "\n" not in str(caught.value)
    assert not (config.parent / "runs").exists()


def test_load_results_on_a_folder_without_a_study_raises_the_commands_error(tmp_path):
    with pytest.raises(UserError, match=r"holds no study runs"):
        peftlab.load_results(tmp_path)
    with pytest.raises(UserError, match=r"is not a folder"):
        peftlab.load_results(tmp_path / "nowhere")


def test_messages_name_the_apis_parameters_not_the_commands_flags(tmp_path):
    assert in_parameters("run x holds another run; use another --run-dir", {"run_dir"}) == (
        "run x holds another run; use another run_dir"
    )
    assert in_parameters("--top-k 0 is invalid, --quiet, --other-flag", {"top_k"}) == (
        "top_k 0 is invalid, progress=False, --other-flag"
    )
    (tmp_path / "file").write_text("")  # export's output folder is a file: the library names --peft
    with pytest.raises(UserError) as caught:
        peftlab.export(tmp_path, peft=tmp_path / "file")
    assert "--peft" not in str(caught.value) and str(caught.value).startswith("peft ")


def test_the_command_keeps_its_own_flags(tmp_path):
    (tmp_path / "file").write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "peftlab.cli", "export", str(tmp_path), "--peft", str(tmp_path / "file")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert done.returncode == 2 and "peftlab: error: --peft " in done.stderr, done.stderr


def test_a_user_error_is_one_line_in_ipython_and_in_a_script(tmp_path):
    ipython = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "shell = InteractiveShell.instance()\n"
        "result = shell.run_cell('import peftlab; peftlab.load_results(3)')\n"
        "print('raised', type(result.error_in_exec).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", ipython], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "UserError: study_dir=3 is invalid: expected a study folder (a path)",
        "raised UserError",
    ]
    script = tmp_path / "script.py"
    script.write_text("import peftlab\n\npeftlab.load_results(3)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 1
    assert done.stderr == f"{script}:3: UserError: study_dir=3 is invalid: expected a study folder (a path)\n"


def test_an_interrupted_training_call_says_how_to_resume(config, tmp_path, monkeypatch):
    import peftlab.training.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(peftlab.training.run, "train", interrupted)
    with pytest.raises(Resumable, match=r"peftlab.train was interrupted: call it again with the same arguments"):
        peftlab.train(config, ["train.reproducible=false"], run_dir=tmp_path / "run")


def test_a_mistyped_key_is_named_by_edit_distance_over_every_key():
    from peftlab.config.schema import load_config
    from peftlab.utils.errors import ConfigError

    for override, meant in (
        ("train.learnig_rate=1e-3", "train.lr"),  # near learning_rate, which is train.lr
        ("model.lr=1e-3", "train.lr"),  # a key of another section
        ("data.batch_sise=8", "train.batch_size"),
        ("train.epoch=3", "train.epochs"),
        ("method.rr=4", "method.r"),
    ):
        with pytest.raises(ConfigError, match=rf"did you mean '{meant}'\?"):
            load_config(overrides=[override])


def test_validate_refuses_a_tracker_that_is_not_installed(config, monkeypatch):
    import peftlab.training.tracking as tracking

    real = tracking.find_spec
    monkeypatch.setattr(tracking, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(UserError, match=r"the wandb sink needs the 'wandb' package, which is not installed"):
        peftlab.validate(config, ["track=[wandb]"])


def test_validate_returns_the_commands_record(config):
    record = peftlab.validate(config, ["method.r=4"])
    assert record["valid"] is True and record["resolved"]["method"]["r"] == 4
    done = cli_here("validate", str(config), "method.r=4", "--json")  # the command's answer, computed here
    assert done.returncode == 0, done.stderr
    shown = {k: record[k] for k in ("config", "valid", "ranks", "memory_estimate")}
    assert json.loads(done.stdout) == json.loads(json.dumps(shown, default=str))


@pytest.mark.parametrize("ends", ["done", "refused"])
def test_reproduce_leaves_the_processs_environment_as_it_found_it(tmp_path, monkeypatch, ends):
    """``peftlab reproduce`` points its reruns at the datasets it checked and the archive's plugin folders through
    its process's environment (analysis/archive/reproduce.py): after ``peftlab.reproduce`` in a kernel, done or
    refused, a later cell reads the user's data, not the archive's, and imports nothing from its folders."""
    from peftlab.analysis.archive import reproduce as command
    from peftlab.analysis.archive.datasets import FOLDER_VARIABLES, NamedData, rerun_environment

    monkeypatch.setenv(FOLDER_VARIABLES["fashion_mnist"], str(tmp_path / "users-own"))  # the user's, before
    monkeypatch.delenv(FOLDER_VARIABLES["mnist"], raising=False)
    before, path = dict(os.environ), list(sys.path)
    received = {name: tmp_path / "received" / name for name in ("fashion_mnist", "mnist")}

    def reproduce(archive, *, out, **options):  # what the command does to its process before the reruns
        os.environ.update(rerun_environment(NamedData(found=received), None))
        sys.path[:0] = [str(tmp_path / "plugin-code")]
        os.environ["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "plugin-code"), os.environ.get("PYTHONPATH", "")])
        assert os.environ[FOLDER_VARIABLES["fashion_mnist"]] == str(received["fashion_mnist"].resolve())
        if ends == "refused":
            raise UserError("the reruns stopped")
        Path(out).mkdir()
        (Path(out) / command.RECORD).write_text(json.dumps({"reproduced": True}))
        return 0

    monkeypatch.setattr(command, "reproduce", reproduce)
    if ends == "refused":
        with pytest.raises(UserError, match="the reruns stopped"):
            peftlab.reproduce(tmp_path / "a.tar.gz", out=tmp_path / "out")
    else:
        assert peftlab.reproduce(tmp_path / "a.tar.gz", out=tmp_path / "out") == {"reproduced": True}
    assert dict(os.environ) == before and sys.path == path


@pytest.mark.parametrize(
    "mistake",
    [{"method": {"rr": 4}}, {"train": {"lr": "fast"}}, {"data": {"root": "nowhere"}}, {"track": ["wandbb"]}],
    ids=["key", "type", "data", "value"],
)
def test_a_dict_config_is_refused_as_its_file_is(config, monkeypatch, mistake):
    """The keys of a run config given as a dict, their relative paths the working folder's: each mistake the same
    one line as the file's, from train and validate, before any run folder."""
    from peftlab.config.reading import deep_merge

    monkeypatch.chdir(config.parent)
    keys = deep_merge(yaml.safe_load(config.read_text()), mistake)
    (config.parent / "mistake.yaml").write_text(yaml.safe_dump(keys))
    for call in (peftlab.train, peftlab.validate):
        with pytest.raises(UserError) as from_file:
            call(config.parent / "mistake.yaml")
        with pytest.raises(UserError) as from_dict:
            call(keys)
        assert str(from_dict.value) == str(from_file.value) and "\n" not in str(from_dict.value)
    assert not (config.parent / "runs").exists()


def test_a_dict_or_a_runconfig_reads_its_relative_paths_from_the_working_folder(config, monkeypatch):
    """validate and params take a dict and a RunConfig as train does; their relative paths (a ``pathlib.Path`` too)
    are the working folder's, as the file's are its folder's: the same resolved config and counts."""
    from peftlab.config.schema import RunConfig, from_dict

    monkeypatch.chdir(config.parent)
    keys = yaml.safe_load(config.read_text())
    from_file = peftlab.validate(config, ["method.r=4"])
    for given in (keys, {**keys, "data": {**keys["data"], "root": Path("images")}}, from_dict(RunConfig, keys)):
        checked = peftlab.validate(given, {"method": {"r": 4}})
        assert checked["resolved"] == from_file["resolved"] and checked["config"] is None
        assert checked["resolved"]["data"]["root"] == str(config.parent / "images")
    assert peftlab.params(keys, ["method.r=4"]) == peftlab.params(config, r=4)
    assert peftlab.params(keys, {"method": {"r": 8}}, r=4)["trainable"] == peftlab.params(config, r=4)["trainable"]


def test_the_pinned_childs_error_is_one_line_raised_once(capfd):
    """A pinned child's output reaches the cell as it comes (a bar's carriage returns too), but for its error line,
    which ``train`` raises: the one line is shown once, not twice (training/run.py's relay)."""
    from peftlab.training.run import ERROR_PREFIX, relay

    script = (
        "import sys, time\n"
        "sys.stderr.write('step 1/2\\rstep 2/2\\r'); sys.stderr.flush(); time.sleep(0.05)\n"
        f"sys.stderr.write({ERROR_PREFIX!r}[:6]); sys.stderr.flush(); time.sleep(0.05)\n"  # split across reads
        f"sys.stderr.write({ERROR_PREFIX!r}[6:] + 'data.root=/x/fmnist does not exist\\n')\n"
        "sys.stderr.write('done\\n'); sys.exit(2)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert relay(proc) == f"{ERROR_PREFIX}data.root=/x/fmnist does not exist"
    assert capfd.readouterr().err == "step 1/2\rstep 2/2\rdone\n"


def test_what_a_notebook_shows_is_escaped(tmp_path):
    """A record's, a study's and a tuner's views show text from files and folders (an error, a name, a path) as
    itself: HTML through utils/files.py's html_text, plain text with control characters as their codes."""
    from torch import nn

    from peftlab.cli.api.display import RunRecord, StudyResult
    from peftlab.tuners.base import Tuner

    hostile = '<img src=x onerror="alert(1)">&\x1b[2J'
    record = RunRecord({"status": "failed", "error": hostile, "config": {"method": {"name": hostile}}}, hostile)
    study = StudyResult(total=1, failed=[(hostile, hostile)], name=hostile, study_dir=tmp_path)
    tuner = Tuner(nn.Linear(2, 2), "head")
    tuner.run_dir = hostile
    for shown in (record._repr_html_(), study._repr_html_(), tuner._repr_html_()):
        assert "<img" not in shown and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;\\x1b[2J" in shown
    for shown in (repr(record), repr(study), repr(tuner)):
        assert "\x1b" not in shown and hostile.replace("\x1b", "\\x1b") in shown
    assert "main table: no run completed" in repr(study)


def test_load_trained_and_predict_keep_the_libraries_records_off_a_notebooks_stderr(monkeypatch, capfd):
    """bitsandbytes logs "Failed to load CPU gemm_4bit_forward ... pip install kernels" when a quantized base imports
    it on an AVX512-BF16 CPU (peftlab never fetches hub kernels): in a process that was not quieted (a notebook's
    kernel) the API's calls on a finished run keep such records off stderr and leave its logging as it was."""
    import logging

    import peftlab.training.evaluate
    import peftlab.training.export

    def chatty(*args):
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward from kernels")
        return "done"

    monkeypatch.setattr(peftlab.training.export, "load_trained", chatty)
    monkeypatch.setattr(peftlab.training.evaluate, "predict", chatty)
    root = logging.getLogger()  # as in a notebook's kernel: no handler (pytest's nor peftlab's), logging's last resort
    monkeypatch.setattr(root, "handlers", [])
    handlers = list(root.handlers)
    assert peftlab.load_trained("some/run") == "done" and peftlab.predict("some/run", "image.png") == "done"
    assert "gemm_4bit_forward" not in capfd.readouterr().err
    assert logging.getLogger().handlers == handlers
