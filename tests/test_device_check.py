"""The device checks (``peftlab.training.device_check``, what scripts/gpu-check.sh runs on a GPU machine), run here
on the CPU: two of its real runs pass, and its judgement catches a record that is not what the check
asked for. The CUDA kernels themselves are exercised only where a GPU is."""

import json
import os
import subprocess
import sys

import pytest
import torch
from testkit import REPO

from peftlab.training import device_check

pytestmark = pytest.mark.e2e


def test_the_checks_pass_on_the_cpu_and_their_judgement_catches_a_wrong_record(tmp_path, capsys):
    out = tmp_path / "out"
    code = device_check.main(
        [str(out), "--device", "cpu", "--only", "lora-fp32", "qlora-nf4-dq", "--work", str(tmp_path), "--jobs", "2"]
    )
    printed = capsys.readouterr().out
    report = json.loads((out / "device-check.json").read_text())
    assert code == 0, printed
    assert report["device"] == "cpu" and report["torch"] == torch.__version__
    assert [row["check"] for row in report["checks"]] == ["lora-fp32", "qlora-nf4-dq"]
    assert all(row["passed"] for row in report["checks"]), report["checks"]
    assert report["checks"][1]["quantized"] == "nf4" and report["checks"][0]["quantized"] == "none"
    assert "2 of 2 checks passed on cpu" in printed

    result = json.loads((tmp_path / "lora-fp32" / "result.json").read_text())
    assert device_check.judge("lora-fp32", "cpu", result) == []
    assert device_check.judge("lora-bf16", "cpu", result) == ["provenance dtype is 'fp32', expected 'bf16'"]
    assert device_check.judge("lora-compiled", "cpu", result) == ["provenance compile.used is None, expected True"]
    # on an H100 the fp32 check ran in bf16 (train.precision auto): it names fp32 now, and is judged by it
    in_bf16 = {**result, "provenance": {**result["provenance"], "dtype": "bf16"}}
    assert device_check.judge("lora-fp32", "cpu", in_bf16) == ["provenance dtype is 'bf16', expected 'fp32'"]
    on_cuda = device_check.judge("lora-fp32", "cuda", result)
    assert on_cuda == ["ran on 'cpu', not cuda", "provenance fused_adamw is False, expected True"]
    broken = {**result, "merge": {**result["merge"], "ok": False}}
    assert device_check.judge("lora-fp32", "cpu", broken)[0].startswith("merge check: ")
    failed = {**result, "status": "failed", "error": "RuntimeError: boom"}
    assert device_check.judge("lora-fp32", "cpu", failed) == ["status 'failed': RuntimeError: boom"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here")
def test_a_device_that_is_not_here_is_one_line_and_exit_2(tmp_path, capsys):
    assert device_check.main([str(tmp_path), "--device", "cuda"]) == 2
    assert capsys.readouterr().err == "device_check: error: --device cuda: no such device here\n"
    assert not (tmp_path / "device-check.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here")
def test_the_gpu_script_on_a_machine_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-check.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    line = (
        f"gpu-check: error: {sys.executable}'s torch sees no CUDA GPU, or there is no torch: run this on a GPU machine"
    )
    assert proc.stderr == line + "\n"
    assert not (tmp_path / "out").exists()
