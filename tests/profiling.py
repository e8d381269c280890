"""The suite's profile (``make test-profile``, scripts/test_profile.py): with PEFTLAB_TEST_PROFILE set to a folder,
each pytest process (each xdist worker) appends one JSON line a test to ``<folder>/<worker>.jsonl``: its wall
seconds (set-up, call and tear-down), the CPU seconds of this process and of the children it waited for, and the
processes it started (subprocess and os.posix_spawn audit events; those started by multiprocessing's forkserver are
forked by the forkserver and not counted here). Where a CPU-accounting cgroup can be made (cgroup v1's cpuacct, as
root), each worker moves itself into one of its own, and ``cpu_tree`` is the CPU seconds of every process of the
worker's tree during the test: a study's forkserver workers and a Ray the test started count too, Slurm's jobs
(slurmd's children) do not. Without the variable nothing is recorded and nothing is hooked."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

FOLDER = os.environ.get("PEFTLAB_TEST_PROFILE")
STARTED = {"python": 0, "peftlab": 0, "other": 0}


def _count_processes(event: str, args: tuple) -> None:
    if event not in ("subprocess.Popen", "os.posix_spawn"):
        return
    argv = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else [args[0]]
    first = os.path.basename(str(argv[0] if argv else args[0]))
    kind = "peftlab" if first == "peftlab" else "python" if first.startswith("python") else "other"
    STARTED[kind] += 1


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


def _tree_group() -> Path | None:
    """A cpuacct cgroup holding this process (and so every process it starts from now on), or None where none can
    be made (no cgroup v1 cpuacct, not root, a container that forbids it)."""
    group = CPUACCT / f"peftlab-profile-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{os.getpid()}"
    try:
        group.mkdir(exist_ok=True)
        (group / "cgroup.procs").write_text(str(os.getpid()))
        int((group / "cpuacct.usage").read_text())
    except (OSError, ValueError):
        return None
    return group


def _tree_cpu(group: Path | None) -> float | None:
    try:
        return int((group / "cpuacct.usage").read_text()) / 1e9 if group else None
    except (OSError, ValueError):
        return None


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


class Profile:
    """The pytest plugin conftest.py registers when PEFTLAB_TEST_PROFILE is set."""

    def __init__(self, folder: str):
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.out = Path(folder) / f"{worker}.jsonl"
        sys.addaudithook(_count_processes)
        self.group = _tree_group()

    def pytest_runtest_logstart(self, nodeid, location):
        self.start = {nodeid: (time.perf_counter(), *_cpu(), dict(STARTED), _tree_cpu(self.group))}
        self.__dict__.pop("outcome", None)

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.outcome = "failed"
        elif report.when == "call" and getattr(self, "outcome", None) != "failed":
            self.outcome = report.outcome

    def pytest_runtest_logfinish(self, nodeid, location):
        if nodeid not in getattr(self, "start", {}):
            return
        wall, own, children, started, tree = self.start[nodeid]
        own_now, children_now, tree_now = *_cpu(), _tree_cpu(self.group)
        record = {
            "test": nodeid,
            "file": nodeid.split("::")[0],
            "wall": round(time.perf_counter() - wall, 3),
            "cpu": round(own_now - own, 3),
            "cpu_children": round(children_now - children, 3),
            "cpu_tree": round(tree_now - tree, 3) if tree is not None and tree_now is not None else None,
            **{f"started_{k}": STARTED[k] - started[k] for k in STARTED},
            "outcome": self.__dict__.pop("outcome", "skipped"),
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
            "end": time.time(),
        }
        with self.out.open("a") as f:
            f.write(json.dumps(record) + "\n")
