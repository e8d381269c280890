"""A worker forked from the forkserver runs in the study's environment as it is when the run starts, not as it was
when the server started: a notebook's kernel (and ``peftlab.reproduce``) runs study after study with one server and
sets what the runs read between them (``local_executor.environment_since_start``, ``worker.take_environment``)."""

from __future__ import annotations

import json
import multiprocessing.forkserver
import os
import shutil

from test_runner import study_here, write_study
from testkit import needs_fashion_mnist

from peftlab.data.sources import ENV_FASHION_MNIST_DIR, fashion_mnist_dir
from peftlab.study.executors.local import environment_since_start, worker_context
from peftlab.study.executors.worker import take_environment

NAMES = ("PEFTLAB_TEST_GONE", "PEFTLAB_TEST_MOVED", "PEFTLAB_TEST_NEW")


def environment_seen(changes: dict, queue) -> None:
    """In a forked worker: take ``changes``, then say what the worker's environment holds of ``NAMES``."""
    take_environment(changes)
    queue.put({name: os.environ.get(name) for name in NAMES})


def test_a_forked_worker_takes_what_the_study_set_and_unset_since_the_server_started(monkeypatch):
    """Set, changed and unset variables all reach the worker; without them it would see the server's."""
    server = multiprocessing.forkserver._forkserver
    monkeypatch.setenv("PEFTLAB_TEST_GONE", "at start")
    monkeypatch.setenv("PEFTLAB_TEST_MOVED", "at start")
    monkeypatch.delenv("PEFTLAB_TEST_NEW", raising=False)
    server._stop()  # a server of this test's environment, importing no torch (stopped again below for the next)
    try:
        ctx = worker_context(preload=("peftlab.study.executors.worker",))  # a study's server imports it first
        monkeypatch.delenv("PEFTLAB_TEST_GONE")
        monkeypatch.setenv("PEFTLAB_TEST_MOVED", "now")
        monkeypatch.setenv("PEFTLAB_TEST_NEW", "now")
        changes = environment_since_start()
        assert {name: changes[name] for name in NAMES} == {
            "PEFTLAB_TEST_GONE": None,
            "PEFTLAB_TEST_MOVED": "now",
            "PEFTLAB_TEST_NEW": "now",
        }
        seen = []
        for handed in (changes, {}):
            queue = ctx.SimpleQueue()
            proc = ctx.Process(target=environment_seen, args=(handed, queue))
            proc.start()
            proc.join()
            assert proc.exitcode == 0, proc.exitcode
            seen.append(queue.get())
        assert seen[0] == {"PEFTLAB_TEST_GONE": None, "PEFTLAB_TEST_MOVED": "now", "PEFTLAB_TEST_NEW": "now"}
        assert seen[1] == {"PEFTLAB_TEST_GONE": "at start", "PEFTLAB_TEST_MOVED": "at start", "PEFTLAB_TEST_NEW": None}
    finally:
        server._stop()


@needs_fashion_mnist()
def test_a_study_after_the_dataset_folder_changed_reads_the_new_folder(tmp_path, monkeypatch):
    """A study of a process whose forkserver started before the Fashion-MNIST folder was set to a copy: its run
    reads the copy (``provenance.data.source``)."""
    worker_context()  # the server runs (started now or by an earlier test) without the copy's folder
    copy = tmp_path / "fashion-copy"
    shutil.copytree(fashion_mnist_dir(), copy)
    monkeypatch.setenv(ENV_FASHION_MNIST_DIR, str(copy))
    path = write_study(tmp_path, {"seeds": 1, "set": {"train.epochs": 1}, "methods": {"linear": {}}})
    study_here(path, tmp_path / "out")
    (result,) = (tmp_path / "out").glob("runs/*/result.json")
    assert json.loads(result.read_text())["provenance"]["data"]["source"] == str(copy)
