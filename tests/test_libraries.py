"""peftlab owns its stderr: library warnings and log records go to library.log, not between a user and
peftlab's one line; no library asks the hub for kernels.

The chatter is injected, so these tests pin the behaviour on every CPU (bitsandbytes' own hub-kernel
warning appears only on AVX512-BF16 CPUs)."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from testkit import REPO, bitsandbytes_shown_again, needs_fashion_mnist, write_tiny_run

# Library chatter of every kind, emitted while the command runs: log records of the libraries
# peftlab uses (the bitsandbytes line is the one AVX512-BF16 CPUs print) and Python warnings.
NOISY = """
import logging, sys, warnings
import peftlab.config.schema
load = peftlab.config.schema.load_config

def noisy_load(*args, **kwargs):
    import torch  # noqa: F401 - torch's loggers print through torch's own stderr handler
    logging.getLogger("torch.utils.cpp_extension").warning("No CUDA runtime is found, using CUDA_HOME='/usr/local'")
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
        "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'")
    logging.getLogger("timm.models").warning("a timm warning")
    warnings.warn("a numpy-style warning", DeprecationWarning)
    warnings.warn("a torch-style warning", UserWarning)
    return load(*args, **kwargs)

peftlab.config.schema.load_config = noisy_load
from peftlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


ENV = {**{k: v for k, v in os.environ.items() if k != "PEFTLAB_VERBOSE"}, "PYTHONPATH": str(REPO / "src")}


def run_noisy(*args):
    return subprocess.run(
        [sys.executable, "-c", NOISY, *args], capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600
    )


def test_a_user_error_is_one_line_whatever_the_libraries_say(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"method": {"name": "lora", "rank_pattern": {"nomatch": 4}}}))
    proc = run_noisy("validate", str(bad))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("peftlab: error: "), proc.stderr
    assert "nomatch" in proc.stderr


def test_verbose_shows_the_libraries_on_stderr(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"lr": -1}}))
    proc = run_noisy("--verbose", "validate", str(bad))
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[-1].startswith("peftlab: error: ") and "train.lr" in lines[-1]
    assert any("kernels-community" in line for line in lines) and any("a torch-style warning" in line for line in lines)
    assert any("No CUDA runtime is found" in line for line in lines)


@needs_fashion_mnist()
def test_a_run_keeps_the_libraries_chatter_in_its_library_log(tmp_path):
    config = write_tiny_run(tmp_path / "run.yaml")
    proc = run_noisy("train", str(config), "--run-dir", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    # the libraries' lines go to library.log; peftlab's own hints may reach stderr (under load the run's
    # "validation took longer than training" does), so only lines that are not peftlab's are counted
    foreign = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("peftlab: ")]
    assert foreign == [], proc.stderr
    log = (tmp_path / "run" / "library.log").read_text()
    assert "kernels-community" in log and "a timm warning" in log and "a torch-style warning" in log
    assert "No CUDA runtime is found" in log


def test_bitsandbytes_never_asks_the_hub_for_kernels():
    script = (
        "import sys; from peftlab.utils.libraries import quiet_libraries; quiet_libraries(); import bitsandbytes; "
        "print(sys.modules['kernels'])"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "None", proc.stderr
    assert proc.stderr == "", proc.stderr  # the hub-kernel warning of AVX512-BF16 CPUs is kept, not printed


def test_peftlabs_own_warnings_still_reach_the_user():
    script = (
        "import logging; from peftlab.utils.libraries import quiet_libraries; quiet_libraries(); "
        "logging.getLogger('peftlab.analysis.figures.study').warning('a label is shown as written'); "
        "logging.getLogger('matplotlib').warning('library noise')"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=1200)
    assert proc.stderr == "peftlab: warning: a label is shown as written\n", proc.stderr


# An HF model's run, with a transformers warning logged once its model is built (transformers
# gives its logger a stderr handler of its own when it is imported).
HF_NOISY = """
import sys
import peftlab.models.backbones
build_hf = peftlab.models.backbones.build_hf

def noisy_build_hf(*args, **kwargs):
    model = build_hf(*args, **kwargs)
    from transformers.utils import logging
    logging.get_logger("transformers.modeling_utils").warning("a transformers warning")
    return model

peftlab.models.backbones.build_hf = noisy_build_hf
from peftlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def foreign_lines(stderr: str) -> list[str]:
    """Lines on stderr that are not peftlab's own (a progress bar's carriage returns split it too)."""
    lines = stderr.replace("\r", "\n").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("peftlab: ")]


@needs_fashion_mnist()
def test_an_hf_models_run_keeps_transformers_bars_and_records_off_stderr(tmp_path, hf_dir):
    """transformers' "Loading weights" progress bar landed on stderr; its export's "Writing model shards" too."""
    config = tmp_path / "hf.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"source": "hf", "path": str(hf_dir)},
                "method": {"name": "lora", "r": 2},
                "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32},
                "train": {"max_steps": 2, "batch_size": 16},
            }
        )
    )
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", HF_NOISY, "train", str(config), "--run-dir", str(run_dir), "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=600,
    )
    assert proc.returncode == 0 and foreign_lines(proc.stderr) == [], proc.stderr
    assert "a transformers warning" in (run_dir / "library.log").read_text()
    export = ["export", str(run_dir), "--merged", str(tmp_path / "hf")]
    proc = subprocess.run(
        [sys.executable, "-m", "peftlab.cli", *export], capture_output=True, text=True, cwd=REPO, env=ENV, timeout=600
    )
    assert proc.returncode == 0 and foreign_lines(proc.stderr) == [], proc.stderr


QUIETED = """
import json, logging, sys, warnings
from pathlib import Path
from peftlab.utils.libraries import logged_to, quieted

