"""The four user errors of the foundation issue, through the CLI: one line, exit 2.

What a command refuses or counts is asked in this process (``testkit.cli_here``: the CLI's own entry, without a
fresh interpreter importing torch, timm and PEFT again); a real process where the process is what is tested: its
exit status and stderr (``test_bad_config``), a stop while it exits, and PEFT's BOFT, whose message came on the
process's stderr."""

import json
import os
import signal
import sys

import pytest
import yaml
from testkit import REPO, cli_here, run_cli

sys.path.insert(0, str(REPO / "tests" / "data"))
import datafiles


def assert_one_line_exit_2(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("peftlab: error: ") and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_bad_config(tmp_path):
    """In a process of its own, the CLI's exit status and all its stderr: a command's error (a config's field) and
    argparse's (a bench refused at parsing, before it measures anything), one line each, exit 2."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": -1}}))
    assert_one_line_exit_2(run_cli("train", str(path), "--run-dir", str(tmp_path / "run")), "train.lr=-1")
    usage = run_cli("bench", "--repeats", "0", timeout=480)
    assert_one_line_exit_2(usage, "argument --repeats: 0 is invalid", "peftlab bench --help")


def test_missing_data(tmp_path):
    env_dir = tmp_path / "empty"
    env_dir.mkdir()
    proc = cli_here("data", "info", "cifar100", "--root", str(env_dir))
    assert_one_line_exit_2(proc, "cifar100", str(env_dir))


def test_corrupt_idx_file(tmp_path):
    datafiles.write_idx_dataset(tmp_path, gz=False)
    target = tmp_path / "train-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:-100])
    assert_one_line_exit_2(
        cli_here("data", "info", "fashion_mnist", "--root", str(tmp_path)), "train-images-idx3-ubyte"
    )


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    datafiles.write_cifar10_python(tmp_path)
    marker = tmp_path / "pwned"
    from peftlab.data.readers.safe_pickle import load_pickle

    batch = load_pickle(tmp_path / "data_batch_2")
    batch[b"data"] = Payload(str(marker))
    datafiles.write_pickle(tmp_path / "data_batch_2", batch)
    proc = cli_here("data", "info", "cifar10", "--root", str(tmp_path))
    assert_one_line_exit_2(proc, "refusing to unpickle", "data_batch_2", "posix.system")
    assert not marker.exists()


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_full_disk_or_read_only_directory_is_one_line(tmp_path, monkeypatch, capsys):
    """Tests run as root, for whom no directory is read-only: the OSError is raised where the run
    directory is first written, as a full disk or a read-only mount would raise it."""
    import errno

    import peftlab.training.run
    from peftlab.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"name": "r"}))
    for code, text in ((errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")):

        def fail(cfg, run_dir, code=code, text=text):
            raise OSError(code, text, str(run_dir / "config.yaml"))

        monkeypatch.setattr(peftlab.training.run, "prepare_run_dir", fail)
        assert main(["train", str(path), "--run-dir", str(tmp_path / "run")]) == 2
        stderr = capsys.readouterr().err
        assert stderr.count("\n") == 1 and text in stderr and str(tmp_path / "run" / "config.yaml") in stderr


def test_a_corrupt_pretraining_manifest_is_no_cache(tmp_path):
    from peftlab.config.schema import load_config
    from peftlab.training.bases.pretrain import cached_manifest

    cfg = load_config(overrides={"method": {"name": "full"}})
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    for content in ("{broken", "[]", '{"weights": 5}', "\xff"):
        (tmp_path / "manifest.json").write_text(content, errors="surrogateescape")
        assert cached_manifest(cfg, tmp_path) is None


def test_export_needs_exactly_one_output(tmp_path):
    for args in ([], ["--merged", str(tmp_path / "a.safetensors"), "--quantized", str(tmp_path / "b.safetensors")]):
        assert_one_line_exit_2(cli_here("export", str(tmp_path), *args), "export needs exactly one output")


def test_every_command_and_option_has_help_and_the_version_prints(capsys):
    import argparse

    from peftlab import __version__
    from peftlab.cli import build_parser

    parser = build_parser()
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                missing += [f"{name} {a.option_strings or a.dest}" for a in command._actions if a.help is None]
    assert not missing, missing
    assert "Parameter-efficient fine-tuning studies" in parser.format_help()
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"peftlab {__version__}"


def test_params_counts_a_run_config_and_the_same_model_given_by_options():
    """`peftlab params CONFIG [overrides]` counts the config's model and method (classes from the
    dataset); the same architecture by name and options (--num-heads included) counts the same."""
    by_config = cli_here("params", "configs/downstream.yaml", "method.name=lora", "method.r=8", "--json")
    assert by_config.returncode == 0, by_config.stderr
    by_name = cli_here(
        "params",
        "vit_tiny_patch16_224",
        "--img-size",
        "28",
        "--patch-size",
        "7",
        "--depth",
        "4",
        "--embed-dim",
        "128",
        "--num-heads",
        "4",
        "--num-classes",
        "10",
        "--method",
        "lora",
        "--r",
        "8",
        "--json",
    )
    assert by_name.returncode == 0, by_name.stderr
    counts = json.loads(by_config.stdout)
    assert counts == json.loads(by_name.stdout)
    assert counts["num_classes"] == 10 and counts["trainable"] == 17_674  # the default study's LoRA r=8
    wrong = cli_here("params", "vit_tiny_patch16_224", "method.r=4")
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "go with a run config" in wrong.stderr


def test_params_refuses_zero_classes_instead_of_counting_the_default():
    """--num-classes 0 was taken for "not given" and counted a 1000-class head."""
    assert_one_line_exit_2(cli_here("params", "vit_tiny_patch16_224", "--num-classes", "0"), "model.num_classes=0")
    assert_one_line_exit_2(cli_here("params", "configs/downstream.yaml", "--num-classes", "0"), "model.num_classes=0")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--repeats", "0"], "argument --repeats: 0 is invalid: expected an integer >= 1"),
        (["--batch", "0"], "argument --batch: 0 is invalid"),
        (["--batch", "-1"], "argument --batch: -1 is invalid"),
        (["--batch", "x"], "argument --batch: 'x' is not an integer"),
        (["--large-steps", "0"], "argument --large-steps"),
        (["--num-workers", "-1"], "expected an integer >= 0"),
        (["--dtype", "fp8"], "invalid choice"),
    ],
)
def test_bad_bench_arguments_are_one_line_at_parsing(args, needle):
    assert_one_line_exit_2(cli_here("bench", *args), needle, "peftlab bench --help")  # before: a bench ran


@pytest.mark.parametrize("method", ["full", "linear", "lora", "adalora", "adaptive", "qalora", "vera", "oft", "boft"])
def test_params_counts_every_method(method):
    """Counted on the meta device: a method's own bookkeeping (adaptive's rank masks) must not be meta. BOFT's in a
    process of its own: PEFT compiled its CUDA extension per layer, and torch said so on the process's stderr."""
    proc = (run_cli if method == "boft" else cli_here)(
        "params",
        "vit_tiny_patch16_224",
        "--img-size",
        "32",
        "--patch-size",
        "8",
        "--depth",
        "2",
        "--embed-dim",
        "64",
        "--num-heads",
        "2",
        "--num-classes",
        "10",
        "--method",
        method,
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # boft: PEFT compiled its CUDA extension per layer, and torch said so on stderr
    counts = json.loads(proc.stdout)
    assert counts["method"] == method and 0 < counts["trainable"] <= counts["total"]


def completed_run(tmp_path, **result_changes):
    """A run directory as export reads it (config.yaml, result.json), with ``result_changes`` laid over."""
    from testkit import TINY_MODEL

    from peftlab.config.schema import dump_config, load_config, to_dict

    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": "lora", "r": 4}})
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    result = {
        "status": "completed",
        "step": 2,
        "config": to_dict(cfg),
        "provenance": {"data": {"num_classes": 10}},
        **result_changes,
    }
    (run_dir / "result.json").write_text(json.dumps(result))
    return run_dir


@pytest.mark.parametrize(
    "damage, needle",
    [
        ({"step": None}, "its step is None"),
        ({"step": "2"}, "its step is '2'"),
        ({"config": [1, 2]}, "its config is [1, 2]"),
        ({"config": {"method": "lora"}}, "a mapping with a method section"),
        ({"provenance": {"data": {"num_classes": 2**31}}}, "number of classes"),
        ({"provenance": {"data": {"num_classes": 2**31 - 1}}}, "GiB"),  # refused from the meta count, not allocated
    ],
)
def test_export_of_a_damaged_result_is_one_line_before_anything_is_built(tmp_path, damage, needle):
    run_dir = completed_run(tmp_path, **damage)
    proc = cli_here("export", str(run_dir), "--merged", str(tmp_path / "out.safetensors"))
    assert_one_line_exit_2(proc, needle)
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize(
    "out, needle",
    [
        ("/proc/merged.safetensors", "cannot be written"),
        ("/proc/self/merged.safetensors", "cannot be written"),
        ("/dev/null", "is a character device"),
    ],
)
def test_export_into_proc_or_over_a_device_is_one_line(tmp_path, out, needle):
    run_dir = completed_run(tmp_path)
    assert_one_line_exit_2(cli_here("export", str(run_dir), "--merged", out), out, needle)
    assert_one_line_exit_2(
        cli_here("export", str(run_dir), "--peft", "/proc/adapter"), "/proc/adapter", "cannot be written"
    )


def test_train_onto_a_full_disk_is_one_line_naming_the_file(tmp_path, small_disk):
    """A real full file system (64 KiB tmpfs): the line names the file that could not be written."""
    from testkit import write_tiny_run

    proc = cli_here(
        "train", str(write_tiny_run(tmp_path / "tiny.yaml")), "--run-dir", str(small_disk / "run"), "--quiet"
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "No space left on device (ENOSPC)" in proc.stderr, proc.stderr
    assert f"peftlab: error: {small_disk / 'run'}/" in proc.stderr, proc.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_peftlab_exits_is_no_traceback(tmp_path, signum):
    """A Ctrl-C or SIGTERM that lands in the interpreter's exit finalizers (after the command's
    work) used to print a KeyboardInterrupt traceback and exit 0; now the process ends with the
    command's status. The signal is sent by an atexit function registered before ``main``'s own, so
    it lands exactly where ``main``'s last hook has made further stops ignored. The command is ``peftlab methods``,
    which imports no torch: the stop is in the interpreter's exit, whatever the command did before it."""
    from testkit import run_python

    script = (
        f"import atexit, os, signal, sys\nfrom peftlab.cli import main\n"
        f"atexit.register(lambda: os.kill(os.getpid(), {int(signum)}))\n"
        f"sys.exit(main(['methods']))\n"
    )
    proc = run_python(script, timeout=1200)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("method ") and "\nlora " in proc.stdout, proc.stdout


def interrupted_validate(monkeypatch, command) -> None:
    """``peftlab validate`` made to run ``command`` instead."""
    import peftlab.cli.run

    monkeypatch.setattr(peftlab.cli.run, "cmd_validate", command)


def test_a_ctrl_c_that_a_library_turned_into_an_import_error_is_one_line(monkeypatch, capsys):
    """transformers' lazy import meets the KeyboardInterrupt of its import and raises a
    ModuleNotFoundError from it: the command says it was interrupted, as for the Ctrl-C itself."""
    from peftlab.cli import run_command

    def command(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as err:
            raise ModuleNotFoundError("Could not import module 'GenerationMixin'") from err

    interrupted_validate(monkeypatch, command)
    assert run_command(["validate", "x.yaml"]) == 128 + signal.SIGINT
    assert capsys.readouterr().err == "peftlab: interrupted (SIGINT); run the same command again to resume\n"


def test_a_ctrl_c_that_c_code_swallowed_is_still_the_commands_end(monkeypatch, capsys):
    """C code can clear the KeyboardInterrupt (a hasattr on a module whose import it cut short),
    and the half-imported module fails later with an unrelated error: the command remembers the
    Ctrl-C it took and ends as interrupted; the next command starts with none remembered."""
    import time

    from peftlab.cli import run_command

    def command(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass  # swallowed
        raise ImportError("cannot load module more than once per process")

    interrupted_validate(monkeypatch, command)
    sigint = signal.getsignal(signal.SIGINT)
    assert run_command(["validate", "x.yaml"]) == 128 + signal.SIGINT
    assert capsys.readouterr().err == "peftlab: interrupted (SIGINT); run the same command again to resume\n"
    assert signal.getsignal(signal.SIGINT) is sigint  # the caller's handler is back

    def failing(args):
        raise ImportError("cannot load module more than once per process")

    interrupted_validate(monkeypatch, failing)
    with pytest.raises(ImportError):  # an error of its own: no Ctrl-C from the earlier command
        run_command(["validate", "x.yaml"])


def test_a_sigterm_while_a_stopping_process_replaces_its_handlers_is_remembered_not_raised(monkeypatch):
    """CI: a worker took the terminal's SIGINT and began to stop; the study's SIGTERM arrived while
    ``ignore_further_stops`` was replacing the handlers, and its Interrupted escaped as a traceback."""
    import signal

    from peftlab.utils import errors

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    real, calls = signal.signal, []

    def with_a_sigterm_inside(signum, handler):
        if not calls:  # Python runs the pending handler here, as in CI's traceback
            calls.append(signum)
            errors.on_stop(signal.SIGTERM, None)
        return real(signum, handler)

    try:
        errors.take_stops()
        monkeypatch.setattr(signal, "signal", with_a_sigterm_inside)
        errors.ignore_further_stops()
        monkeypatch.setattr(signal, "signal", real)
        assert calls and errors.RECEIVED[-1] == signal.SIGTERM
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        errors.take_stops()  # a command that takes stops again raises them again
        with pytest.raises(KeyboardInterrupt):
            errors.on_stop(signal.SIGINT, None)
    finally:
        errors.STOPPING.clear()
        errors.RECEIVED.clear()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_params_options_beside_a_config_are_applied_or_refused_never_ignored():
    """`params CONFIG --method houlsby` (or --r, --targets) counts what the options ask, as the same dotted
    overrides would; an option the method cannot take is one line, with a config or a model name."""
    by_flags = cli_here("params", "configs/downstream.yaml", "--method", "houlsby", "--json")
    by_keys = cli_here("params", "configs/downstream.yaml", "method.name=houlsby", "--json")
    lora = cli_here("params", "configs/downstream.yaml", "--json")
    assert by_flags.returncode == by_keys.returncode == lora.returncode == 0, by_flags.stderr
    assert json.loads(by_flags.stdout) == json.loads(by_keys.stdout) != json.loads(lora.stdout)
    wider = cli_here("params", "configs/downstream.yaml", "--r", "32", "--targets", "all-linear", "--json")
    keyed = cli_here("params", "configs/downstream.yaml", "method.r=32", "method.target_modules=all-linear", "--json")
    assert json.loads(wider.stdout) == json.loads(keyed.stdout) != json.loads(lora.stdout)
    assert_one_line_exit_2(cli_here("params", "configs/downstream.yaml", "--method", "houlsby", "--r", "4"), "method.r")
    assert_one_line_exit_2(cli_here("params", "vit_tiny_patch16_224", "--r", "4"), "--r sets method.r", "'full'")


def test_params_counts_an_image_folder_configs_head_from_its_class_folders(tmp_path):
    """The folder is there: its class folders give the head's size (no --num-classes asked, no image opened)."""
    for split in ("train", "test"):
        for name in ("circle", "square", "star"):
            (tmp_path / split / name).mkdir(parents=True)
            (tmp_path / split / name / "0.png").write_bytes(b"never decoded")
    folder = cli_here("params", "configs/downstream.yaml", "data.name=imagefolder", f"data.root={tmp_path}", "--json")
    given = cli_here("params", "configs/downstream.yaml", "--num-classes", "3", "--json")
    assert folder.returncode == 0, folder.stderr
    assert json.loads(folder.stdout) == json.loads(given.stdout) and json.loads(folder.stdout)["num_classes"] == 3
    missing = cli_here("params", "configs/downstream.yaml", "data.name=imagefolder", f"data.root={tmp_path / 'no'}")
    assert_one_line_exit_2(missing, "data.root=")


def test_params_says_when_a_missing_base_leaves_a_size_to_the_model_names_default(tmp_path):
    """A base's sizes are read from the manifest beside it; a config that leaves one out, on a base that is not
    there, is counted at the model name's own size: said in one note, not left silent."""
    missing = f"model.pretrained={tmp_path / 'base.safetensors'}"
    sized = cli_here("params", "configs/downstream.yaml", missing, "--json")
    assert sized.returncode == 0 and sized.stderr == "", sized.stderr  # every size given: nothing to say
    unsized = cli_here("params", "configs/downstream.yaml", missing, "model.depth=null", "--json")
    assert unsized.returncode == 0 and len(unsized.stderr.splitlines()) == 1
    assert "is not there" in unsized.stderr and "model.depth" in unsized.stderr and "not the base's" in unsized.stderr
