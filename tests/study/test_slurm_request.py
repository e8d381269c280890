"""What the submitit executor asks of Slurm before it submits (``slurm_request``), on captured outputs: each
request no node can ever meet, or that Slurm refuses, is one line naming its flag; the jobs carry the study's and
the run's names. The real cluster's refusals are in test_slurm_real.py."""

from __future__ import annotations

import pytest

from peftlab.study.executors.executors import ExecutorOptions
from peftlab.study.executors.slurm_request import (
    check_request,
    job_name,
    records,
    refusal,
    request_problem,
    slurm_parameters,
)
from peftlab.utils.errors import UserError

# `scontrol show partition --oneliner` and `scontrol show node --oneliner` of scripts/install-slurm.sh's
# single-node cluster (Slurm 22.05.8, a 2-CPU machine), as captured
PARTITIONS = (
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A "
    "DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED "
    "MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=vm PriorityJobFactor=1 PriorityTier=1 "
    "RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=2 TotalNodes=1 "
    "SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED "
    "TRES=cpu=2,mem=24105M,node=1,billing=2\n"
    "PartitionName=short AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL Default=NO MaxTime=01:00:00 "
    "MaxCPUsPerNode=1 Nodes=vm State=UP\n"
)
NODES = (
    "NodeName=vm Arch=x86_64 CoresPerSocket=2  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=4.26 AvailableFeatures=(null) "
    "ActiveFeatures=(null) Gres=(null) NodeAddr=vm NodeHostName=vm Version=22.05.8 OS=Linux 6.18.44-fc-v669 #1 SMP "
    "PREEMPT_DYNAMIC @0  RealMemory=24105 AllocMem=0 FreeMem=11984 Sockets=1 Boards=1 State=IDLE ThreadsPerCore=1 "
    "TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug,short  BootTime=2026-11-28T07:14:32 "
    "CfgTRES=cpu=2,mem=24105M,billing=2 AllocTRES= CapWatts=n/a\n"
)
# a GPU cluster in the same format: two kinds of node in one partition
GPU_PARTITIONS = "PartitionName=gpu Default=YES MaxTime=2-00:00:00 MaxCPUsPerNode=UNLIMITED Nodes=g[1-2] State=UP\n"
GPU_NODES = (
    "NodeName=g1 CPUTot=64 Gres=gpu:a100:4(S:0-1) RealMemory=512000 Partitions=gpu State=MIXED\n"
    "NodeName=g2 CPUTot=128 Gres=(null) RealMemory=1024000 Partitions=gpu State=IDLE\n"
)
# sbatch's last lines of its refusals (`allocation failure:` with --test-only), as Slurm words them (slurm_errno.c)
REFUSALS = {
    "allocation failure: Invalid partition name specified": "--slurm-partition=nosuch: Slurm refuses it: Invalid "
    "partition name specified",
    "allocation failure: Invalid account or account/partition combination specified": "--slurm-account=nosuch: "
    "Slurm refuses it: Invalid account or account/partition combination specified",
    "sbatch: error: Batch job submission failed: Invalid qos specification": "--slurm-qos=nosuch: Slurm refuses it: "
    "Invalid qos specification",
    "allocation failure: Requested node configuration is not available": "--slurm-cpus/--slurm-gpus/--slurm-mem: "
    "Slurm refuses the jobs: Requested node configuration is not available",
    "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size "
    "and/or time limits)": "--slurm-qos=nosuch: Slurm refuses it: Job violates accounting/QOS policy (job submit "
    "limit, user's size and/or time limits)",
    "allocation failure: Invalid feature specification": "--executor submitit: Slurm refuses the jobs: Invalid "
    "feature specification",
}


def options(**given) -> ExecutorOptions:
    return ExecutorOptions(name="submitit", **{"slurm_cpus": 1, **given})


def problem(partitions: str = PARTITIONS, nodes: str = NODES, **given) -> str | None:
    return request_problem(options(**given), records(partitions), records(nodes))


def test_scontrol_records_read_as_keys_and_values():
    (node,) = records(NODES)
    assert node["CPUEfctv"] == "2" and node["RealMemory"] == "24105" and node["Partitions"] == "debug,short"
    assert node["Gres"] == "(null)" and node["OS"] == "Linux"  # a value with spaces is cut, the fields after it kept
    assert [p["PartitionName"] for p in records(PARTITIONS)] == ["debug", "short"]


