"""The study file's ``executor:`` section (``study.executors.section``): read into each executor's options, the
command's flags over it, each bad value one line naming its key, and what the cluster refuses of it named as the
study file names it. Slurm's answers are captured outputs (test_slurm_request.py's); no job is submitted."""

from __future__ import annotations

import contextlib
import io
import signal
import socket

import pytest
import yaml
from test_slurm_request import NODES, PARTITIONS
from test_study_preflight import BASE, study

from peftlab import cli
from peftlab.study.executors import ray_address, slurm
from peftlab.study.executors.executors import ExecutorOptions
from peftlab.study.spec import load_study
from peftlab.utils.errors import ConfigError, UserError

SECTION = {
    "slurm": {
        "partition": "debug",
        "time": "1:30:00",
        "cpus": 64,
        "gpus": 1,
        "mem": 2,
        "account": "proj42",
        "qos": "normal",
        "constraint": "a100&nvlink",
        "sbatch": ["--exclusive", "--mail-type=END"],
    },
    "ray": {"address": "10.0.0.1:6379", "cpus": 2, "gpus": 0.5, "resources": {"a100": 1}},
}


def write_study(tmp_path, section) -> str:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    path = tmp_path / "study.yaml"
    data = {"name": "s", "base": "base.yaml", "seeds": 1, "methods": {"lora": {}}, "executor": section}
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_the_section_gives_each_executor_its_options(tmp_path):
    executor = load_study(write_study(tmp_path, SECTION)).executor
    assert executor == {
        "submitit": {
            "slurm_partition": "debug",
            "slurm_time": 90,
            "slurm_cpus": 64,
            "slurm_gpus": 1,
            "slurm_mem": 2,
            "slurm_account": "proj42",
            "slurm_qos": "normal",
            "slurm_constraint": "a100&nvlink",
            "slurm_sbatch": ("--exclusive", "--mail-type=END"),
        },
        "ray": {"ray_address": "10.0.0.1:6379", "ray_cpus": 2, "ray_gpus": 0.5, "ray_resources": {"a100": 1}},
    }
    ExecutorOptions(name="submitit", **executor["submitit"])  # every value is one the options take
    ExecutorOptions(name="ray", **executor["ray"])


