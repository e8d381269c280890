"""The CLI answers fast: each command imports what its answer needs and no more.

Each command runs in a fresh process; the libraries of ``WATCHED`` it holds at the end are pinned, so
that a module-level import that brings one back (PEFT brings transformers and bitsandbytes, whose
backend imports ``torch._inductor``) fails here. Where a command needs timm (a meta model), what
``import timm`` brings by itself (torchvision's model zoo, ``torch._inductor``) is expected with it,
as measured in this environment. No timings here: benchmarks/README.md ("CLI start-up") holds the CPU seconds.
"""

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml
from testkit import TINY_MODEL, needs_fashion_mnist

import peftlab

REPO = Path(peftlab.__file__).parents[2]
WATCHED = (
    "torch",
    "timm",
    "peft",
    "transformers",
    "bitsandbytes",
    "torch._inductor",
    "torchvision.models",
    "pandas",
    "matplotlib",
    "wandb",
)
# a module mapped to None is one a process made unimportable (peftlab.utils.libraries.without_bitsandbytes)
REPORT = f"print(json.dumps(sorted(m for m in {WATCHED!r} if sys.modules.get(m) is not None)))"


def last_json_line(code: str, *args: str):
    """The last line a fresh interpreter running ``code`` (with ``args``) prints, read as JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", f"import json, sys\n{code}", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_python(code: str) -> list[str]:
    """The watched modules a fresh interpreter holds after ``code`` (its last line of output)."""
    return last_json_line(f"{code}\n{REPORT}")


def command_imports(*argv: str, status: int = 0) -> set[str]:
    """The watched modules ``peftlab ARGV`` holds when it has answered (it must answer with ``status``)."""
    code = (
        "from peftlab.cli import main\n"
        "try:\n"
        f"    status = main({list(argv)!r})\n"
        "except SystemExit as err:\n"
        "    status = err.code\n"
        f"assert status == {status}, status"
    )
    return set(run_python(code))


# what ``import LIBRARY`` brings by itself, each in a process forked from one that imported torch alone: each
# library imports torch, so the modules its process holds are the same, and torch is imported once for them all. A
# fork runs one chain of imports and reads the modules it holds after each (a later one goes on from the earlier)
LIBRARIES = (
    {
        "timm": "import peftlab.models\nimport timm",  # as peftlab imports it (libraries.wandb_when_used)
        "wandb after timm": "import wandb\nassert wandb.init",  # the wandb sink's, after timm as peftlab imports it
    },
    {"timm alone": "import timm"},
    {"peft": "import peft"},
    {"peft without bitsandbytes": "sys.modules['bitsandbytes'] = None\nimport peft"},
)
FORKED = f"""
import os, traceback
import torch
held = []
for chain in json.loads(sys.argv[1]):
    read, written = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            after = []
            for code in chain:
                exec(code)
                after.append(sorted(m for m in {WATCHED!r} if sys.modules.get(m) is not None))
            os.write(written, json.dumps(after).encode())
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(written)
    with os.fdopen(read) as answer:
        held += json.loads(answer.read() or "[]")
    assert os.waitpid(pid, 0)[1] == 0, chain
