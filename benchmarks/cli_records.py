"""CPU seconds of the inner-loop commands, before model records (a checkout of main) and with them, cold
(an empty record cache) and warm, interleaved: python benchmarks/cli_records.py BEFORE_SRC --json OUT.

``--changed``: each command again with another setting of the same model (LoRA's rank, its targets), on a
cache warm for the first setting only: what an edit of the study costs. BEFORE_SRC is then the code to
compare with (per-config records: 760b28e), and each measurement starts from a fresh copy of that cache.

Each command runs in a fresh process; its CPU seconds are the user + system time of that child
(resource.getrusage(RUSAGE_CHILDREN)), the minimum of ``--repeats``; every round runs every variant of
every command once, so a load that drifts reaches all of them alike. The load average is read at the start
and the end. Run it with bytecode caches written (``PYTHONDONTWRITEBYTECODE`` unset), as an installed
peftlab has them: otherwise every process compiles peftlab's modules again (about 0.06 CPU s of ``data info``).
"""

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "validate configs/vtab1k.yaml (LoRA, ViT-B/16)": ["validate", "configs/vtab1k.yaml"],
    "validate configs/downstream.yaml (LoRA, local weights)": ["validate", "configs/downstream.yaml"],
    "params vit_base_patch16_224 --method lora": ["params", "vit_base_patch16_224", "--method", "lora"],
    "study configs/studies/vtab1k.yaml --dry-run (19 tasks)": ["study", "configs/studies/vtab1k.yaml", "--dry-run"],
    "data info fashion_mnist": ["data", "info", "fashion_mnist"],
}


def changed_commands(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """(argv warm in the cache, argv with another setting) by name; the VTAB-1k study with LoRA at r=4."""
    study = (REPO / "configs/studies/vtab1k.yaml").read_text()
    study = study.replace("base: ../vtab1k.yaml", f"base: {REPO / 'configs/vtab1k.yaml'}")
    study = study.replace("  lora: {}", "  lora:\n    set: {method.r: 4}")
    (tmp / "vtab1k-r4.yaml").write_text(study)
    return {
        "params vit_base_patch16_224 --method lora --r 4 (warm: r 8)": (
            ["params", "vit_base_patch16_224", "--method", "lora"],
            ["params", "vit_base_patch16_224", "--method", "lora", "--r", "4"],
        ),
        "params vit_base_patch16_224 --method lora --targets all-linear (warm: standard)": (
            ["params", "vit_base_patch16_224", "--method", "lora"],
            ["params", "vit_base_patch16_224", "--method", "lora", "--targets", "all-linear"],
        ),
        "validate configs/vtab1k.yaml method.r=4 (warm: r 8)": (
            ["validate", "configs/vtab1k.yaml"],
            ["validate", "configs/vtab1k.yaml", "method.r=4"],
        ),
        "study vtab1k (LoRA r 4) --dry-run (warm: r 8)": (
            ["study", "configs/studies/vtab1k.yaml", "--dry-run", "--study-dir", str(tmp / "s")],
            ["study", str(tmp / "vtab1k-r4.yaml"), "--dry-run", "--study-dir", str(tmp / "s4")],
        ),
    }


def measure_changed(before_src: Path, repeats: int) -> dict:
    """Per command: the changed setting's CPU seconds with ``before_src`` and with this code, each on a fresh
    copy of its own cache warmed with the first setting."""
    times: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        commands = changed_commands(tmp)
        codes = {"before": before_src, "after": REPO / "src"}
        for code, src in codes.items():
            for warm, _ in commands.values():
                cpu_seconds(warm, src, tmp / f"warm-{code}")
        for _ in range(repeats):
            for name, (_, changed) in commands.items():
                for code, src in codes.items():
                    cache = tmp / f"copy-{code}"
                    shutil.rmtree(cache, ignore_errors=True)
                    shutil.copytree(tmp / f"warm-{code}", cache)
                    times.setdefault(name, {}).setdefault(code, []).append(cpu_seconds(changed, src, cache))
        return {"commands": {name: ["peftlab", *argv] for name, (_, argv) in commands.items()}, "times": times}


def cpu_seconds(argv: list[str], src: Path, cache: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "PEFTLAB_MODEL_CACHE": str(cache)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "peftlab.cli", *argv], cwd=REPO, env=env, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before_src", help="the src folder of the code before (a checkout of main)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--changed", action="store_true", help="another setting on a cache warm for the first")
    args = parser.parse_args()
    if args.changed:
        load_start = os.getloadavg()
        measured = measure_changed(Path(args.before_src), args.repeats)
        return report(
            {
                "what": "CPU seconds (user + sys of the child process), min of the repeats, interleaved: a command "
                "with another setting of the model's method, its record cache warm for the first setting; "
                "before: the code given (per-config records), after: this code (one structure record per model)",
                "commands": measured["commands"],
                **summary(measured["times"]),
                "load_average_start": load_start,
            },
            args.json,
        )
    after_src = REPO / "src"
    times: dict[str, dict[str, list[float]]] = {name: {"before": [], "cold": [], "warm": []} for name in COMMANDS}
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        warm_cache, cold_cache = Path(tmp) / "warm", Path(tmp) / "cold"
        for argv in COMMANDS.values():  # the warm cache filled once, outside the measurements
            cpu_seconds(argv, after_src, warm_cache)
        for _ in range(args.repeats):
            for name, argv in COMMANDS.items():
                times[name]["before"].append(cpu_seconds(argv, Path(args.before_src), Path(tmp) / "unused"))
                shutil.rmtree(cold_cache, ignore_errors=True)
                times[name]["cold"].append(cpu_seconds(argv, after_src, cold_cache))
                times[name]["warm"].append(cpu_seconds(argv, after_src, warm_cache))
    result = {
        "what": "CPU seconds (user + sys of the child process), min of the repeats, interleaved: the code "
        "before model records, with them cold (empty record cache) and warm",
        "commands": {name: {"argv": ["peftlab", *argv]} for name, argv in COMMANDS.items()},
        **summary(times),
        "load_average_start": load_start,
    }
    report(result, args.json)


def summary(times: dict[str, dict[str, list[float]]]) -> dict:
    return {
        "min_cpu_seconds": {name: {k: round(min(v), 2) for k, v in t.items()} for name, t in times.items()},
        "all_cpu_seconds": {name: {k: [round(x, 2) for x in v] for k, v in t.items()} for name, t in times.items()},
    }


def report(result: dict, path: str | None) -> None:
    """``result`` with the load at its end and the machine, written to ``path`` (before it is printed)."""
    result = {
        **result,
        "load_average_end": os.getloadavg(),
        "cpu": cpu_name(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    text = json.dumps(result, indent=2)
    if path:
        Path(path).write_text(text + "\n")
    print(text)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
                has = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f" {f}" in flags]
                return f"{line.split(':', 1)[1].strip()} ({', '.join(has)}), {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
