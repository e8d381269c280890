"""train.reproducible: MKL, oneDNN and ATen pinned to their AVX2 code before torch is imported, so one
seed gives the same numbers on the project's AVX2 and AVX-512 CPUs; recorded in provenance, not in the
run id."""

import os
import subprocess
import sys
from functools import cache

import pytest
from testkit import REPO

from peftlab.config.schema import config_hash, load_config
from peftlab.utils import cpu
from peftlab.utils.errors import ConfigError

ENV = {**{k: v for k, v in os.environ.items() if k not in cpu.PINNED}, "PYTHONPATH": str(REPO / "src")}
x86 = pytest.mark.skipif(not cpu.applies(), reason="the switches exist for x86-64 CPUs only")


# One process per MKL_CBWR switch the pin, the former pin and the benches use (None: unpinned), each read by every
# test below that asks about it: MKL's branch from its record (timed: the first call, before any matmul), a matmul
# (no verbose line may follow on stdout), then the branch its verbose line says, and ATen's capability. "pin" is the
# pin as ``pin_arithmetic`` sets it in a process started without it, before torch is imported.
BRANCH_SCRIPT = """
import sys, time
if sys.argv[1] == "pin":
    from peftlab.utils.cpu import pin_arithmetic
    pin_arithmetic()
import torch
from peftlab.utils import provenance as p
from peftlab.utils.cpu import arithmetic_pinned
c = time.process_time(); fast = p.mkl_branch(); spent = time.process_time() - c
torch.ones(64, 64) @ torch.ones(64, 64)
print(fast, p.verbose_mkl_branch(), spent < 0.1, torch.backends.cpu.get_cpu_capability(), arithmetic_pinned())
"""
BRANCHES = (None, "pin", "AVX2,STRICT", "AVX,STRICT", "AVX2", "AUTO")


@cache
def branch_process(branch: str | None) -> str:
    """The stdout of ``BRANCH_SCRIPT`` in a process started under ``branch`` (``BRANCHES``)."""
    env = {**ENV, **cpu.PINNED, "MKL_CBWR": branch} if branch not in (None, "pin") else ENV
    proc = subprocess.run(
        [sys.executable, "-c", BRANCH_SCRIPT, str(branch)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@x86
def test_pinning_before_torch_makes_aten_dispatch_avx2_code():
    assert branch_process("pin").split()[3:] == ["AVX2", "True"]
    assert branch_process(None).split()[4] == "False"  # started without the switches, nothing set them


@x86
def test_a_process_whose_torch_runs_unpinned_refuses_in_one_line(monkeypatch):
    import torch  # noqa: F401 - torch is imported: too late to pin

    for name in cpu.PINNED:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="train.reproducible=true needs the CPU arithmetic pinned") as err:
        cpu.pin_arithmetic()
    assert "\n" not in str(err.value) and "train.reproducible=false" in str(err.value)


def test_a_pinned_cpu_run_takes_the_fused_adamw_and_an_unpinned_one_keeps_the_single_tensor_one():
    import torch

    from peftlab.training.runtime import fused_adamw

    cpu_device, cuda = torch.device("cpu"), torch.device("cuda")
    assert fused_adamw(None, cpu_device, reproducible=True) is True  # its sqrt is exactly rounded on any CPU
    assert fused_adamw(None, cpu_device) is False and fused_adamw(None, cuda) is True
    assert fused_adamw(True, cpu_device) is True and fused_adamw(False, cuda, reproducible=True) is False


def test_a_reproducible_run_refuses_the_unfused_adamw_in_one_line():
    with pytest.raises(ConfigError, match="train.fused_adamw") as err:
        load_config(overrides={"train": {"reproducible": True, "fused_adamw": False}})
    assert "\n" not in str(err.value) and "train.reproducible" in str(err.value)
    assert load_config(overrides={"train": {"reproducible": True, "fused_adamw": True}}).train.fused_adamw is True


@x86
def test_provenance_reads_the_branch_mkl_computes_in_and_leaves_stdout_alone():
    for branch, expected in ((None, {"OFF"}), ("pin", {"COMPATIBLE,STRICT"})):
        out = branch_process(branch)
        assert out.count("\n") == 1 and out.split()[0] in expected and "MKL_VERBOSE" not in out, out


@x86
def test_mkl_s_own_record_of_its_branch_is_what_its_verbose_line_says_without_its_clock_spin():
    """``mkl_branch`` reads MKL's record (``mkl_serv_cbwr_get``); its verbose line, the older reading, prints the
    same record but first spins on the CPU's clock until the next second: the same answer on this CPU under each
    switch the pin, the former pin and the benches use (an AMD CPU keeps AUTO for AVX2: the same there too)."""
    for branch in BRANCHES:
        fast, verbose, quick = branch_process(branch).split()[:3]
        assert fast == verbose and quick == "True", (branch, fast, verbose, quick)


def test_reproducible_is_not_part_of_the_run_id():
    assert config_hash(load_config(overrides={"train": {"reproducible": True}})) == config_hash(load_config())


@x86
def test_the_record_asks_the_libraries_not_the_environment(monkeypatch):
    for name, value in cpu.PINNED.items():
        monkeypatch.setenv(name, value)
    assert cpu.reported_pinned("COMPATIBLE,STRICT", "AVX2")
    assert not cpu.reported_pinned("OFF", "AVX2")  # MKL read its switch before it was set
    # the former pin's branches: an Intel and an AMD CPU part at a biased Linear's GEMM there (benchmarks/step_probe.py)
    assert not cpu.reported_pinned("AUTO,STRICT", "AVX2") and not cpu.reported_pinned("AVX2,STRICT", "AVX2")
    assert not cpu.reported_pinned("COMPATIBLE,STRICT", "AVX512")  # ATen chose its code when torch was imported
    assert cpu.arithmetic_record(True, None, "COMPATIBLE,STRICT", "AVX2")["pinned"] is True
    assert cpu.arithmetic_record(True, None, "OFF", "AVX2")["pinned"] is False


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 2
flags\t\t: fpu avx2 fma

processor\t: 1
model name\t: another
"""


def test_the_record_names_the_cpu_s_family_model_and_stepping(tmp_path):
    """A VM's model name can hide the generation ("AMD EPYC"): the record keeps /proc/cpuinfo's numbers beside it,
    the first processor's, and None where there are none (macOS, an ARM Linux)."""
    from peftlab.utils import provenance

    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    fields = provenance.cpuinfo(path)
    assert fields["model name"] == "AMD EPYC" and fields["model"] == "1" and fields["flags"] == "fpu avx2 fma"
    assert provenance.cpu_generation(fields) == "family 23 model 1 stepping 2"
    assert provenance.cpu_generation({"model name": "Apple M2"}) is None
    assert provenance.cpuinfo(tmp_path / "absent") == {}
    here = provenance.cpuinfo()
    if "cpu family" in here:  # x86 Linux: this machine's own numbers in a run's record
        numbers = f"family {here['cpu family']} model {here['model']} stepping {here['stepping']}"
        assert provenance.hardware("cpu")["cpu_generation"] == numbers
