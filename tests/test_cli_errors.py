"""The four user errors of the foundation issue, through the real CLI: one line, exit 2."""

import json
import os
import sys

import pytest
import yaml

from testkit import REPO, run_cli

sys.path.insert(0, str(REPO / "tests" / "data"))
import datafiles  # noqa: E402


def assert_one_line_exit_2(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("peftlab: error: ") and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_bad_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": -1}}))
    assert_one_line_exit_2(run_cli("train", str(path), "--run-dir", str(tmp_path / "run")), "train.lr=-1")


def test_missing_data(tmp_path):
    env_dir = tmp_path / "empty"
    env_dir.mkdir()
    proc = run_cli("data", "info", "cifar100", "--root", str(env_dir))
    assert_one_line_exit_2(proc, "cifar100", str(env_dir))


def test_corrupt_idx_file(tmp_path):
    datafiles.write_idx_dataset(tmp_path, gz=False)
    target = tmp_path / "train-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:-100])
    assert_one_line_exit_2(run_cli("data", "info", "fashion_mnist", "--root", str(tmp_path)),
                           "train-images-idx3-ubyte")


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    datafiles.write_cifar10_python(tmp_path)
    marker = tmp_path / "pwned"
    from peftlab.data.safe_pickle import load_pickle

    batch = load_pickle(tmp_path / "data_batch_2")
    batch[b"data"] = Payload(str(marker))
    datafiles.write_pickle(tmp_path / "data_batch_2", batch)
    proc = run_cli("data", "info", "cifar10", "--root", str(tmp_path))
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
    from peftlab.config import load_config
    from peftlab.pretrain import cached_manifest

    cfg = load_config(overrides={"method": {"name": "full"}})
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    for content in ("{broken", "[]", '{"weights": 5}', "\xff"):
        (tmp_path / "manifest.json").write_text(content, errors="surrogateescape")
        assert cached_manifest(cfg, tmp_path) is None


def test_export_needs_exactly_one_output(tmp_path):
    for args in ([], ["--merged", str(tmp_path / "a.safetensors"), "--quantized", str(tmp_path / "b.safetensors")]):
        assert_one_line_exit_2(run_cli("export", str(tmp_path), *args), "export needs exactly one output")


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
    by_config = run_cli("params", "configs/downstream.yaml", "method.name=lora", "method.r=8", "--json")
    assert by_config.returncode == 0, by_config.stderr
    by_name = run_cli("params", "vit_tiny_patch16_224", "--img-size", "28", "--patch-size", "7", "--depth", "4",
                      "--embed-dim", "128", "--num-heads", "4", "--num-classes", "10", "--method", "lora", "--r", "8",
                      "--json")
    assert by_name.returncode == 0, by_name.stderr
    counts = json.loads(by_config.stdout)
    assert counts == json.loads(by_name.stdout)
    assert counts["num_classes"] == 10 and counts["trainable"] == 17_674  # the default study's LoRA r=8
    wrong = run_cli("params", "vit_tiny_patch16_224", "method.r=4")
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "go with a run config" in wrong.stderr