@pytest.mark.parametrize(
    "given,line",
    [
        ({"slurm_partition": "nosuch"}, "--slurm-partition=nosuch: Slurm has no such partition (it has: debug, short)"),
        (
            {"slurm_cpus": 64},
            "--slurm-cpus=64: no node of partition debug has 64 CPUs (the most: 2 CPUs): the jobs would wait for ever",
        ),
        (
            {"slurm_cpus": 2, "slurm_partition": "short", "slurm_time": 60},  # the partition's MaxCPUsPerNode
            "--slurm-cpus=2: no node of partition short has 2 CPUs (the most: 1 CPU): the jobs would wait for ever",
        ),
        (
            {"slurm_mem": 500},
            "--slurm-mem=500: no node of partition debug has 500 GB of memory (the most: 23.5 GB): the jobs would "
            "wait for ever",
        ),
        (
            {"slurm_gpus": 1},
            "--slurm-gpus=1: no node of partition debug has 1 GPU (the most: 0 GPUs): the jobs would wait for ever",
        ),
        (
            {"slurm_partition": "short", "slurm_time": 61},
            "--slurm-time=61: partition short allows at most 01:00:00 (60 minutes): the jobs would wait for ever",
        ),
        ({"slurm_cpus": 2, "slurm_mem": 23}, None),
        ({"slurm_partition": "short", "slurm_time": 60}, None),
    ],
)
def test_what_no_node_can_ever_give_is_one_line_naming_the_flag(given, line):
    assert problem(**given) == line


def test_gpus_are_counted_from_the_gres_and_must_come_with_the_cpus_on_one_node():
    assert problem(GPU_PARTITIONS, GPU_NODES, slurm_gpus=4, slurm_cpus=64, slurm_mem=500) is None
    assert problem(GPU_PARTITIONS, GPU_NODES, slurm_gpus=8) == (
        "--slurm-gpus=8: no node of partition gpu has 8 GPUs (the most: 4 GPUs): the jobs would wait for ever"
    )
    assert problem(GPU_PARTITIONS, GPU_NODES, slurm_gpus=1, slurm_cpus=100) == (  # g2 has the CPUs, g1 the GPUs
        "--slurm-cpus=100, --slurm-gpus=1, --slurm-mem=0: no node of partition gpu has all of them at once: the "
        "jobs would wait for ever"
    )
    assert problem(GPU_PARTITIONS, GPU_NODES, slurm_time=3000) == (
        "--slurm-time=3000: partition gpu allows at most 2-00:00:00 (2880 minutes): the jobs would wait for ever"
    )
    no_default = GPU_PARTITIONS.replace("Default=YES", "Default=NO")
    assert problem(no_default, GPU_NODES) == "--slurm-partition: Slurm has no default partition: name one of gpu"


@pytest.mark.parametrize("said,line", list(REFUSALS.items()))
def test_slurm_s_refusal_is_one_line_beside_its_flag(said, line):
    given = {"slurm_partition": "nosuch", "slurm_account": "nosuch", "slurm_qos": "nosuch"}
    if "partition" not in said:
        given.pop("slurm_partition")
    assert refusal(said, options(**given)) == line


def test_a_refusal_of_an_option_not_given_says_so():
    assert refusal("allocation failure: Invalid account or account/partition combination specified", options()) == (
        "--slurm-account (not given): Slurm refuses it: Invalid account or account/partition combination specified"
    )


def test_the_check_asks_scontrol_then_sbatch_test_only_with_the_jobs_options():
    asked = []

    def run(*args):
        asked.append(args)
        if args[0] == "scontrol":
            return (PARTITIONS if args[2] == "partition" else NODES), None
        return None, "allocation failure: Invalid qos specification"

    with pytest.raises(UserError, match=r"^--slurm-qos=high: Slurm refuses it: Invalid qos specification$"):
        check_request(options(slurm_qos="high", slurm_account="lab", slurm_mem=2, slurm_time=30), run)
    assert asked[-1] == (
        "sbatch",
        "--test-only",
        "--time=30",
        "--cpus-per-task=1",
        "--gpus-per-node=0",
        "--nodes=1",
        "--ntasks-per-node=1",
        "--account=lab",
        "--qos=high",
        "--mem=2GB",
        "--wrap=true",
    )
    asked.clear()
    with pytest.raises(UserError, match="^--slurm-cpus=8: no node"):
        check_request(options(slurm_cpus=8), run)
    assert [args[0] for args in asked] == ["scontrol", "scontrol"]  # refused before sbatch is asked


def test_a_controller_that_does_not_answer_is_left_to_the_submission():
    check_request(options(slurm_cpus=64), lambda *args: (None, f"{args[0]} did not answer in 10 s"))


def test_jobs_are_named_for_the_study_and_the_run():
    assert job_name("my study/v2", "e13b1f29c725") == "peftlab:my_study_v2:e13b1f29c725"
    assert job_name(None, "pretrain") == "peftlab:pretrain"
    assert slurm_parameters(options(study="s"))["job_name"] == "peftlab:s"
    assert slurm_parameters(options())["job_name"] == "peftlab"
