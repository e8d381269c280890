"""P6: a run's fixed cost, measured on the default study's kind of run.

The default study's first LoRA run (``configs/studies/default.yaml``; its arithmetic unpinned, as the
bench's process has imported torch) is trained in a worker forked
from the forkserver, as ``peftlab study`` trains every run (``worker.process_main``), each repetition
in a fresh worker. Its fixed cost is the worker's CPU seconds (user + system, ``getrusage``) less
those of its training steps and evaluation passes (val, test, the merged model's test), which grow
with the data and the steps; what is left is what every run pays. The recipe's stages are timed by
wrapping them in the worker (CPU seconds of the process, ``time.process_time``), so the figure is
split into: start (threads, logs, seed), data set-up (``load_data``), build (backbone, tuner,
pre-flight estimate), optimizer and restore, the loop's own work (logs, checkpoints), the merge
check, the adapter files, the rest of the finish (the merged copy, the record), and the run outside
the recipe (config, run directory, lock, result.json, the worker's set-up). The worker's start and
end are wall seconds seen from the study's process (a fork's CPU is the forkserver's), the
forkserver started before (its imports are paid once per study); the fixed cost in wall seconds is
the worker's time less that of its steps and passes, which the load on the machine inflates.
"""

from __future__ import annotations

import collections
import resource
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 2.0
RECIPE_STAGES = ("start", "load_data", "build", "optimization", "restore", "fit")


def default_lora_config(study_file: Path, quant: str = "none") -> tuple[dict, tuple[str, ...], str | None] | None:
    """The config of the default study's first LoRA run whose base is quantized as ``quant`` says, as a dict,
    what the study's forkserver preloads (``local.preload_for``: the compiler where a run is quantized) and the
    datasets it holds (``local.held_for``); None without the study, such a run or its base."""
    from peftlab.config.schema import to_dict
    from peftlab.study.executors.local import held_for, preload_for
    from peftlab.study.spec import load_study

    if not study_file.is_file():
        return None
    study = load_study(study_file)
    lora = [spec for spec in study.runs if spec.method == "lora" and spec.config.quant.mode == quant]
    if not lora or not Path(lora[0].config.model.pretrained).is_file():
        return None
    jobs = [(spec, Path()) for spec in study.runs]
    config = {**to_dict(lora[0].config), "variant": lora[0].variant}
    # the bench's process has imported torch: its forkserver cannot pin the arithmetic (utils.cpu)
    config["train"]["reproducible"] = False
    return config, preload_for(jobs), held_for(jobs)


def timed(module, name: str, cpu: collections.Counter, phase: str) -> None:
    """``module.name`` replaced by itself, adding its CPU seconds to ``cpu[phase]`` and its wall
    seconds to ``cpu[phase + " wall"]``."""
    inner = getattr(module, name)

    def wrapper(*args, **kwargs):
        start, wall = time.process_time(), time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            cpu[phase] += time.process_time() - start
            cpu[phase + " wall"] += time.perf_counter() - wall

    setattr(module, name, wrapper)


def worker(config: dict, run_dir: str, study_pid: int, started: float, queue) -> None:
    """A study's worker (``process_main``) with its phases timed; puts them on ``queue``."""
    from peftlab.study.executors.worker import process_main
    from peftlab.training import outcome, recipe

    entered = time.perf_counter()
    cpu: collections.Counter = collections.Counter()
    for stage in RECIPE_STAGES:
        timed(recipe, stage, cpu, stage)
    timed(recipe, "training_step", cpu, "training steps")
    timed(recipe, "evaluate", cpu, "evaluation in the loop")
    timed(recipe, "finish", cpu, "finish")
    for name, phase in (("evaluate", "evaluation at the end"), ("check_merge", "merge check")):
        timed(outcome, name, cpu, phase)
    timed(outcome, "write_adapter", cpu, "adapter files")
    process_main(config, run_dir, False, 1, study_pid)
    cpu["process wall"] = time.perf_counter() - entered
    usage = resource.getrusage(resource.RUSAGE_SELF)
    queue.put(
        {
            "cpu": dict(cpu),
            "process_cpu": usage.ru_utime + usage.ru_stime,
            "start_wall": entered - started,
            "max_rss_bytes": usage.ru_maxrss * 1024,
            "result": str(Path(run_dir) / "result.json"),
            "put_at": time.perf_counter(),
        }
    )


