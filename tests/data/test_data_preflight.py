"""Checks before any run (issue 72): ``peftlab validate``, a study's pre-flight and its ``--dry-run`` look at the data
without decoding it, and a problem is one line (exit status 2) before any run folder is made: a missing data.root,
one class folder, an empty class, test classes that training never sees, a named dataset that is absent or missing a
file, a file list that does not parse. Before, each was "valid" and a study then failed every run."""

import gzip
import os
import shutil

import pytest
import yaml
from datafiles import isolated_cache, write_idx_dataset, write_image_folder  # noqa: F401 (an autouse fixture)
from testkit import TINY_MODEL, assert_one_line_refusal, command_in_process

BASE = {"model": {**TINY_MODEL, "pretrained": "none"}, "train": {"max_steps": 1}}


def folder(root, **data):
    return {"name": "imagefolder", "root": str(root), **data}


def broken_cases(tmp_path):
    """name -> (data section, words the refusal holds)."""
    one = tmp_path / "one"
    write_image_folder(one, classes=("cat",))
    empty = tmp_path / "empty"
    write_image_folder(empty)
    shutil.rmtree(empty / "dog")
    (empty / "dog").mkdir()
    unseen = tmp_path / "unseen"
    write_image_folder(unseen, split=True)
    write_image_folder(unseen / "test", classes=("cow",), per_class=2)
    idx = tmp_path / "idx"
    write_idx_dataset(idx)
    os.unlink(idx / "t10k-labels-idx1-ubyte.gz")
    lists = tmp_path / "lists"
    write_image_folder(lists)
    (lists / "train.txt").write_text("cat/0.png 0\ndog/1.png\n")
    (lists / "test.txt").write_text("cat/1.png 0\n")
    return {
        "missing root": (folder(tmp_path / "nowhere"), "does not exist or is not a folder"),
        "one class folder": (folder(one), "found one class folder (cat)"),
        "an empty class folder": (folder(empty), "hold no images"),
        "test classes not trained": (folder(unseen), "do not exist in the train split"),
        "cifar10 absent": ({"name": "cifar10"}, "no cifar10 data found"),
        "an idx file missing": ({"name": "fashion_mnist", "root": str(idx)}, "t10k-labels-idx1-ubyte"),
        "a list line without its label": (
            {"name": "filelist", "root": str(lists), "train_list": "train.txt", "test_list": "test.txt"},
            "train.txt",
        ),
    }


CASES = [
    "missing root",
    "one class folder",
    "an empty class folder",
    "test classes not trained",
    "cifar10 absent",
    "an idx file missing",
    "a list line without its label",
]


@pytest.mark.parametrize("case", CASES)
def test_validate_refuses_data_a_run_would_stop_on(tmp_path, case):
    data, words = broken_cases(tmp_path)[case]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**BASE, "data": data}))
    assert_one_line_refusal(*command_in_process("validate", str(config)), words)


@pytest.mark.parametrize("dry_run", [False, True], ids=["study", "dry-run"])
@pytest.mark.parametrize("case", ["missing root", "one class folder", "cifar10 absent"])
def test_a_study_with_data_its_runs_cannot_read_stops_before_any_run_folder(tmp_path, case, dry_run):
    data, words = broken_cases(tmp_path)[case]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**BASE, "data": data}))
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump({"name": "s", "base": "base.yaml", "seeds": 2, "methods": {"lora": {}, "linear": {}}})
    )
    out = tmp_path / "out"
    status, stderr = command_in_process("study", str(study), "--study-dir", str(out), *(["--dry-run"] * dry_run))
    assert_one_line_refusal(status, stderr, words, "stops 4 runs (linear, lora)")
    assert not (out / "runs").exists()


def test_good_data_passes_and_is_not_decoded(tmp_path):
    good = tmp_path / "good"
    write_image_folder(good, split=True)
    (good / "train" / "cat" / "0.png").write_bytes(b"not an image: decoding is the run's business")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**BASE, "data": folder(good)}))
    assert command_in_process("validate", str(config)) == (0, "")
    idx = tmp_path / "idx"
    write_idx_dataset(idx, gz=False)
    with gzip.open(idx / "train-images-idx3-ubyte.gz", "wb") as f:  # either form of an idx file is found
        f.write((idx / "train-images-idx3-ubyte").read_bytes())
    os.unlink(idx / "train-images-idx3-ubyte")
    config.write_text(yaml.safe_dump({**BASE, "data": {"name": "fashion_mnist", "root": str(idx)}}))
    assert command_in_process("validate", str(config)) == (0, "")


def test_a_dataset_the_run_may_download_passes_when_absent(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**BASE, "data": {"name": "cifar10", "download": True}}))
    assert command_in_process("validate", str(config)) == (0, "")
