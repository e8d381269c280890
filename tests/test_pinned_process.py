"""The pin in any process (training/run.py's train_in_pinned_process, utils/cpu.py): where torch already runs
unpinned (a kernel whose first cell imported torch and timm), ``peftlab.train`` trains a reproducible run in a child
process started with the pin and gets ``peftlab train``'s weights bit for bit; switches set after torch ran are no
pin, and no record says ``pinned: true`` of a process whose MKL and ATen do not report it."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from testkit import REPO, needs_fashion_mnist, run_cli, write_tiny_run

from peftlab.data.sources import fashion_mnist_dir
from peftlab.utils import cpu

ENV = {**{k: v for k, v in os.environ.items() if k not in cpu.PINNED}, "PYTHONPATH": str(REPO / "src")}

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not cpu.applies(), reason="the switches exist for x86-64 CPUs only"),
    needs_fashion_mnist(),
]

TORCH_FIRST = """
import json, os, sys
import torch, timm  # a notebook's first cell: torch runs unpinned from here on
torch.ones(8, 8) @ torch.ones(8, 8)  # MKL has run: it read MKL_CBWR (absent) once
"""


def python(script: str, cwd) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", TORCH_FIRST + script], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_torch_first_process_trains_a_pinned_run_with_the_commands_weights(tmp_path):
    """The API's run is a dict config whose data root is relative (the working folder's, ./fmnist), the command's
    the same keys as a file beside it: the pinned child reads ./fmnist too, not a folder of its own."""
    shutil.copytree(fashion_mnist_dir(), tmp_path / "fmnist")
    config = write_tiny_run(tmp_path / "run.yaml", reproducible=True)
    keys = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**keys, "data": {**keys["data"], "root": "fmnist"}}))
    proc = python(
        "import peftlab, yaml\n"
        "from peftlab.utils import cpu\n"
        "assert cpu.torch_runs_unpinned()\n"
        f"result = peftlab.train(yaml.safe_load(open({str(config)!r})), run_dir='api')\n"
        "print(json.dumps([result['status'], result['provenance']['arithmetic'], 'MKL_CBWR' in os.environ]))",
        tmp_path,
    )
    status, arithmetic, leaked = json.loads(proc.stdout.splitlines()[-1])
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
        assert arithmetic["products"] == cpu.PRODUCTS_ONEDNN  # every Linear's products through oneDNN
        assert provenance["hardware"]["cpu_capability"] == "AVX2"
        assert provenance["fused_adamw"] is True


def test_switches_set_after_torch_ran_are_no_pin_and_no_record_says_pinned(tmp_path):
    config = write_tiny_run(tmp_path / "run.yaml", reproducible=True)
    proc = python(
        "from peftlab.utils import cpu\n"
        "os.environ.update(cpu.PINNED)  # what a user does with %env after the message: too late for MKL and ATen\n"
        "import peftlab\n"
        "from peftlab.config.schema import load_config\n"
        "from peftlab.training.run import train\n"
        "from peftlab.utils.errors import ConfigError\n"
        "assert not cpu.pin_took() and cpu.torch_runs_unpinned()\n"
        # trained here (reproducible=false): the switches are in the environment, not in the arithmetic
        f"here = peftlab.train({str(config)!r}, ['train.reproducible=false'], run_dir='here')\n"
        f"cfg = load_config({str(config)!r})\n"
        "try:\n"
        "    train(cfg, 'refused', progress=False)\n"
        "    refused = None\n"
        "except ConfigError as err:\n"
        "    refused = str(err)\n"
        "print(json.dumps([here['provenance']['arithmetic'], refused]))",
        tmp_path,
    )
    arithmetic, refused = json.loads(proc.stdout.splitlines()[-1])
    assert arithmetic["switches"] == cpu.PINNED and arithmetic["mkl_branch"] == "OFF"
    assert arithmetic["pinned"] is False
    assert refused and "runs unpinned" in refused and "\n" not in refused
    assert not (tmp_path / "refused").exists()
