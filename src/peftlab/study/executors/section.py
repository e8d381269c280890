"""The ``executor:`` section of a study file: the cluster settings of its jobs, kept where the study lives.

    executor:
      slurm:                      # what --executor submitit asks Slurm for, each run a job
        partition: gpu
        account: proj42
        qos: normal
        time: "4:00:00"           # minutes, MM:SS, HH:MM:SS or D-HH[:MM[:SS]]
        cpus: 8
        gpus: 1
        mem: 32                   # GB
        constraint: a100          # sbatch --constraint: node features
        array_parallelism: 16
        sbatch: [--exclusive, --mail-type=END]   # any other sbatch option, one an item
      ray:                        # what --executor ray asks of its cluster, each run a task
        address: 10.0.0.1:6379
        cpus: 2
        gpus: 1
        resources: {a100: 1}      # Ray's custom resources per task

The command still chooses the executor (``--executor``): the same study runs on a laptop, where the section is not
read, and on a cluster. Of each setting, a flag on the command line wins over the study file, which wins over
the default (``ExecutorOptions``). A bad value is one ConfigError line naming ``executor.<part>.<key>``; what Slurm
or Ray would refuse is checked before any run, ``--dry-run`` too, and that line names the same key
(``option_name``) where the value came from the study file.
"""

from __future__ import annotations

import math
import re
from typing import Any

from peftlab.config.checks import shown
from peftlab.utils.errors import ConfigError, UserError

