"""train.reproducible: MKL, oneDNN and ATen pinned to their AVX2 code before torch is imported, so one
seed gives the same numbers on the project's AVX2 and AVX-512 CPUs; recorded in provenance, not in the
run id."""

import os
import subprocess
import sys

import pytest
from testkit import REPO

from peftlab.config.schema import config_hash, load_config
from peftlab.utils import cpu
from peftlab.utils.errors import ConfigError

ENV = {**{k: v for k, v in os.environ.items() if k not in cpu.PINNED}, "PYTHONPATH": str(REPO / "src")}
x86 = pytest.mark.skipif(not cpu.applies(), reason="the switches exist for x86-64 CPUs only")


@x86
def test_pinning_before_torch_makes_aten_dispatch_avx2_code():
    script = (
        "from peftlab.utils.cpu import pin_arithmetic, arithmetic_pinned; pin_arithmetic(); import torch; "
        "print(torch.backends.cpu.get_cpu_capability(), arithmetic_pinned())"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["AVX2", "True"]


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
    script = (
        "import torch; from peftlab.utils.provenance import mkl_branch; branch = mkl_branch(); "
        "torch.ones(64, 64) @ torch.ones(64, 64); print(branch)"
    )
    for env, expected in ((ENV, {"OFF"}), ({**ENV, **cpu.PINNED}, {"COMPATIBLE,STRICT"})):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] in expected and "MKL_VERBOSE" not in proc.stdout


@x86
def test_mkl_s_own_record_of_its_branch_is_what_its_verbose_line_says_without_its_clock_spin():
    """``mkl_branch`` reads MKL's record (``mkl_serv_cbwr_get``); its verbose line, the older reading, prints the
    same record but first spins on the CPU's clock until the next second: the same answer on this CPU under each
    switch the pin, the former pin and the benches use (an AMD CPU keeps AUTO for AVX2: the same there too)."""
    script = (
        "import time, torch; from peftlab.utils import provenance as p; c = time.process_time(); "
        "fast = p.mkl_branch(); spent = time.process_time() - c; print(fast, p.verbose_mkl_branch(), spent < 0.1)"
    )
    for branch in (None, "COMPATIBLE,STRICT", "AVX2,STRICT", "AVX,STRICT", "AVX2", "AUTO"):
        env = {**ENV, **cpu.PINNED, "MKL_CBWR": branch} if branch else ENV
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        fast, verbose, quick = proc.stdout.split()
        assert fast == verbose and quick == "True", (branch, proc.stdout)


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