@pytest.mark.parametrize(
    "section, needle",
    [
        ({"slurm": {"cpu": 2}}, "unknown key 'executor.slurm.cpu'; allowed: partition,"),
        ({"local": {}}, "unknown key 'executor.local'; allowed: slurm, ray"),
        ({"slurm": {"cpus": 0}}, "executor.slurm.cpus=0 is invalid: expected an integer >= 1"),
        ({"slurm": {"gpus": 1.5}}, "executor.slurm.gpus=1.5 is invalid: expected an integer >= 0"),
        ({"slurm": {"mem": True}}, "executor.slurm.mem=True is invalid"),
        ({"slurm": {"time": "soon"}}, "executor.slurm.time='soon' is invalid: expected minutes, MM:SS"),
        ({"slurm": {"partition": "a b"}}, "executor.slurm.partition='a b' is invalid: expected a name without"),
        ({"slurm": {"sbatch": "--exclusive"}}, "executor.slurm.sbatch='--exclusive' is invalid: expected a list"),
        ({"slurm": {"sbatch": ["--time=5"]}}, "--time is peftlab's own: executor.slurm.time (--slurm-time)"),
        ({"slurm": {"sbatch": ["--x=1\n#SBATCH --y"]}}, "is not one sbatch option"),
        ({"slurm": {"sbatch": ["exclusive"]}}, "is not one sbatch option"),
        ({"ray": {"cpus": -1}}, "executor.ray.cpus=-1 is invalid: expected a number >= 0"),
        ({"ray": {"resources": {"GPU": 1}}}, "'GPU' is not a custom resource name"),
        ({"ray": {"resources": {"a100": -1}}}, "a100=-1: expected an amount >= 0"),
        ([1], "executor=[1] is invalid: expected a mapping"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_key(tmp_path, section, needle):
    with pytest.raises(ConfigError) as err:
        load_study(write_study(tmp_path, section))
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.fixture
def fake_slurm(monkeypatch) -> list[tuple[str, ...]]:
    """Slurm's commands answered from test_slurm_request.py's captured cluster (2 CPUs, no GPU); what was asked."""
    asked: list[tuple[str, ...]] = []

    def command(*args):
        asked.append(args)
        if args[:3] == ("scontrol", "show", "partition"):
            return PARTITIONS, None
        return (NODES, None) if args[0] == "scontrol" else ("", None)

    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm, "slurm_command", command)
    return asked


def test_flags_override_the_file_and_a_refusal_names_where_its_value_came_from(tmp_path, fake_slurm):
    section = {"slurm": {**SECTION["slurm"], "gpus": 0, "account": None}}
    del section["slurm"]["account"]
    path, out = write_study(tmp_path, section), tmp_path / "out"
    status, said = study(path, out, "--dry-run", "--executor", "submitit")
    assert status == 2 and said.count("\n") == 1, said
    assert "executor.slurm.cpus=64: no node of partition debug has 64 CPUs (the most: 2 CPUs)" in said
    status, said = study(path, out, "--dry-run", "--executor", "submitit", "--slurm-cpus", "65")
    assert status == 2 and "--slurm-cpus=65: no node of partition debug" in said, said
    fake_slurm.clear()
    status, said = study(path, out, "--dry-run", "--executor", "submitit", "--slurm-cpus", "1", "--slurm-sbatch=--x")
    assert status == 0, said
    test_only = next(args for args in fake_slurm if args[0] == "sbatch")
    for option in ("--cpus-per-task=1", "--constraint=a100&nvlink", "--time=90", "--partition=debug", "--x"):
        assert option in test_only, test_only
    assert "--exclusive" not in test_only  # --slurm-sbatch replaces the file's list
    printed, previous = io.StringIO(), signal.getsignal(signal.SIGTERM)
    with contextlib.redirect_stdout(printed):  # the dry run says what --detach would submit, and submits nothing
        args = ["study", path, "--study-dir", str(out), "--dry-run", "--executor", "submitit", "--slurm-cpus", "1"]
        assert cli.run_command([*args, "--detach", "--quiet"]) == 0
    signal.signal(signal.SIGTERM, previous)
    assert "--detach: each batch above would go to Slurm as a job array" in printed.getvalue(), printed.getvalue()
    assert "nothing was submitted" in printed.getvalue() and not (out / "slurm").exists()
    status, said = study(path, out, "--dry-run", "--executor", "local")
    assert status == 0, said  # the section of another executor is not read


def test_the_jobs_sbatch_script_carries_the_section(tmp_path):
    pytest.importorskip("submitit")
    settings = load_study(write_study(tmp_path, SECTION)).executor["submitit"]
    options = ExecutorOptions(name="submitit", folder=str(tmp_path / "slurm"), **settings)
    script = slurm.make_executor(options)._make_submission_file_text("python -m x", "uid")
    for line in (
        "--constraint='a100&nvlink'",
        "--exclusive",
        "--mail-type=END",
        "--account=proj42",
        "--qos=normal",
        "--gpus-per-node=1",
        "--cpus-per-task=64",
        "--mem=2GB",
        "--time=90",
    ):
        assert f"#SBATCH {line}\n" in script, (line, script)


def test_a_ray_address_from_the_file_is_named_as_the_file_names_it(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = ExecutorOptions(name="ray", ray_address=f"127.0.0.1:{port}", from_study=frozenset({"ray_address"}))
    with pytest.raises(UserError) as err:
        ray_address.check_address(options)
    assert str(err.value).startswith(f"executor.ray.address=127.0.0.1:{port}: nothing answers there"), err.value