# the section's parts: which --executor reads each
PARTS = {"slurm": "submitit", "ray": "ray"}
# part -> key -> (ExecutorOptions' field, kind, least): kind name, count (an integer), number, time, sbatch, resources
KEYS = {
    "slurm": {
        "partition": ("slurm_partition", "name", None),
        "account": ("slurm_account", "name", None),
        "qos": ("slurm_qos", "name", None),
        "constraint": ("slurm_constraint", "text", None),
        "time": ("slurm_time", "time", 1),
        "cpus": ("slurm_cpus", "count", 1),
        "gpus": ("slurm_gpus", "count", 0),
        "mem": ("slurm_mem", "count", 1),
        "array_parallelism": ("slurm_array_parallelism", "count", 1),
        "lost_after": ("slurm_lost_after", "number", 1),
        "sbatch": ("slurm_sbatch", "sbatch", None),
    },
    "ray": {
        "address": ("ray_address", "name", None),
        "cpus": ("ray_cpus", "number", 0),
        "gpus": ("ray_gpus", "number", 0),
        "resources": ("ray_resources", "resources", None),
    },
}
SBATCH_OPTION = re.compile(r"--([a-z][a-z0-9-]*)(?:=(\S(?:[^\n\r]*\S)?))?")
# sbatch options peftlab sets itself (submitit's job script, the fields above): another value would break the jobs
# or hide a field's
OWN_SBATCH = {
    "array": "the study's job array",
    "job-name": "the job's name (peftlab:<study>:<run id>)",
    "output": "submitit's log files",
    "error": "submitit's log files",
    "open-mode": "submitit's log files",
    "signal": "the requeue signal",
    "wrap": "submitit's job script",
    "nodes": "one node a run",
    "ntasks-per-node": "one task a run",
    "ntasks": "one task a run",
    "dependency": "the study's own order",
    "partition": "executor.slurm.partition (--slurm-partition)",
    "time": "executor.slurm.time (--slurm-time)",
    "cpus-per-task": "executor.slurm.cpus (--slurm-cpus)",
    "gpus-per-node": "executor.slurm.gpus (--slurm-gpus)",
    "gres": "executor.slurm.gpus (--slurm-gpus)",
    "mem": "executor.slurm.mem (--slurm-mem)",
    "account": "executor.slurm.account (--slurm-account)",
    "qos": "executor.slurm.qos (--slurm-qos)",
    "constraint": "executor.slurm.constraint (--slurm-constraint)",
}
RESOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
RAY_OWN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def parse_minutes(text: str) -> int:
    """Slurm's --time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in minutes, seconds rounded up."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+(?::\d+){0,2})", text.strip())
    parts = [int(p) for p in match.group(2).split(":")] if match else []
    if not match or len(parts) > 3:
        raise UserError(f"--slurm-time={text!r} is invalid: expected minutes, MM:SS, HH:MM:SS or D-HH[:MM[:SS]]")
    if match.group(1) is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
        hours += 24 * int(match.group(1))
    else:
        hours, minutes, seconds = ([0, 0] + parts)[-3:] if len(parts) == 3 else (0, *(parts + [0])[:2])
    total = hours * 60 + minutes + (1 if seconds else 0)
    if total < 1:
        raise UserError(f"--slurm-time={text!r} is invalid: expected at least one minute")
    return total


def executor_section(data: Any, study: str) -> dict[str, dict[str, Any]]:
    """The study file's ``executor:`` section as ``{executor name: {ExecutorOptions field: value}}``; ``{}``
    without one. Each problem is one ConfigError line naming the key."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"study {study}: executor={shown(data)} is invalid: expected a mapping with slurm and/or ray")
    out: dict[str, dict[str, Any]] = {}
    for part, values in data.items():
        if part not in PARTS:
            raise ConfigError(f"study {study}: unknown key 'executor.{part}'; allowed: {', '.join(PARTS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"study {study}: executor.{part}={shown(values)} is invalid: expected a mapping")
        fields = out.setdefault(PARTS[part], {})
        for key, value in values.items():
            if key not in KEYS[part]:
                raise ConfigError(
                    f"study {study}: unknown key 'executor.{part}.{key}'; allowed: {', '.join(KEYS[part])}"
                )
            field, kind, least = KEYS[part][key]
            try:
                fields[field] = checked(value, kind, least)
            except ValueError as err:
                raise ConfigError(f"study {study}: executor.{part}.{key}={shown(value)} is invalid: {err}") from None
    return out


def checked(value: Any, kind: str, least: float | None) -> Any:
    """``value`` as ExecutorOptions holds a ``kind`` of setting; a ValueError saying what was expected."""
    if kind in ("name", "text"):
        if not isinstance(value, str) or not value or not value.isprintable() or value.startswith("-"):
            raise ValueError("expected a non-empty line of text")
        if kind == "name" and any(c.isspace() for c in value):
            raise ValueError("expected a name without spaces")
        return value
    if kind == "time":
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        if isinstance(value, str):
            try:
                return parse_minutes(value)
            except UserError:
                pass
        raise ValueError("expected minutes, MM:SS, HH:MM:SS or D-HH[:MM[:SS]]")
    if kind in ("count", "number"):
        number = isinstance(value, int) or (kind == "number" and isinstance(value, float))
        if isinstance(value, bool) or not number or not math.isfinite(value) or value < least:
            raise ValueError(f"expected {'an integer' if kind == 'count' else 'a number'} >= {least}")
        return value
    if kind == "sbatch":
        if not isinstance(value, list):
            raise ValueError("expected a list of sbatch options (--name or --name=value)")
        return tuple(sbatch_option(item) for item in value)
    return resources(value)


def sbatch_option(item: Any) -> str:
    """One extra sbatch option, ``--name`` or ``--name=value`` on one line, not one peftlab sets itself."""
    match = SBATCH_OPTION.fullmatch(item) if isinstance(item, str) else None
    if match is None:
        raise ValueError(f"{shown(item)} is not one sbatch option: expected --name or --name=value on one line")
    if match.group(1) in OWN_SBATCH:
        raise ValueError(f"--{match.group(1)} is peftlab's own: {OWN_SBATCH[match.group(1)]}")
    return item


def resources(value: Any) -> dict[str, float]:
    """Ray's custom resources per task: ``{name: amount >= 0}``, not CPU, GPU or memory (their own keys)."""
    if not isinstance(value, dict) or not value:
        raise ValueError("expected a mapping of Ray resource names to amounts")
    for name, amount in value.items():
        if not isinstance(name, str) or not RESOURCE_NAME.fullmatch(name) or name in RAY_OWN_RESOURCES:
            raise ValueError(f"{shown(name)} is not a custom resource name (CPU and GPU are cpus and gpus)")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount < 0:
            raise ValueError(f"{name}={shown(amount)}: expected an amount >= 0")
    return dict(value)


def option_name(options, field: str) -> str:
    """How a line names an ExecutorOptions field: ``executor.slurm.cpus`` where the study file gave its value,
    else its flag, ``--slurm-cpus``."""
    if field in getattr(options, "from_study", ()):
        part = next(p for p, keys in KEYS.items() if any(f == field for f, _, _ in keys.values()))
        return f"executor.{part}.{next(k for k, (f, _, _) in KEYS[part].items() if f == field)}"
    return "--" + field.replace("_", "-")