def phases(measured: dict) -> dict:
    """The fixed cost of one worker and its parts, in CPU seconds."""
    cpu, total = collections.Counter(measured["cpu"]), measured["process_cpu"]
    passes = cpu["training steps"] + cpu["evaluation in the loop"] + cpu["evaluation at the end"]
    recipe = sum(cpu[stage] for stage in RECIPE_STAGES) + cpu["finish"]
    parts = {
        "start": cpu["start"],
        "data set-up": cpu["load_data"],
        "build": cpu["build"],
        "optimizer and restore": cpu["optimization"] + cpu["restore"],
        "loop (logs, checkpoints)": cpu["fit"] - cpu["training steps"] - cpu["evaluation in the loop"],
        "merge check": cpu["merge check"],
        "adapter files": cpu["adapter files"],
        "finish (merged copy, record)": cpu["finish"]
        - cpu["evaluation at the end"]
        - cpu["merge check"]
        - cpu["adapter files"],
        "outside the recipe (worker, run directory, result.json)": total - recipe,
    }
    passes_wall = sum(
        cpu[f"{name} wall"] for name in ("training steps", "evaluation in the loop", "evaluation at the end")
    )
    return {
        "fixed_cpu_seconds": total - passes,
        "fixed_wall_seconds": cpu["process wall"] - passes_wall,
        "parts": parts,
        "training_steps_cpu_seconds": cpu["training steps"],
        "evaluation_cpu_seconds": cpu["evaluation in the loop"] + cpu["evaluation at the end"],
        "process_cpu_seconds": total,
    }


def run_fixed_cost(study_file: Path, repeats: int = 3, quant: str = "none") -> dict:
    """P6 over ``repeats`` fresh workers of the LoRA run quantized as ``quant`` says (``none``: the default
    study's LoRA run; ``nf4``: its QLoRA run): the medians and spreads, and the worker's start and end."""
    import json
    import os

    from peftlab.bench.common import spread  # not at the top: the worker imports this module, and no more
    from peftlab.study.executors.local import worker_context

    found = default_lora_config(study_file, quant)
    if found is None:
        return {"skipped": f"no default study with a LoRA run quant={quant} and its base at {study_file}"}
    config, preload, held = found
    variant = config.pop("variant")
    ctx = worker_context(preload=preload, held=held)  # as the study starts it (a server already running keeps its own)
    warm = ctx.Process(target=time.sleep, args=(0,))  # the forkserver's imports, once per study: not a run's
    warm.start()
    warm.join()
    measured = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="peftlab-p6-") as run_dir:
            queue = ctx.Queue()
            started = time.perf_counter()
            proc = ctx.Process(target=worker, args=(config, run_dir, os.getpid(), started, queue))
            proc.start()
            proc.join()
            returned = time.perf_counter()  # the worker's end: after its last put, as long as its exit
            if proc.exitcode != 0 or queue.empty():
                return {"skipped": f"the measured worker ended with exit code {proc.exitcode} and no figures"}
            one = queue.get()
            one["end_wall"] = returned - one.pop("put_at")
            result = json.loads(Path(one["result"]).read_text())
            one["timing"], one["status"] = result["timing"], result["status"]
            measured.append(one)
    figures = [phases(m) for m in measured]
    parts = {name: spread([f["parts"][name] for f in figures]) for name in figures[0]["parts"]}
    return {
        "run": {"method": "lora", "config": config["name"], "seed": config["seed"], "quant": quant, "variant": variant},
        "preload": list(preload),
        "status": [m["status"] for m in measured],
        "fixed_cpu_seconds": spread([f["fixed_cpu_seconds"] for f in figures]),
        "fixed_wall_seconds": spread([f["fixed_wall_seconds"] for f in figures]),
        "parts_cpu_seconds": parts,
        "training_steps_cpu_seconds": spread([f["training_steps_cpu_seconds"] for f in figures]),
        "evaluation_cpu_seconds": spread([f["evaluation_cpu_seconds"] for f in figures]),
        "process_cpu_seconds": spread([f["process_cpu_seconds"] for f in figures]),
        "worker_start_wall_seconds": spread([m["start_wall"] for m in measured]),
        "worker_end_wall_seconds": spread([m["end_wall"] for m in measured]),
        "run_wall_seconds": spread([m["timing"]["wall_seconds"] for m in measured]),
        "max_rss_bytes": spread([m["max_rss_bytes"] for m in measured]),
        "target_cpu_seconds": TARGET_SECONDS,
        "repeats": repeats,
    }
