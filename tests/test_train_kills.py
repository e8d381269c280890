"""kill -9 loses nothing and repeats nothing; Ctrl-C and SIGTERM stop a run cleanly.

A ``peftlab train`` process SIGKILLs itself at a named point (``PEFTLAB_KILL_AT``, see
``peftlab.utils.files.kill_point``); the same command then resumes the run. The killed process is forked from the
test's (``killed_in_a_fork``: a real process and a real SIGKILL, without importing torch, timm and PEFT again); the
SIGTERM test's runs in an interpreter of its own, as a user starts it. Its metrics.jsonl and
monitors.jsonl must equal an uninterrupted run's line for line (timings aside), its adapter
bit for bit, and no temporary file of an interrupted atomic write may remain.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from testkit import REPO, TINY_MODEL, cli_here, needs_fashion_mnist, wait_until, write_fashion_sample

from peftlab.config.schema import dump_config, load_config
from peftlab.training.run import train
from peftlab.utils.files import KILL_AT, KILL_ONCE, kill_point, remove_temporaries, write_atomic

needs_data = needs_fashion_mnist()

# 192 images in batches of 32: 6 steps per epoch, 12 in all; a checkpoint every 2 steps, a val
# evaluation every 3 (eval records), monitors every 2 steps (monitors.jsonl)
SMALL = {
    "model": TINY_MODEL,
    "method": {"name": "lora", "r": 4},
    "data": {"name": "fashion_mnist", "train_subset": 192, "val_subset": 64, "test_subset": 96},
    "train": {
        "epochs": 2,
        "batch_size": 32,
        "eval_batch_size": 96,
        "lr": 3e-3,
        "log_every": 2,
        "ckpt_every": 2,
        "eval_every": 3,
        "threads": 1,
    },
}
TIMINGS = {"images_per_second", "seconds"}  # wall-clock fields differ between any two runs


def records(run_dir: Path, name: str) -> list[dict]:
    lines = (run_dir / name).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS} for line in lines]


def temporaries(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.rglob("*.tmp"))


@pytest.fixture(scope="module", autouse=True)
def fashion_sample(tmp_path_factory):
    """SMALL's runs read their subsets from the installed Fashion-MNIST's first images, in files of their own
    (``testkit.write_fashion_sample``): every run reads and hashes its data files whole."""
    from peftlab.data.sources import fashion_mnist_dir

    with pytest.MonkeyPatch.context() as patch:
        if (fashion_mnist_dir() / "train-labels-idx1-ubyte.gz").exists():  # else needs_data skips the runs
            patch.setitem(SMALL["data"], "root", str(write_fashion_sample(tmp_path_factory.mktemp("fashion"))))
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    result = train(load_config(overrides=SMALL), run_dir, progress=False)
    assert result["status"] == "completed", result["error"]
    return run_dir, result


def assert_equals_reference(run_dir: Path, result: dict, reference) -> None:
    ref_dir, ref_result = reference
    assert result["status"] == "completed", result["error"]
    for name in ("metrics.jsonl", "monitors.jsonl"):
        assert records(run_dir, name) == records(ref_dir, name), name
    a, b = load_file(str(run_dir / "adapter.safetensors")), load_file(str(ref_dir / "adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert result["metrics"] == ref_result["metrics"]
    assert temporaries(run_dir) == []


def test_kill_point_kills_only_at_the_named_point(monkeypatch):
    monkeypatch.setenv(KILL_AT, "checkpoint:4")
    kill_point("checkpoint", 2)
    kill_point("step", 4)
    kill_point("checkpoint")  # alive: each of these would have been a SIGKILL of the test process


def test_with_a_marker_file_only_the_first_process_is_killed(tmp_path):
    """``PEFTLAB_KILL_ONCE``: the process that creates the marker dies; the next one (a retry) goes on."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), **{KILL_AT: "step:3", KILL_ONCE: str(tmp_path / "killed")})
    code = "from peftlab.utils.files import kill_point; kill_point('step', 3); print('alive')"
    first, second = (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
        for _ in range(2)
    )
    assert first.returncode == -signal.SIGKILL and (tmp_path / "killed").exists(), first.stderr
    assert second.returncode == 0 and second.stdout == "alive\n", second.stderr


def test_temporaries_of_interrupted_writes_are_recognised_and_nothing_else(tmp_path):
    write_atomic(tmp_path / "kept.json", lambda tmp: Path(tmp).write_text("{}"))
    for name in (".last.pt.0123456789ab.tmp", ".adapter.safetensors.a1b2c3d4e5f6.tmp"):
        (tmp_path / name).write_bytes(b"half")
    for name in ("notes.tmp", ".x.tmp", ".last.pt.XYZ.tmp"):  # not written by write_atomic
        (tmp_path / name).write_bytes(b"user")
    removed = remove_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".adapter.safetensors.a1b2c3d4e5f6.tmp", ".last.pt.0123456789ab.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.pt.XYZ.tmp", ".x.tmp", "kept.json", "notes.tmp"]


