"""A pinned run's thread count comes from its config, never from the machine (issue 71): a reproducible run whose
``train.threads`` is null runs on ``REPRODUCIBLE_THREADS`` whatever cores the process sees (the thread count changes
the reduction order, so 16 threads gave other bits than 2 for the same pinned pretraining); a run that is not
pinned keeps the machine's cores. Each case runs in a process that sees one core (``sched_setaffinity``), with
``OMP_NUM_THREADS`` unset, as on a laptop whose core count differs from the machine that made the results."""

import json
import os
import subprocess
import sys

import pytest
from testkit import needs_fashion_mnist, write_tiny_run

from peftlab.training.runtime import REPRODUCIBLE_THREADS, run_threads

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="sched_setaffinity is Linux's")


def on_one_core(*argv: str, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    core = min(os.sched_getaffinity(0))
    return subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),
    )


def test_the_thread_count_of_a_pinned_run_does_not_follow_the_cores_it_sees():
    script = (
        "from peftlab.training.runtime import run_threads; "
        "print(run_threads(None, True), run_threads(None, False), run_threads(3, True))"
    )
    proc = on_one_core(sys.executable, "-c", script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(REPRODUCIBLE_THREADS), "1", "3"]


def test_omp_num_threads_set_by_the_user_still_decides(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert run_threads(None, True) == run_threads(None, False) == 5
    assert run_threads(4, True) == 4


@needs_fashion_mnist()
def test_a_pinned_run_records_its_configured_threads_on_one_core(tmp_path):
    config = write_tiny_run(tmp_path / "run.yaml", reproducible=True, max_steps=1)
    proc = on_one_core(
        sys.executable, "-m", "peftlab", "train", str(config), "--run-dir", "run", "--quiet", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["provenance"]["threads"] == REPRODUCIBLE_THREADS
