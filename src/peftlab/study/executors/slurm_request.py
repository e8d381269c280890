"""What the submitit executor asks Slurm for, and whether Slurm can ever give it, asked before anything is submitted.

``slurm_parameters`` turns the ``--slurm-*`` options into submitit's names for sbatch's options. sbatch accepts
a job that no node of its partition can ever run (more CPUs, memory or GPUs than any node has, a time limit
above the partition's): Slurm holds it PENDING for good (reason ``PartitionConfig``, ``PartitionTimeLimit``) and
nothing tells the user. ``check_request`` therefore reads the partitions and the nodes
(``scontrol show partition|node --oneliner``) and compares them with the request, each shortfall one line naming
its flag; then ``sbatch --test-only`` with the same options lets Slurm itself refuse what only it knows (an
account or QOS it does not allow, a partition it has not), its message put in one line beside the flag it
concerns (``refusal``). The same words serve when sbatch refuses the real submission. Both read only what
Slurm's commands print: the tests give them captured outputs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from peftlab.study.executors.section import option_name, parse_minutes
from peftlab.utils.errors import UserError

# run(*args) -> (stdout, None) or (None, why): ``slurm.slurm_command``, which time-limits Slurm's commands
Command = Callable[..., tuple[str | None, str | None]]
FIELD = re.compile(r"(?:^|\s)([A-Za-z]+)=(\S*)")  # scontrol's Key=Value; a value with spaces (OS=Linux 6.1 #1) is cut
GPUS = re.compile(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)")  # gres gpu:4, gpu:a100:4(S:0-1); a count per type
SBATCH_FLAGS = {  # slurm_parameters' keys that sbatch --test-only is given (its flags: the keys with dashes)
    "partition",
    "account",
    "qos",
    "time",
    "cpus_per_task",
    "gpus_per_node",
    "mem",
    "nodes",
    "ntasks_per_node",
    "constraint",
}
# words of Slurm's refusals -> the option they are about (ExecutorOptions' field), first match wins ("Invalid account
# or account/partition combination": the account; "Job violates accounting/QOS policy": the QOS)
REFUSED = (
    ("qos", "slurm_qos"),
    ("account", "slurm_account"),
    ("feature", "slurm_constraint"),
    ("constraint", "slurm_constraint"),
    ("partition", "slurm_partition"),
    ("time limit", "slurm_time"),
    ("gres", "slurm_gpus"),
    ("generic resource", "slurm_gpus"),
    ("memory", "slurm_mem"),
    ("cpu", "slurm_cpus"),
)


def job_name(*parts: str | None) -> str:
    """``peftlab:<study>:<run id>`` (parts that are None or empty left out), as Slurm's queue shows a job:
    characters other than letters, digits and ``._+-`` become ``_`` (submitit writes the name into the job's
    script)."""
    return ":".join(["peftlab", *(re.sub(r"[^A-Za-z0-9._+-]", "_", part)[:100] for part in parts if part)])


def slurm_parameters(options) -> dict:
    """SlurmExecutor's parameters (its names for sbatch's options) for the ``--slurm-*`` options."""
    params = {
        "job_name": job_name(options.study),  # a job array's; each of its tasks is then named for its run
        "time": options.slurm_time,
        "cpus_per_task": options.slurm_cpus,
        "gpus_per_node": options.slurm_gpus or 0,
        "nodes": 1,
        "ntasks_per_node": 1,
    }
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(options, f"slurm_{key}") is not None:
            params[key] = getattr(options, f"slurm_{key}")
    if options.slurm_mem is not None:
        params["mem"] = f"{options.slurm_mem}GB"
    if options.slurm_array_parallelism is not None:
        params["array_parallelism"] = options.slurm_array_parallelism
    if options.slurm_sbatch:  # --name[=value] each (section.sbatch_option): submitit writes them as given
        params["additional_parameters"] = dict(sbatch_pair(option) for option in options.slurm_sbatch)
    return params


def sbatch_pair(option: str) -> tuple[str, str | bool]:
    """``--mail-type=END`` as ``("mail-type", "END")``, ``--exclusive`` as ``("exclusive", True)`` (submitit's
    ``additional_parameters``)."""
    name, equals, value = option.removeprefix("--").partition("=")
    return name, value if equals else True


def records(text: str) -> list[dict[str, str]]:
    """``scontrol show ... --oneliner``'s records, one a line, as ``{Key: Value}``."""
    return [dict(FIELD.findall(line)) for line in text.splitlines() if "=" in line]


def flag(options, field: str) -> str:
    """``--slurm-cpus=64``, ``executor.slurm.cpus=64`` (from the study file), or ``--slurm-account (not given)``."""
    name = option_name(options, field)
    value = getattr(options, field)
    return f"{name} (not given)" if value is None else f"{name}={value}"