@needs_data
@pytest.mark.e2e
@pytest.mark.parametrize(
    "point",
    [
        "step:7",  # records of step 7 written, its checkpoint (step 8) not yet
        "checkpoint:4",  # right after a checkpoint
        "epoch-record:6",  # after epoch 0's record, before its checkpoint: the record must not appear twice
        "checkpoint:12",  # the last step checkpointed, the last epoch's record not yet written: it must not be lost
        "write:last.pt",  # inside the first checkpoint's atomic write: its temporary file stays behind
        "write:adapter.safetensors",  # inside the adapter's atomic write, after training
        "adapter",  # the adapter written, result.json not yet
    ],
)
def test_sigkill_at_a_point_then_resume_equals_an_uninterrupted_run(tmp_path, reference, point):
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(dump_config(load_config(overrides=SMALL)))
    run_dir = tmp_path / "run"
    assert killed_in_a_fork(point, "train", str(cfg_path), "--run-dir", str(run_dir), "--quiet") == -signal.SIGKILL
    assert not (run_dir / "result.json").exists()
    if point.startswith("write:"):
        assert temporaries(run_dir), "the kill inside an atomic write should leave its temporary file"
    result = train(load_config(cfg_path), run_dir, progress=False)
    assert_equals_reference(run_dir, result, reference)


def killed_in_a_fork(point: str, *argv: str) -> int:
    """The exit status of ``peftlab ARGV`` (the CLI's entry) in a process forked from this one with
    ``$PEFTLAB_KILL_AT=point``: -SIGKILL where it died there; a child that neither dies nor ends in 600 s is killed."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 70
        try:
            os.environ[KILL_AT] = point
            from peftlab import cli

            status = cli.run_command(list(argv))
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(status)
    ended = []
    if not wait_until(lambda: ended.append(os.waitpid(pid, os.WNOHANG)) or ended[-1][0] == pid, seconds=600):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"the forked run did not end in 600 s (killed at {point}?)")
    return os.waitstatus_to_exitcode(ended[-1][1])


@needs_data
def test_an_exit_that_a_writer_turned_into_its_own_error_is_an_exit_not_a_failure(tmp_path, monkeypatch, reference):
    """submitit's exit after it requeued a preempted job (a SystemExit raised by its signal handler)
    can land in the checkpoint writer, whose clean-up then raises an error of its own: that error is
    the exit's. The run records no failure, and the requeued job resumes it to the uninterrupted result."""
    real_save, saves = torch.save, []

    def save_cut_short(*args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            try:
                raise SystemExit(-1)
            except SystemExit:
                raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed") from None
        return real_save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", save_cut_short)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit):
        train(load_config(overrides=SMALL), run_dir, progress=False)
    assert not (run_dir / "result.json").exists()  # not a failed run: it stays resumable
    monkeypatch.undo()
    assert_equals_reference(run_dir, train(load_config(overrides=SMALL), run_dir, progress=False), reference)


@needs_data
@pytest.mark.e2e
def test_sigterm_stops_train_cleanly_and_the_same_command_resumes(tmp_path, reference):
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(dump_config(load_config(overrides=SMALL)))
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PEFTLAB_HOLD_AT="checkpoint")  # waits at its first
    proc = subprocess.Popen(
        [sys.executable, "-m", "peftlab.cli", "train", str(cfg_path), "--run-dir", str(run_dir), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 1200
    while not (run_dir / "checkpoint" / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=480)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.count("\n") == 1 and "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr, stderr
    assert not (run_dir / "result.json").exists()  # no failed result: the run stays resumable
    assert (run_dir / "checkpoint" / "last.pt").exists()
    proc = cli_here("train", str(cfg_path), "--run-dir", str(run_dir), "--quiet")  # the same command, in this process
    assert proc.returncode == 0, proc.stderr
    assert_equals_reference(run_dir, json.loads((run_dir / "result.json").read_text()), reference)


@needs_data
@pytest.mark.e2e
@pytest.mark.parametrize(
    "method",
    [
        {"name": "bitfit"},
        {"name": "ssf"},
        {"name": "difffit"},
        {"name": "houlsby", "bottleneck": 4},
        {"name": "vpt", "prompt_tokens": 3},
    ],
    ids=lambda method: method["name"],
)
def test_a_stop_at_a_kill_point_then_resume_equals_an_uninterrupted_run_for_the_hand_written_methods(
    tmp_path, monkeypatch, method
):
    """Each hand-written method's own state (biases, scales, adapters, prompts) resumes bit for bit from the step-6
    checkpoint. Stopped in this process at the kill point (``Killed``): a real SIGKILL at the same point is the LoRA
    run's, in a process of its own (test_sigkill_at_a_point_then_resume_equals_an_uninterrupted_run[step:7])."""
    cfg = load_config(overrides={**SMALL, "method": method})
    reference = tmp_path / "straight"
    result = train(cfg, reference, progress=False)
    assert result["status"] == "completed", result["error"]
    run_dir = tmp_path / "run"
    real_kill = os.kill

    def kill(pid, signum):
        if pid == os.getpid() and signum == signal.SIGKILL:
            raise Killed
        real_kill(pid, signum)

    monkeypatch.setenv(KILL_AT, "step:7")
    monkeypatch.setattr(os, "kill", kill)
    with pytest.raises(Killed):
        train(cfg, run_dir, progress=False)
    monkeypatch.undo()
    assert not (run_dir / "result.json").exists()
    assert_equals_reference(run_dir, train(cfg, run_dir, progress=False), (reference, result))


class Killed(BaseException):
    """``kill_point``'s SIGKILL, raised in the test's process instead: nothing of the run catches it."""
