"""Where the suite's time goes (``make test-profile``): runs the README's test command's pytest with the profile
plugin (tests/profiling.py), then prints the 50 slowest tests and the 20 slowest files with their CPU seconds and
the processes they started, the suite's wall time, the load while it ran and the CPU.

    python scripts/test_profile.py [--out DIR] [--workers 2] [PYTEST ARGS ...]
    python scripts/test_profile.py --summarise DIR     # the tables of a profile already taken

A test's wall time is its set-up, call and tear-down in its worker; ``cpu`` is its worker's own CPU seconds and
``child cpu`` those of the processes it started and waited for; ``tree cpu``, where a CPU-accounting cgroup could be
made, those of every process of its worker's tree during it (a study's forkserver workers and Ray's too; "-"
elsewhere); ``procs`` counts the python / peftlab processes it started (not a study's workers, which its forkserver
forks).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_line() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} CPUs, {' '.join(isa) or 'no AVX2'}"


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot from /proc/stat: every process counts, a study's
    forkserver workers and Slurm's and Ray's daemons too, which the per-test figures cannot see."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


def run(out: Path, workers: int, pytest_args: list[str]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jsonl"):
        old.unlink()
    loads, done = [], threading.Event()

    def sample():
        while not done.wait(15):
            loads.append(float(Path("/proc/loadavg").read_text().split()[0]))

    threading.Thread(target=sample, daemon=True).start()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if workers:
        cmd += ["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"]
    start, busy_before = time.perf_counter(), machine_cpu_seconds()
    proc = subprocess.run(cmd + pytest_args, cwd=REPO, env={**os.environ, "PEFTLAB_TEST_PROFILE": str(out)})
    wall = time.perf_counter() - start
    busy, every = (after - before for after, before in zip(machine_cpu_seconds(), busy_before))
    done.set()
    meta = {
        "wall": round(wall, 1),
        "exit": proc.returncode,
        "workers": workers,
        "cpu": cpu_line(),
        "load": [min(loads), max(loads), sum(loads) / len(loads)] if loads else None,
        "machine_busy": [round(busy), round(busy / every, 3)],  # CPU s of every process, share of all CPUs' time
        "args": pytest_args,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def summarise(out: Path) -> str:
    records = [json.loads(line) for f in sorted(out.glob("*.jsonl")) for line in f.read_text().splitlines()]
    meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {}
    lines = []
    if meta:
        load = meta.get("load")
        lines.append(f"pytest: {meta['wall']:.0f} s of wall clock, exit {meta['exit']}, {meta['workers']} workers")
        lines.append(f"machine: {meta['cpu']}")
        if load:
            lines.append(f"load (1-minute, every 15 s): {load[0]:.1f} to {load[1]:.1f}, mean {load[2]:.1f}")
        if meta.get("machine_busy"):
            busy, share = meta["machine_busy"]
            lines.append(f"the machine's CPUs: {busy} CPU s busy in all processes, {share:.0%} of their time")
    total = sum(r["wall"] for r in records)
    cpu = sum(r["cpu"] + r["cpu_children"] for r in records)
    procs = sum(r["started_python"] + r["started_peftlab"] for r in records)
    tree = [r["cpu_tree"] for r in records if r.get("cpu_tree") is not None]
    lines.append(
        f"{len(records)} tests: {total:.0f} s of test time in all workers, {cpu:.0f} CPU s (own + children), "
        + (f"{sum(tree):.0f} CPU s of the workers' process trees, " if tree else "")
        + f"{procs} python/peftlab processes started"
    )
    failed = [r["test"] for r in records if r.get("outcome") == "failed"]
    if failed:
        lines += ["", f"{len(failed)} failed:"] + [f"- {name}" for name in failed]
    lines += [
        "",
        "The 50 slowest tests:",
        "",
        "| wall s | cpu s | child cpu s | tree cpu s | procs | test |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(records, key=lambda r: -r["wall"])[:50]:
        n = r["started_python"] + r["started_peftlab"]
        lines.append(
            f"| {r['wall']:.1f} | {r['cpu']:.1f} | {r['cpu_children']:.1f} | {shown(r.get('cpu_tree'))} | {n} "
            f"| {r['test']} |"
        )
    files = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0, None])
    for r in records:
        f = files[r["file"]]
        f[0] += 1
        f[1] += r["wall"]
        f[2] += r["cpu"]
        f[3] += r["cpu_children"]
        f[4] += r["started_python"] + r["started_peftlab"]
        if r.get("cpu_tree") is not None:
            f[5] = (f[5] or 0.0) + r["cpu_tree"]
    lines += ["", "The 20 slowest files:", "", "| wall s | cpu s | child cpu s | tree cpu s | procs | tests | file |"]
    lines.append("|---:|---:|---:|---:|---:|---:|---|")
    for name, (n, wall, own, child, started, tree) in sorted(files.items(), key=lambda kv: -kv[1][1])[:20]:
        lines.append(f"| {wall:.0f} | {own:.0f} | {child:.0f} | {shown(tree, 0)} | {started} | {n} | {name} |")
    return "\n".join(lines)


def shown(seconds: float | None, digits: int = 1) -> str:
    return "-" if seconds is None else f"{seconds:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "runs" / "test-profile"), help="where the profile is written")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist processes (0: one process)")
    parser.add_argument("--summarise", metavar="DIR", help="only print the tables of a profile taken before")
    args, pytest_args = parser.parse_known_args()
    if args.summarise:
        print(summarise(Path(args.summarise)))
        return 0
    meta = run(Path(args.out), args.workers, pytest_args)
    text = summarise(Path(args.out))
    (Path(args.out) / "profile.md").write_text(text + "\n")
    print(text)
    return meta["exit"]


if __name__ == "__main__":
    sys.exit(main())