def check_request(options, run: Command) -> None:
    """A UserError line when Slurm could never start the jobs ``options`` ask for (``request_problem``), or
    refuses them (``sbatch --test-only``); nothing when its commands do not answer (the submission says why)."""
    partitions, _ = run("scontrol", "show", "partition", "--oneliner")
    nodes, _ = run("scontrol", "show", "node", "--oneliner")
    if partitions is not None and nodes is not None:
        problem = request_problem(options, records(partitions), records(nodes))
        if problem is not None:
            raise UserError(problem)
    params = slurm_parameters(options)
    args = [f"--{key.replace('_', '-')}={value}" for key, value in params.items() if key in SBATCH_FLAGS]
    _, why = run("sbatch", "--test-only", *args, *options.slurm_sbatch, "--wrap=true")
    if why is not None and "did not answer" not in why:
        raise UserError(refusal(why, options))


def request_problem(options, partitions: list[dict], nodes: list[dict]) -> str | None:
    """What no node of the jobs' partition can ever give them, in one line naming the flag; None when some node
    can (scontrol's records: ``records``)."""
    names = ", ".join(p.get("PartitionName", "?") for p in partitions)
    if options.slurm_partition is not None:
        partition = next((p for p in partitions if p.get("PartitionName") == options.slurm_partition), None)
        if partition is None:
            return f"{flag(options, 'slurm_partition')}: Slurm has no such partition (it has: {names})"
    else:
        partition = next((p for p in partitions if p.get("Default") == "YES"), None)
        if partition is None:
            return f"--slurm-partition: Slurm has no default partition: name one of {names}"
    name = partition.get("PartitionName", "?")
    if options.slurm_time > (longest := max_minutes(partition.get("MaxTime", "UNLIMITED"))):
        return (
            f"{flag(options, 'slurm_time')}: partition {name} allows at most {partition['MaxTime']} "
            f"({longest} minutes): the jobs would wait for ever"
        )
    offers = [node_offer(node, partition) for node in nodes if name in node.get("Partitions", "").split(",")]
    if not offers:
        return f"{flag(options, 'slurm_partition')}: partition {name} has no nodes"
    want = {
        "slurm_cpus": options.slurm_cpus,
        "slurm_gpus": options.slurm_gpus or 0,
        "slurm_mem": options.slurm_mem or 0,
    }
    for field in want:
        most = max(offer[field] for offer in offers)
        if want[field] > most:
            return (
                f"{flag(options, field)}: no node of partition {name} has {amount(field, want[field])} "
                f"(the most: {amount(field, most).removesuffix(' of memory')}): the jobs would wait for ever"
            )
    if not any(all(offer[field] >= value for field, value in want.items()) for offer in offers):
        asked = ", ".join(f"{option_name(options, field)}={value}" for field, value in want.items())
        return f"{asked}: no node of partition {name} has all of them at once: the jobs would wait for ever"
    return None


def amount(field: str, value: float) -> str:
    """``64 CPUs``, ``1 GPU``, ``23.5 GB of memory``."""
    if field == "slurm_mem":
        return f"{value:g} GB of memory" if value == int(value) else f"{value:.1f} GB of memory"
    unit = "CPU" if field == "slurm_cpus" else "GPU"
    return f"{value:g} {unit}{'' if value == 1 else 's'}"


def max_minutes(text: str) -> float:
    """A partition's MaxTime (``UNLIMITED``, ``1-00:00:00``, ``30:00``) in minutes; infinite where there is none."""
    try:
        return parse_minutes(text)
    except UserError:  # UNLIMITED, INFINITE, NONE
        return math.inf


def node_offer(node: dict, partition: dict) -> dict[str, float]:
    """The most one job gets on ``node`` in ``partition``: CPUs, GPUs (its gres), memory in GB."""
    cpus = number(node.get("CPUEfctv") or node.get("CPUTot"))
    memory = number(node.get("RealMemory"))  # MB, as sbatch's --mem counts them (a GB is 1024)
    cpus = min(cpus, number(partition.get("MaxCPUsPerNode"), cpus))
    memory = min(memory, number(partition.get("MaxMemPerNode"), memory))
    gpus = sum(int(count) for count in GPUS.findall(node.get("Gres", "")))
    return {"slurm_cpus": cpus, "slurm_gpus": gpus, "slurm_mem": memory / 1024}


def number(text: str | None, otherwise: int = 0) -> int:
    return int(text) if text and text.isdigit() else otherwise


def refusal(message: str, options) -> str:
    """Slurm's refusal of the jobs (sbatch's last line, its prefixes cut) in one line beside the flag it concerns."""
    why = re.sub(r"^(sbatch: error: |allocation failure: |Batch job submission failed: )+", "", message.strip())
    lowered = why.lower()
    field = next((field for word, field in REFUSED if word in lowered), None)
    if field == "slurm_constraint" and options.slurm_constraint is None:  # features asked in the extra sbatch lines
        field = None
    if field is None and "node configuration" in lowered:
        return f"--slurm-cpus/--slurm-gpus/--slurm-mem: Slurm refuses the jobs: {why}"
    if field is None and options.slurm_sbatch:  # an option of the extra sbatch lines, most likely
        return f"{option_name(options, 'slurm_sbatch')}={' '.join(options.slurm_sbatch)}: Slurm refuses the jobs: {why}"
    if field is None:
        return f"--executor submitit: Slurm refuses the jobs: {why}"
    return f"{flag(options, field)}: Slurm refuses it: {why}"
