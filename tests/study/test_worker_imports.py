"""A study's worker imports what its run needs: bitsandbytes only for a run that quantizes its base.

The forkserver imports ``local.PRELOAD`` once and forks a worker per run (``worker.process_main``). The tests do
the same in one fresh interpreter (a module fixture): it imports ``local.PRELOAD``, then forks a worker per case,
which imports the rest of its study's preload (``local.preload_for``), trains its one run and notes the libraries
it holds. PEFT imports bitsandbytes wherever it is installed (``peftlab.utils.libraries``); a QLoRA run after the
light preload still gets PEFT's bitsandbytes LoRA layers. No timings here: benchmarks/README.md
("A run's fixed cost") holds them.
"""

import json
import subprocess
import sys

import pytest
from testkit import REPO, TINY_MODEL, needs_fashion_mnist

from peftlab.config.schema import load_config, to_dict

WATCHED = ("torch", "timm", "peft", "transformers", "bitsandbytes", "pandas", "matplotlib")

# a module that sys.modules maps to None is one made unimportable (libraries.without_bitsandbytes)
WORKERS = """
import json, os, sys, traceback
from pathlib import Path
from types import SimpleNamespace as N
held = lambda: sorted(m for m in WATCHED if sys.modules.get(m) is not None)
from peftlab.study.executors import local
for module in local.PRELOAD:  # as the forkserver does before it forks a worker
    __import__(module)
from peftlab.training import metrics
baselines = []  # at each PeakRSS baseline: was bitsandbytes imported already?
original = metrics.PeakRSS.__init__
def noted(self, *args, **kwargs):
    baselines.append(sys.modules.get("bitsandbytes") is not None)
    original(self, *args, **kwargs)
metrics.PeakRSS.__init__ = noted
from peftlab.study.executors.worker import process_main
for case in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:  # a worker
        status = 1
        try:
            for module in local.preload_for([(N(config=N(quant=N(mode=case["study_mode"]))), None)]):
                __import__(module)  # the rest of a quantized study's preload
            preloaded = held()
            process_main(case["config"], case["run_dir"], False, 1, os.getpid())
            answer = {"preloaded": preloaded, "after_run": held(), "bnb_at_baselines": baselines}
            Path(case["run_dir"], "held.json").write_text(json.dumps(answer))
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    assert os.waitpid(pid, 0)[1] == 0, case["run_dir"]
"""

# each case: the run's quantization, and whether its study has quantized runs (its forkserver's preload)
CASES = {"none": ("none", False), "beside-quantized": ("none", True), "nf4": ("nf4", True)}


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> dict:
    """Per case, what its worker held after the preload and after its run of the tiny LoRA, and the run's result."""
    root = tmp_path_factory.mktemp("workers")
    cases = []
    for name, (quant, study_quantized) in CASES.items():
        overrides = {
            "model": TINY_MODEL,
            "method": {"name": "lora", "r": 2},
            "quant": {"mode": quant},
            "data": {"name": "fashion_mnist", "train_subset": 32, "val_subset": 16, "test_subset": 16},
            "train": {"max_steps": 2, "batch_size": 16, "reproducible": False},
        }
        run_dir = root / name
        run_dir.mkdir()
        config = to_dict(load_config(overrides=overrides))
        cases.append({"config": config, "run_dir": str(run_dir), "study_mode": "nf4" if study_quantized else "none"})
    out = subprocess.run(
        [sys.executable, "-c", f"WATCHED = {WATCHED!r}\n{WORKERS}", json.dumps(cases)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "HOME": str(root)},
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return {
        name: tuple(json.loads((root / name / file).read_text()) for file in ("held.json", "result.json"))
        for name in CASES
    }


@needs_fashion_mnist()
def test_an_unquantized_lora_run_imports_no_bitsandbytes(workers):
    held, result = workers["none"]
    assert result["status"] == "completed", result.get("error")
    assert set(held["preloaded"]) == {"torch", "timm", "peft", "transformers"}
    assert set(held["after_run"]) == {"torch", "timm", "peft", "transformers"}


@needs_fashion_mnist()
def test_an_unquantized_run_beside_quantized_ones_imports_no_bitsandbytes(workers):
    """The forkserver of a study with quantized runs preloads torch's compiler (what bitsandbytes imports),
    never bitsandbytes: its unquantized runs keep PEFT without it."""
    from peftlab.study.executors.local import PRELOAD, QUANTIZED_PRELOAD

    held, result = workers["beside-quantized"]
    assert result["status"] == "completed", result.get("error")
    assert "bitsandbytes" not in held["after_run"] and set(QUANTIZED_PRELOAD) - set(PRELOAD)


@needs_fashion_mnist()
def test_a_quantized_run_imports_bitsandbytes_and_gets_pefts_layers(workers):
    held, result = workers["nf4"]
    assert result["status"] == "completed", result.get("error")
    assert "bitsandbytes" not in held["preloaded"]
    # imported before the run's memory baseline, so its peak counts what it builds, not what it imports
    assert held["bnb_at_baselines"] and all(held["bnb_at_baselines"])
    assert set(held["after_run"]) == {"torch", "timm", "peft", "transformers", "bitsandbytes"}
    assert (
        result["memory"]["base_weights_bytes"] < result["memory"]["base_weights_fp32_bytes"] / 2
    )  # 4-bit, the head in fp32


def test_a_study_s_forkserver_preloads_torch_s_compiler_only_where_a_run_quantizes():
    from types import SimpleNamespace as N

    from peftlab.study.executors.local import PRELOAD, QUANTIZED_PRELOAD, preload_for, serving

    job = lambda mode: (N(config=N(quant=N(mode=mode))), None)
    assert preload_for([job("none"), job("none")]) == PRELOAD
    assert preload_for([job("none"), job("int8")]) == PRELOAD + QUANTIZED_PRELOAD
    with serving([job("none"), job("nf4")]):  # a study's later final runs: its trials' server preloads it too
        assert preload_for([job("none")]) == preload_for([]) == PRELOAD + QUANTIZED_PRELOAD
    assert preload_for([job("none")]) == PRELOAD


@pytest.mark.parametrize(
    "executor, quant, hidden", [("submitit", "none", True), ("ray", "none", False), ("submitit", "nf4", False)]
)
def test_a_submitit_job_of_an_unquantized_run_leaves_bitsandbytes_out(monkeypatch, tmp_path, executor, quant, hidden):
    """A submitit job's process trains its one run (as a local worker does): unquantized, it leaves bitsandbytes out
    before PEFT is imported. A Ray worker takes more tasks, a quantized one of them perhaps: it keeps it."""
    from peftlab.study.executors import worker

    calls = []
    monkeypatch.setattr(worker, "without_bitsandbytes", lambda: calls.append("hidden"))
    monkeypatch.setattr(worker, "job_execution", lambda executor: worker.execution_here(executor))
    monkeypatch.setattr(worker, "execute_run", lambda config, run_dir, execution: calls.append("trained"))
    worker.run_job({"quant": {"mode": quant}}, str(tmp_path / "run"), str(tmp_path), executor)
    assert calls == (["hidden"] if hidden else []) + ["trained"]