before = list(logging.getLogger().handlers)
with quieted(), logged_to(Path(sys.argv[1])):  # what peftlab.train does in a kernel around its run
    guarded = "kernels" in sys.modules and sys.modules["kernels"] is None
    warnings.warn("a library's warning")
    logging.getLogger("timm").warning("a library's record")
warnings.warn("the user's own warning, after")
print(json.dumps([guarded, logging.getLogger().handlers == before, "kernels" in sys.modules]))
"""


def test_an_api_call_keeps_the_libraries_in_the_run_log_and_gives_the_process_back(tmp_path):
    """A notebook's kernel is not quieted: peftlab.train quiets the libraries for its run (library.log, the hub-kernel
    guard), and afterwards the user's warnings and logging are theirs again."""
    log = tmp_path / "library.log"
    proc = subprocess.run(
        [sys.executable, "-c", QUIETED, str(log)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [True, True, False]
    text = log.read_text()
    assert "a library's warning" in text and "a library's record" in text
    assert "a library's" not in proc.stderr and "the user's own warning, after" in proc.stderr


TRANSFORMERS_BACK = """
import json, logging, sys
from peftlab.utils.libraries import quieted, quiet_transformers

def state():
    from transformers.utils import logging as tl
    logger = logging.getLogger("transformers")
    return [[type(h).__name__ for h in logger.handlers], logger.propagate, tl.is_progress_bar_enabled()]

if sys.argv[1] == "before":
    import transformers  # the user's own, first: its stderr handler and bars
    before = state()
with quieted():
    import transformers  # inside (PEFT imports it): its handler is taken for the run's log
    quiet_transformers()
    inside = state()
    logging.getLogger("transformers").warning("inside the call")
after = state()
logging.getLogger("transformers.foo").warning("after the call")
print(json.dumps([before if sys.argv[1] == "before" else None, inside, after]))
"""


@pytest.mark.parametrize("imported", ["before", "inside"])
def test_quieted_gives_transformers_its_stderr_handler_and_bars_back(imported):
    """A notebook imports transformers itself, or peftlab.train imports it through PEFT: after the API's call its
    logger has the stderr handler transformers gave it again (not propagating to the kernel's root logger), and
    its progress bars are on where they were on."""
    # a notebook's own environment: not this test process's, which an in-process command quieted for good
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_DISABLE_PROGRESS_BARS"}
    proc = subprocess.run(
        [sys.executable, "-c", TRANSFORMERS_BACK, imported],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(REPO / "src")},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    before, inside, after = json.loads(proc.stdout)
    assert inside[:2] == [[], True]  # the run's log has its records
    # transformers' own, as its import made it: it propagates only where CI is set (CI=true: CI's own runs)
    propagates = os.environ.get("CI", "").upper() in {"1", "ON", "YES", "TRUE"}
    assert after[:2] == [["StreamHandler"], propagates]
    if before is not None:
        assert after == before and after[2] is True
    assert "inside the call" not in proc.stderr and "[transformers] after the call" in proc.stderr, proc.stderr


def test_what_a_c_library_prints_while_ray_connects_goes_to_the_library_log(tmp_path):
    """``stderr_to_library_log``: file descriptor 2 (Ray's core prints its connection retries there, in C++) goes
    to the open library.log for the block, and is the terminal's again after it."""
    script = (
        "import os, sys; from pathlib import Path; "
        "from peftlab.utils.libraries import logged_to, quiet_libraries, stderr_to_library_log; quiet_libraries()\n"
        "with logged_to(Path(sys.argv[1])):\n"
        "    with stderr_to_library_log():\n"
        "        os.write(2, b'[core] gcs_client.cc: Failed to get cluster ID\\n')\n"
        "    os.write(2, b'after\\n')\n"
    )
    log = tmp_path / "library.log"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(log)], capture_output=True, text=True, env=ENV, timeout=600
    )
    assert proc.returncode == 0 and proc.stderr == "after\n", proc.stderr
    assert "[core] gcs_client.cc: Failed to get cluster ID" in log.read_text()


def test_bitsandbytes_hidden_by_an_in_process_run_is_found_again_by_peft_for_the_next_test(monkeypatch):
    from peft.import_utils import is_bnb_available

    from peftlab.utils.libraries import without_bitsandbytes

    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)  # as in a worker that has not imported it
    without_bitsandbytes()  # what an in-process `peftlab train` of an unquantized run does
    is_bnb_available.cache_clear()
    assert not is_bnb_available()  # PEFT's LoRA injection asks this (its bnb dispatchers) and keeps the answer
    bitsandbytes_shown_again()  # conftest's fixture, after such a test
    assert "bitsandbytes" not in sys.modules and is_bnb_available()
