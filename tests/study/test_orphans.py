"""No process of a study outlives its kill -9 (issue 70): the forkserver dies with the study while it still imports.

The forkserver reads its parent's end of a pipe, to end with the study, only once its preload (torch, timm, PEFT:
seconds, 23 on a loaded machine) is imported; a study killed meanwhile left it importing on, and then its workers.
Here the preload's second module never ends (it sleeps), so a forkserver that waits for its imports to end would
live on past any bound: the test fails on the cause, not on how fast a machine is.
"""

import os
import signal
import subprocess
import sys

from testkit import REPO, group_alive, wait_until

STUDY = """
import time
from peftlab.study.executors.local import worker_context

worker_context(preload=("peftlab.study.executors.worker", "endless_import"))
time.sleep(3600)
"""

ENDLESS_IMPORT = """
import os, time
from pathlib import Path

Path(__file__).with_name("importing").write_text(str(os.getpid()))
time.sleep(3600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_forkserver_dies_with_a_study_killed_while_it_imports(tmp_path):
    (tmp_path / "endless_import.py").write_text(ENDLESS_IMPORT)
    study = subprocess.Popen(
        [sys.executable, "-c", STUDY],
        env=dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{tmp_path}"),  # the forkserver's path too
        start_new_session=True,
    )
    try:
        assert wait_until(lambda: (tmp_path / "importing").exists() or study.poll() is not None), "no forkserver"
        assert study.poll() is None
        forkserver = int((tmp_path / "importing").read_text())
        os.kill(study.pid, signal.SIGKILL)
        study.wait()
        # generous: it dies at once; one that waits for its preload sleeps for an hour
        assert wait_until(lambda: not alive(forkserver), 60), "the forkserver outlived the study"
        assert wait_until(lambda: not group_alive(study.pid), 60), "a process of the study outlived it"
    finally:
        if group_alive(study.pid):
            os.killpg(study.pid, signal.SIGKILL)
