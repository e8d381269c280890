"""A study waits for its forkserver's imports with Ctrl-C deliverable (``local.await_server``), so that a Ctrl-C
then is answered at once (tests/study/test_early_interrupt.py's cases end to end): the server's last preload makes
it ignore SIGINT, and the study reads that in /proc."""

import multiprocessing.forkserver
import os
import signal
import subprocess
import sys

import pytest

from peftlab.study.executors import local

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")

# a stand-in for a forkserver: it imports for a while (here it sleeps), then ignores SIGINT as its last preload does
SERVER = """
import sys, time
time.sleep(float(sys.argv[1]))
import peftlab.study.executors.serving_preload
time.sleep(60)
"""


def test_a_process_is_importing_until_it_ignores_sigint_and_a_gone_one_is_not():
    before = signal.getsignal(signal.SIGINT)
    assert local.importing(os.getpid())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert not local.importing(os.getpid())
    finally:
        signal.signal(signal.SIGINT, before)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert not local.importing(gone.pid)


def test_the_study_waits_for_the_servers_last_preload(monkeypatch):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    server = subprocess.Popen([sys.executable, "-c", SERVER, "1.0"], env=env)
    try:
        monkeypatch.setattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", server.pid)
        assert local.importing(server.pid)
        local.await_server()
        assert not local.importing(server.pid) and server.poll() is None  # it serves, and lives
    finally:
        server.kill()
        server.wait()
    local.await_server()  # gone (and reaped): no wait


def test_the_servers_preload_ends_with_the_module_that_ignores_sigint(monkeypatch):
    monkeypatch.setattr(local, "start_forkserver", lambda held=None: None)
    server = multiprocessing.forkserver._forkserver
    monkeypatch.setattr(server, "_preload_modules", server._preload_modules)  # put back after the test
    for held in (None, "held"):
        local.worker_context("forkserver", local.PRELOAD, held)
        assert server._preload_modules[-1] == local.SERVING_PRELOAD
        assert (local.HELD_PRELOAD in server._preload_modules) == bool(held)