print(json.dumps(held))
"""


@cache
def brought() -> dict[str, frozenset[str]]:
    held = last_json_line(FORKED, json.dumps([list(chain.values()) for chain in LIBRARIES]))
    names = [name for chain in LIBRARIES for name in chain]
    assert len(held) == len(names)
    return {name: frozenset(modules) for name, modules in zip(names, held)}


def brought_by(library: str) -> frozenset[str]:
    """The watched modules ``import library`` brings by itself here (itself included); a name of ``LIBRARIES``."""
    return brought()[library]


def test_timm_imported_by_peftlab_leaves_wandb_out_which_imports_after_it():
    """timm imports wandb wherever it is installed (0.3 to 0.4 CPU s a process); not where peftlab imports it, and a
    later ``import wandb`` (the wandb sink's) gets it."""
    pytest.importorskip("wandb")
    assert "wandb" in brought_by("timm alone") and "wandb" not in brought_by("timm")
    assert brought_by("wandb after timm") == brought_by("timm") | {"wandb"}


def write_run(path: Path, method: str) -> Path:
    run = {
        "model": TINY_MODEL,
        "method": {"name": method},
        "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32},
        "train": {"max_steps": 2, "batch_size": 16},
    }
    path.write_text(yaml.safe_dump(run))
    return path


@needs_fashion_mnist()
def test_data_info_imports_no_torch():
    assert command_imports("data", "info", "fashion_mnist") == set()


def test_params_counts_lora_on_the_meta_model_without_peft():
    """A LoRA (or DoRA) count comes from the plan (the ``size`` hook), not from PEFT's layers; once its
    model record is written (peftlab.records), from the record alone: no torch."""
    argv = ["params", "vit_tiny_patch16_224", "--depth", "2", "--embed-dim", "64", "--num-heads", "2"]
    assert command_imports(*argv, "--method", "lora") == {"torch"} | brought_by("timm")
    assert command_imports(*argv, "--method", "lora") == set()


def test_params_of_a_local_hf_directory_imports_no_torch_once_recorded(hf_dir):
    """The directory's source (transformers' image classifiers) and its counts are records of its files."""
    argv = ["params", str(hf_dir), "--method", "lora"]
    assert {"torch", "transformers"} <= command_imports(*argv)
    assert command_imports(*argv) == set()


def test_validate_of_a_method_without_peft_imports_no_peft(tmp_path):
    config = write_run(tmp_path / "run.yaml", "bitfit")
    assert command_imports("validate", str(config)) == {"torch"} | brought_by("timm")


def test_validate_of_lora_imports_peft_for_its_memory_probe_alone(tmp_path):
    """validate's memory estimate runs the adapted model forward (PEFT's LoRA layers): PEFT and what it
    brings, nothing else; of an unquantized config, without bitsandbytes (which PEFT imports when it can)."""
    config = write_run(tmp_path / "run.yaml", "lora")
    peft_alone = brought_by("peft without bitsandbytes")
    assert "bitsandbytes" in brought_by("peft") and "bitsandbytes" not in peft_alone  # what the test can tell apart
    assert command_imports("validate", str(config)) == {"torch"} | brought_by("timm") | peft_alone
    assert command_imports("validate", str(config)) == set()  # warm: the model records answer


def test_a_warm_validate_of_a_run_on_a_local_weights_file_imports_no_torch(tmp_path):
    """The weights file is checked against the model once per file as it is (size, time, inode)."""
    import os

    from safetensors.torch import save_file

    from peftlab.config.sections import ModelConfig
    from peftlab.models.backbones import build_backbone

    config = write_run(tmp_path / "run.yaml", "lora")
    weights = tmp_path / "base.safetensors"
    save_file(build_backbone(ModelConfig(**TINY_MODEL), 10, weights=False).state_dict(), str(weights))
    run = yaml.safe_load(config.read_text())
    run["model"]["pretrained"] = str(weights)
    config.write_text(yaml.safe_dump(run))
    assert "torch" in command_imports("validate", str(config))
    assert command_imports("validate", str(config)) == set()
    os.utime(weights, ns=(0, 0))
    assert "torch" in command_imports("validate", str(config))  # another file: checked again


def test_validate_of_a_quantized_lora_config_keeps_bitsandbytes(tmp_path):
    config = write_run(tmp_path / "run.yaml", "lora")
    config.write_text(config.read_text() + "quant: {mode: nf4}\n")
    assert "bitsandbytes" in command_imports("validate", str(config))


@needs_fashion_mnist()
def test_train_of_an_unquantized_lora_run_imports_no_bitsandbytes(tmp_path):
    """`peftlab train` trains one run and ends, as a study's forked worker: PEFT's LoRA injection leaves bitsandbytes
    (and the torch._inductor it imports) out; a quantized run's keeps it (validate's test above, the same switch).
    `peftlab predict` of the run too."""
    config = write_run(tmp_path / "run.yaml", "lora")
    held = command_imports("train", str(config), "--run-dir", str(tmp_path / "run"), "--quiet")
    assert "peft" in held and "bitsandbytes" not in held, held
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "completed"
    import numpy as np
    from PIL import Image

    image = tmp_path / "image.png"  # `peftlab predict` of that run loads it as train does, bitsandbytes left out
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(image)
    held = command_imports("predict", str(tmp_path / "run"), str(image))
    assert "peft" in held and "bitsandbytes" not in held, held


def test_a_study_dry_run_imports_no_peft():
    """VTAB-1k's study (LoRA among its methods) is checked and counted on meta models: timm, no PEFT. Its data is
    not here: the dry-run lists its runs, then ends with status 2 naming the data it did not find."""
    dry_run = ("study", "configs/studies/vtab1k.yaml", "--dry-run")
    assert command_imports(*dry_run, status=2) == {"torch"} | brought_by("timm")
    assert command_imports(*dry_run, status=2) == set()  # warm: its records


def test_reading_the_watched_modules_sees_them():
    assert brought_by("timm") >= {"timm", "torch"}
    assert brought_by("peft") >= {"peft", "transformers"}
