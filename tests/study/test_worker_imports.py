"""A study's worker imports what its run needs: bitsandbytes only for a run that quantizes its base.

The forkserver imports ``local.PRELOAD`` once and forks a worker per run (``worker.process_main``). Each
test does the same in one fresh interpreter, without the fork (what the worker holds is what its parent
imported plus what its run imports): the preload, then one run, then the libraries it holds. PEFT
imports bitsandbytes wherever it is installed (``peftlab.utils.libraries``); a QLoRA run after the
light preload still gets PEFT's bitsandbytes LoRA layers. No timings here: benchmarks/README.md
("A run's fixed cost") holds them.
"""

import json
import subprocess
import sys

from testkit import REPO, TINY_MODEL, needs_fashion_mnist

from peftlab.config.schema import load_config, to_dict

WATCHED = ("torch", "timm", "peft", "transformers", "bitsandbytes", "pandas", "matplotlib")

# a module that sys.modules maps to None is one made unimportable (libraries.without_bitsandbytes)
WORKER = """
import json, os, sys
held = lambda: sorted(m for m in WATCHED if sys.modules.get(m) is not None)
from peftlab.study.executors import local
for module in local.preload_for([(SPEC, None)]):  # as the forkserver does before it forks a worker
    __import__(module)
preloaded = held()
from peftlab.training import metrics
baselines = []  # at each PeakRSS baseline: was bitsandbytes imported already?
original = metrics.PeakRSS.__init__
def noted(self, *args, **kwargs):
    baselines.append(sys.modules.get("bitsandbytes") is not None)
    original(self, *args, **kwargs)
metrics.PeakRSS.__init__ = noted
from peftlab.study.executors.worker import process_main
process_main(json.loads(sys.argv[1]), sys.argv[2], False, 1, os.getpid())
print(json.dumps({"preloaded": preloaded, "after_run": held(), "bnb_at_baselines": baselines}))
"""


def spec_line(quant: str, study_quantized: bool | None) -> str:
    """SPEC: a job of the study as ``local.preload_for`` reads it (the run's own quantization by default)."""
    quantized = quant != "none" if study_quantized is None else study_quantized
    mode = "nf4" if quantized else "none"
    return f"from types import SimpleNamespace as N; SPEC = N(config=N(quant=N(mode={mode!r})))"


def worker_imports(tmp_path, quant: str, study_quantized: bool | None = None) -> tuple[dict, dict]:
    """What a worker holds after the preload and after its run of the tiny LoRA, and the run's result."""
    overrides = {
        "model": TINY_MODEL,
        "method": {"name": "lora", "r": 2},
        "quant": {"mode": quant},
        "data": {"name": "fashion_mnist", "train_subset": 32, "val_subset": 16, "test_subset": 16},
        "train": {"max_steps": 2, "batch_size": 16, "reproducible": False},
    }
    config = to_dict(load_config(overrides=overrides))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    args = (json.dumps(config), str(run_dir))
    out = subprocess.run(
        [sys.executable, "-c", f"WATCHED = {WATCHED!r}\n{spec_line(quant, study_quantized)}\n{WORKER}", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), json.loads((run_dir / "result.json").read_text())


@needs_fashion_mnist()
def test_an_unquantized_lora_run_imports_no_bitsandbytes(tmp_path):
    held, result = worker_imports(tmp_path, "none")
    assert result["status"] == "completed", result.get("error")
    assert set(held["preloaded"]) == {"torch", "timm", "peft", "transformers"}
    assert set(held["after_run"]) == {"torch", "timm", "peft", "transformers"}


@needs_fashion_mnist()
def test_an_unquantized_run_beside_quantized_ones_imports_no_bitsandbytes(tmp_path):
    """The forkserver of a study with quantized runs preloads torch's compiler (what bitsandbytes imports),
    never bitsandbytes: its unquantized runs keep PEFT without it."""
    from peftlab.study.executors.local import PRELOAD, QUANTIZED_PRELOAD

    held, result = worker_imports(tmp_path, "none", study_quantized=True)
    assert result["status"] == "completed", result.get("error")
    assert "bitsandbytes" not in held["after_run"] and set(QUANTIZED_PRELOAD) - set(PRELOAD)


@needs_fashion_mnist()
def test_a_quantized_run_imports_bitsandbytes_and_gets_pefts_layers(tmp_path):
    held, result = worker_imports(tmp_path, "nf4")
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

    from peftlab.study.executors.local import PRELOAD, QUANTIZED_PRELOAD, preload_for

    job = lambda mode: (N(config=N(quant=N(mode=mode))), None)
    assert preload_for([job("none"), job("none")]) == PRELOAD
    assert preload_for([job("none"), job("int8")]) == PRELOAD + QUANTIZED_PRELOAD
