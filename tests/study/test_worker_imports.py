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
from peftlab.study.executors.local import PRELOAD
for module in PRELOAD:  # as the forkserver does before it forks a worker
    __import__(module)
preloaded = held()
from peftlab.study.executors.worker import process_main
process_main(json.loads(sys.argv[1]), sys.argv[2], False, 1, os.getpid())
print(json.dumps({"preloaded": preloaded, "after_run": held()}))
"""


def worker_imports(tmp_path, quant: str) -> tuple[dict, dict]:
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
    out = subprocess.run(
        [sys.executable, "-c", f"WATCHED = {WATCHED!r}\n{WORKER}", json.dumps(config), str(run_dir)],
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
def test_a_quantized_run_imports_bitsandbytes_and_gets_pefts_layers(tmp_path):
    held, result = worker_imports(tmp_path, "nf4")
    assert result["status"] == "completed", result.get("error")
    assert "bitsandbytes" not in held["preloaded"]
    assert set(held["after_run"]) == {"torch", "timm", "peft", "transformers", "bitsandbytes"}
    assert (
        result["memory"]["base_weights_bytes"] < result["memory"]["base_weights_fp32_bytes"] / 2
    )  # 4-bit, the head in fp32
