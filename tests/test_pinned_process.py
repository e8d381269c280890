"""The pin in any process (training/run.py's train_in_pinned_process, utils/cpu.py): where torch already runs
unpinned (a kernel whose first cell imported torch and timm), ``peftlab.train`` trains a reproducible run in a child
process started with the pin and gets ``peftlab train``'s weights bit for bit; switches set after torch ran are no
pin, and no record says ``pinned: true`` of a process whose MKL and ATen do not report it. The API is called in the
test's process, whose torch runs unpinned as such a kernel's does; ``peftlab train`` runs in a process of its own."""

import json
import os

import pytest
import yaml
from testkit import REPO, needs_fashion_mnist, run_cli, write_fashion_sample, write_tiny_run

from peftlab.utils import cpu
from peftlab.utils.errors import ConfigError

ENV = {**{k: v for k, v in os.environ.items() if k not in cpu.PINNED}, "PYTHONPATH": str(REPO / "src")}

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not cpu.applies(), reason="the switches exist for x86-64 CPUs only"),
    needs_fashion_mnist(),
]


@pytest.fixture
def torch_first():
    """This test's process as a notebook's kernel whose first cell imported torch and timm: torch runs unpinned here
    (its MKL has run: it read MKL_CBWR, absent, once), and oneDNN has chosen its kernels, so that a switch the test
    sets afterwards reaches neither for the rest of this process."""
    import timm  # noqa: F401 - the notebook's first cell
    import torch

    for name in cpu.PINNED:
        assert name not in os.environ, name  # a process started with the pin is no notebook's kernel
    torch.ones(8, 8) @ torch.ones(8, 8)
    torch.ops.mkldnn._linear_pointwise(torch.ones(2, 8), torch.ones(4, 8), None, "none", [], "")
    assert cpu.torch_runs_unpinned()


def test_a_torch_first_process_trains_a_pinned_run_with_the_commands_weights(tmp_path, monkeypatch, torch_first):
    """The API's run is a dict config whose data root is relative (the working folder's, ./fmnist), the command's
    the same keys as a file beside it: the pinned child reads ./fmnist too, not a folder of its own. The API is
    called in this test's process (torch already runs unpinned here); the command is a process of its own, which pins
    itself before its torch is imported."""
    import peftlab

    write_fashion_sample(tmp_path / "fmnist")
    config = write_tiny_run(tmp_path / "run.yaml", reproducible=True)
    keys = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**keys, "data": {**keys["data"], "root": "fmnist"}}))
    monkeypatch.chdir(tmp_path)
    result = peftlab.train(yaml.safe_load(config.read_text()), run_dir="api")
    status, arithmetic, leaked = result["status"], result["provenance"]["arithmetic"], "MKL_CBWR" in os.environ
    assert status == "completed" and not leaked  # this process's environment is left as it was
    assert arithmetic["pinned"] is True and arithmetic["mkl_branch"] in cpu.PINNED_MKL_BRANCHES
    done = run_cli("train", str(config), "--run-dir", str(tmp_path / "cmd"), "--quiet", env=ENV)
    assert done.returncode == 0, done.stderr
    api, command = ((tmp_path / name / "adapter.safetensors").read_bytes() for name in ("api", "cmd"))
    assert api == command
    record, expected = (json.loads((tmp_path / name / "result.json").read_text()) for name in ("api", "cmd"))
    assert record["metrics"] == expected["metrics"] and record["config"] == expected["config"]
    assert record["config"]["data"]["root"] == str(tmp_path / "fmnist")
    if cpu.applies():  # the command's record says how it computed (the switches exist for x86-64 CPUs only)
        provenance = expected["provenance"]
        arithmetic = provenance["arithmetic"]
        assert {k: arithmetic[k] for k in ("reproducible", "pinned", "switches", "quant_cpu_kernel")} == {
            "reproducible": True,
            "pinned": True,
            "switches": cpu.PINNED,
            "quant_cpu_kernel": None,
        }
        # the CPU's vendor and model and MKL's branch: COMPATIBLE,STRICT on either vendor
        assert arithmetic["cpu_vendor"] in ("GenuineIntel", "AuthenticAMD") and arithmetic["cpu_model"]
        assert arithmetic["mkl_branch"] == "COMPATIBLE,STRICT"
        assert arithmetic["products"] == cpu.PRODUCTS_PIN  # every Linear's products through oneDNN
        assert provenance["hardware"]["cpu_capability"] == "AVX2"
        assert provenance["fused_adamw"] is True


def test_switches_set_after_torch_ran_are_no_pin_and_no_record_says_pinned(tmp_path, monkeypatch, torch_first):
    """In this test's process, whose torch runs unpinned: the switches a user sets with %env after the message are
    in the environment, not in the arithmetic."""
    import peftlab
    from peftlab.config.schema import load_config
    from peftlab.training.run import train

    config = write_tiny_run(tmp_path / "run.yaml", reproducible=True)
    for name, value in cpu.PINNED.items():  # what a user does with %env after the message: too late for MKL and ATen
        monkeypatch.setenv(name, value)
    assert not cpu.pin_took() and cpu.torch_runs_unpinned()
    # trained here (reproducible=false): the switches are in the environment, not in the arithmetic
    here = peftlab.train(str(config), ["train.reproducible=false"], run_dir=tmp_path / "here")
    with pytest.raises(ConfigError) as refused:
        train(load_config(str(config)), tmp_path / "refused", progress=False)
    arithmetic = here["provenance"]["arithmetic"]
    assert arithmetic["switches"] == cpu.PINNED and arithmetic["mkl_branch"] == "OFF"
    assert arithmetic["pinned"] is False
    assert "runs unpinned" in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "refused").exists()
