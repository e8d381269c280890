"""Ctrl-C of `peftlab study` in its first seconds (while the forkserver imports torch, timm and
PEFT, while workers start; under --start-method spawn, while a spawned worker imports them) prints
peftlab's one line and exits 130: no process of the study prints a traceback, and none outlives it.

The moments are taken from what the study has started (the forkserver, its first worker), not
from the clock, so that a slow or busy machine moves them with it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_runner import write_study
from testkit import REPO, group_alive, needs_fashion_mnist, run_python, wait_until

pytestmark = [pytest.mark.e2e, needs_fashion_mnist()]


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (its threads' children files): polled every 20 ms, so that the moment
    is caught, this reads a few files where a scan of every process on the machine cost the test process
    1 to 3 CPU seconds a case."""
    if not CHILDREN_FILES:  # a kernel without CONFIG_PROC_CHILDREN: every process's parent, read from its stat
        return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit() and parent(entry) == pid]
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


CHILDREN_FILES = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()


def parent(entry: Path) -> int | None:
    try:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def forkserver_of(study_pid: int) -> int | None:
    return next((pid for pid in children(study_pid) if "multiprocessing.forkserver" in cmdline(pid)), None)


def python_catches_sigint(pid: int) -> bool:
    try:
        caught = Path(f"/proc/{pid}/status").read_text().split("SigCgt:")[1].split()[0]
    except (OSError, IndexError):
        return False
    return bool(int(caught, 16) & (1 << (signal.SIGINT - 1)))


def started(study_pid: int, event: str) -> bool:
    if event == "start":  # Python's own SIGINT handler installed: before it, the kernel kills the process
        return python_catches_sigint(study_pid)
    if event == "spawned":  # a worker of --start-method spawn, importing torch
        return any("spawn_main" in cmdline(pid) for pid in children(study_pid))
    forkserver = forkserver_of(study_pid)
    if event == "forkserver":
        return forkserver is not None
    return forkserver is not None and bool(children(forkserver))  # a worker


@pytest.mark.parametrize(
    "event, after",
    [
        ("start", 0.3),
        ("forkserver", 0.0),  # just spawned
        ("forkserver", 1.5),  # importing torch, timm and PEFT (several seconds: one point inside guards it)
        ("worker", 0.0),
        ("worker", 0.3),
        ("spawned", 0.0),
        ("spawned", 1.5),
    ],
)
def test_ctrl_c_in_the_first_seconds_is_one_line(tmp_path, event, after):
    path = write_study(tmp_path, {"seeds": 2, "methods": {"lora": {}}, "set": {"train.epochs": 24}})
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "peftlab.cli",
            "study",
            str(path),
            "--study-dir",
            str(tmp_path / "out"),
            "--quiet",
            "--workers",
            "2",
            "--start-method",
            "spawn" if event == "spawned" else "forkserver",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 1200
    while not started(proc.pid, event) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(after)
    assert proc.poll() is None, proc.stderr.read()
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal sends it: to every process of the group
    _, stderr = proc.communicate(timeout=480)
    assert wait_until(lambda: not group_alive(proc.pid), 60), "a process of the study outlived it"
    assert "Traceback" not in stderr, stderr
    assert stderr.splitlines() == ["peftlab: interrupted (SIGINT); run the same command again to resume"], stderr
    assert proc.returncode == 130


# The study process with a Ctrl-C landing while it spawns its forkserver (sent from inside the spawn)
SPAWN_WITH_CTRL_C = """
import os, signal, time, multiprocessing.forkserver as forkserver
from peftlab.study.executors.local import start_forkserver

spawn = forkserver.ensure_running
def ctrl_c_then_spawn():
    os.kill(os.getpid(), signal.SIGINT)
    spawn()
forkserver.ensure_running = ctrl_c_then_spawn
try:
    start_forkserver()
    print("lost", flush=True)
except KeyboardInterrupt:
    time.sleep(0.5)
    pid = forkserver._forkserver._forkserver_pid
    print("interrupted, forkserver", "alive" if os.waitpid(pid, os.WNOHANG) == (0, 0) else "dead", flush=True)
"""


def test_a_ctrl_c_while_the_forkserver_is_spawned_reaches_the_study():
    """The forkserver must not take a Ctrl-C (it imports torch meanwhile), so SIGINT is held back
    while it is spawned; one that lands then is not lost: the study takes it once the spawn is done."""
    proc = run_python(SPAWN_WITH_CTRL_C, timeout=240)
    assert proc.stdout == "interrupted, forkserver alive\n", proc.stdout + proc.stderr


# A study process with another thread (torch starts some), and a Ctrl-C that lands while a spawned
# worker is started: between the child's start and the call written to its pipe
START_WITH_CTRL_C_IN_A_THREADED_PROCESS = """
import multiprocessing, multiprocessing.resource_tracker, multiprocessing.util as util, os, signal, threading, time
from peftlab.study.executors.local import start_held

multiprocessing.resource_tracker.ensure_running()  # its own spawn is not the one this Ctrl-C lands in
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()  # SIGINT unblocked here
spawnv = util.spawnv_passfds
def spawn_then_ctrl_c(*args):
    pid = spawnv(*args)
    os.kill(os.getpid(), signal.SIGINT)  # the kernel hands it to the thread that does not block it
    time.sleep(0.5)  # where Python would raise the KeyboardInterrupt if nothing held it back
    return pid
util.spawnv_passfds = spawn_then_ctrl_c
proc = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
try:
    start_held(proc)
    print("lost", flush=True)
except KeyboardInterrupt:
    proc.join(120)
    print("interrupted, worker exit code", proc.exitcode, flush=True)
"""


def test_a_ctrl_c_while_a_worker_is_spawned_waits_for_the_start():
    """Blocking SIGINT in the main thread does not hold a Ctrl-C back in a process with other
    threads: the KeyboardInterrupt is held until the start is done, so the child reads its call
    (no EOFError traceback from spawn_main), and the study then takes it."""
    proc = run_python(START_WITH_CTRL_C_IN_A_THREADED_PROCESS, timeout=240)
    assert proc.stdout == "interrupted, worker exit code 0\n", proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
