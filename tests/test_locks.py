"""Directory locks between real processes: refused with the holder named, waited for, taken over."""

import os
import signal
import subprocess
import sys
import time

import pytest
from testkit import REPO

from peftlab.utils.locks import DirectoryInUse, hold

HOLDER = """
import sys, time
from peftlab.utils.locks import hold
with hold(sys.argv[1], "study directory", "peftlab study"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def start_holder(directory, seconds):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO / "src")),
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_directory_is_refused_naming_its_holder(tmp_path):
    holder = start_holder(tmp_path, 30)
    try:
        with pytest.raises(DirectoryInUse) as err:
            with hold(tmp_path, "study directory", "peftlab study"):
                pass
        message = str(err.value)
        assert f"study directory {tmp_path} is in use by pid {holder.pid} on " in message
        assert "(peftlab study, since " in message and "\n" not in message
        assert message.endswith("; wait for it to finish")  # no flag the caller may not have (reproduce, train)
        with pytest.raises(DirectoryInUse, match="wait for it to finish, or add --wait to start when it does$"):
            with hold(tmp_path, "study directory", "peftlab study", wait_flag="--wait"):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_waiting_starts_when_the_holder_ends(tmp_path):
    holder = start_holder(tmp_path, 1.5)
    told = []
    start = time.perf_counter()
    with hold(tmp_path, "study directory", "peftlab study", wait=True, on_wait=told.append):
        waited = time.perf_counter() - start  # the holder keeps it 1.5 s after saying so
    holder.wait()
    assert len(told) == 1 and "waiting for it" in told[0] and waited > 1.0


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path):
    holder = start_holder(tmp_path, 60)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with hold(tmp_path, "run directory", "peftlab train"):  # no stale lock: the OS released it
        assert f'"pid": {os.getpid()}' in (tmp_path / ".lock").read_text()
