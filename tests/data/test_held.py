"""A study's forkserver holds its runs' array datasets decoded (``peftlab.data.held``): a run forked from it takes
them instead of reading the files, while every file of the folder is as it was read; the holder itself, and any
process not forked from it, reads the files."""

import gzip
import json
import multiprocessing.forkserver
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from peftlab.config.schema import load_config
from peftlab.data import held as held_module
from peftlab.data.held import ENV_HELD_DATA
from peftlab.data.sources import read_layout
from peftlab.study.executors.local import held_for, hold_from_environment

LAYOUT = "fashion_mnist_idx"


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Fashion-MNIST's four IDX files (gzipped) holding ``images`` as train and test, ``labels`` as their labels."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in ("train", "t10k"):
        for kind, array in (("images", images), ("labels", labels)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
            rank = array.ndim
            (folder / f"{stem}-{kind}-idx{rank}-ubyte.gz").write_bytes(gzip.compress(header + array.tobytes()))
    return folder


@pytest.fixture
def dataset(tmp_path, monkeypatch) -> Path:
    """A tiny Fashion-MNIST in its own folder; nothing held before the test, nothing kept after it."""
    monkeypatch.setattr(held_module, "HELD", {})
    monkeypatch.setattr(held_module, "HOLDER", {})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    return write_idx(tmp_path / "fashion", images, (np.arange(20) % 10).astype(np.uint8))


def to_hold(configs) -> str | None:
    """What a study whose runs have ``configs`` (whole run configs) names for its forkserver to hold."""
    return held_for([(SimpleNamespace(config=config), None) for config in configs])


def hold(monkeypatch, value: str) -> None:
    monkeypatch.setenv(ENV_HELD_DATA, value)
    hold_from_environment()


def in_a_fork(folder: Path) -> dict:
    """What ``read_layout`` gives a process forked from this one: whether it is the held dataset, and its pixels."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # only numpy and the reader here: no torch thread is used in the child
        try:
            raw = read_layout(LAYOUT, folder, split_seed=0)
            entry = held_module.HELD.get((LAYOUT, str(folder)))
            answer = {"held": entry is not None and raw is entry[1], "first": int(raw.train.images[0, 0, 0, 0])}
            answer["sha256"] = raw.sha256
            os.write(writer, json.dumps(answer).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        answer = json.loads(pipe.read())
    os.waitpid(pid, 0)
    return answer


def test_a_forked_run_takes_the_held_dataset_and_the_holder_reads_its_files(dataset, monkeypatch):
    hold(monkeypatch, json.dumps([[LAYOUT, str(dataset)]]))
    assert list(held_module.HELD) == [(LAYOUT, str(dataset))]
    read_here = read_layout(LAYOUT, dataset, split_seed=0)  # the holder: its files, a dataset of its own
    assert read_here is not held_module.HELD[(LAYOUT, str(dataset))][1]
    forked = in_a_fork(dataset)
    assert forked["held"] and forked["sha256"] == read_here.sha256
    assert forked["first"] == int(read_here.train.images[0, 0, 0, 0])


@pytest.mark.parametrize("change", ["rewritten", "touched", "added"])
def test_a_folder_changed_since_it_was_held_is_read_again(dataset, monkeypatch, change):
    hold(monkeypatch, json.dumps([[LAYOUT, str(dataset)]]))
    before = in_a_fork(dataset)
    path = dataset / "train-images-idx3-ubyte.gz"
    if change == "rewritten":  # other pixels, the same name
        images = np.full((20, 28, 28), 7, dtype=np.uint8)
        write_idx(dataset, images, (np.arange(20) % 10).astype(np.uint8))
    elif change == "touched":
        os.utime(path, ns=(1, 1))
    else:
        (dataset / "README").write_text("a file beside them")
    after = in_a_fork(dataset)
    assert before["held"] and not after["held"]
    if change == "rewritten":
        assert after["first"] == 7 and after["sha256"] != before["sha256"]


def test_what_a_study_holds_is_its_array_datasets_found_without_downloading(dataset, tmp_path):
    fashion = load_config(overrides={"data": {"name": "fashion_mnist", "root": str(dataset)}})
    missing = load_config(overrides={"data": {"name": "cifar10", "root": str(tmp_path / "nowhere")}})
    (tmp_path / "images" / "a").mkdir(parents=True)
    folder = load_config(overrides={"data": {"name": "imagefolder", "root": str(tmp_path / "images")}})
    assert json.loads(to_hold([fashion, missing, folder, fashion])) == [[LAYOUT, str(dataset.resolve())]]
    assert to_hold([missing, folder]) is None


@pytest.mark.parametrize("value", ["not json", "[1, 2]", '[["fashion_mnist_idx"]]', "{}"])
def test_an_environment_it_did_not_write_holds_nothing(dataset, monkeypatch, value):
    hold(monkeypatch, value)
    assert held_module.HELD == {}


def test_a_dataset_that_does_not_read_is_not_held_and_its_run_meets_the_error(dataset, monkeypatch):
    (dataset / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    hold(monkeypatch, json.dumps([[LAYOUT, str(dataset)], ["imagefolder", str(dataset)]]))
    assert held_module.HELD == {}
    with pytest.raises(Exception, match="train-labels-idx1-ubyte.gz"):
        read_layout(LAYOUT, dataset, split_seed=0)


def answer_held(queue, folder: str) -> None:
    """A forkserver's child: whether it holds the dataset in ``folder`` (a study's worker would take it)."""
    queue.put(held_module.held(LAYOUT, Path(folder)) is not None)


def test_the_study_forkserver_holds_what_its_runs_read(dataset):
    from peftlab.study.executors import local

    held = to_hold([load_config(overrides={"data": {"name": "fashion_mnist", "root": str(dataset)}})])
    multiprocessing.forkserver._forkserver._stop()  # a server an earlier test started keeps its own preload
    try:
        ctx = local.worker_context(preload=("peftlab.data",), held=held)
        queue = ctx.Queue()
        proc = ctx.Process(target=answer_held, args=(queue, str(dataset.resolve())))
        proc.start()
        proc.join()
        assert proc.exitcode == 0 and queue.get(timeout=10) is True
        assert ENV_HELD_DATA not in os.environ  # set only while the server started
    finally:
        multiprocessing.forkserver._forkserver._stop()


def test_a_study_s_pretraining_starts_the_forkserver_that_holds_what_its_final_runs_read(dataset, monkeypatch):
    """The server a study starts for its pretraining is the one its trials and final runs are forked from (a server
    already running keeps what it started with): inside ``serving`` it holds their dataset from the start."""
    from peftlab.study.executors import local

    monkeypatch.setattr(local, "PRELOAD", ("peftlab.data",))  # the test's server imports no torch
    finals = [
        (SimpleNamespace(config=load_config(overrides={"data": {"name": "fashion_mnist", "root": str(dataset)}})), None)
    ]
    assert local.held_for([]) is None  # no study running
    multiprocessing.forkserver._forkserver._stop()
    try:
        with local.serving(finals):
            assert local.held_for([]) == to_hold([finals[0][0].config])
            ctx = local.pretraining_context("forkserver")
            queue = ctx.Queue()
            proc = ctx.Process(target=answer_held, args=(queue, str(dataset.resolve())))
            proc.start()
            proc.join()
            assert proc.exitcode == 0 and queue.get(timeout=10) is True
        assert local.STUDY_JOBS == [] and local.held_for([]) is None  # the study ended: nothing is kept
    finally:
        multiprocessing.forkserver._forkserver._stop()
