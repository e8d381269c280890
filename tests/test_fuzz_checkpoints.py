"""A damaged checkpoint is refused in one line (the run is marked failed with its checkpoint
unusable) or resumes: never a traceback, never a hang.

Fuzzed with a fixed seed and a bounded count: a real mid-run checkpoint of the tiny LoRA run is
damaged one field at a time (a value replaced by another type, a huge or negative number, NaN, a
tensor of another shape or dtype, a key removed or added) or byte by byte, and the run resumed
in this process under an alarm.
"""

import json
import math
import random
import shutil
import signal

import pytest
import torch
from testkit import TINY_MODEL, needs_fashion_mnist, write_fashion_sample

from peftlab.config.schema import load_config
from peftlab.training.checkpoint import CHECKPOINT_NAME
from peftlab.training.run import train
from peftlab.utils.errors import CheckpointError

pytestmark = [needs_fashion_mnist(), pytest.mark.e2e]

CFG = {
    "model": TINY_MODEL,
    "method": {"name": "lora", "r": 2},
    "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 16, "test_subset": 16},
    "train": {"max_steps": 6, "batch_size": 16, "ckpt_every": 2, "log_every": 1},
}


class Stop(Exception):
    pass


@pytest.fixture(scope="module", autouse=True)
def fashion_sample(tmp_path_factory):
    """CFG's runs read their subsets from the installed Fashion-MNIST's first images, in files of their own
    (``testkit.write_fashion_sample``): every resume reads and hashes its data files whole."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(CFG["data"], "root", str(write_fashion_sample(tmp_path_factory.mktemp("fashion"))))
        yield


class Hang(Exception):
    pass


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run directory whose run stopped after step 3 (its checkpoint holds step 2)."""
    import peftlab.training.recipe as recipe

    run_dir = tmp_path_factory.mktemp("fuzz") / "run"
    original = recipe.training_step

    def stop_at_step_3(*args, step, **kwargs):
        if step == 3:
            raise Stop()
        return original(*args, step=step, **kwargs)

    recipe.training_step = stop_at_step_3
    try:
        with pytest.raises(Stop):
            train(load_config(overrides=CFG), run_dir, progress=False)
    finally:
        recipe.training_step = original
    return run_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run's result."""
    return train(load_config(overrides=CFG), tmp_path_factory.mktemp("fuzz") / "straight", progress=False)


def leaves(state, path=()):
    """(path, value) of every leaf of the nested checkpoint (dicts, lists, tuples)."""
    if isinstance(state, dict):
        for key, value in state.items():
            yield from leaves(value, path + (key,))
    elif isinstance(state, (list, tuple)) and len(state) < 64:
        for i, value in enumerate(state):
            yield from leaves(value, path + (i,))
    else:
        yield path, state


def replaced(state, path, value):
    """``state`` with the leaf at ``path`` replaced (``...``: removed)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(state, dict):
        out = dict(state)
        if rest or value is not ...:
            out[head] = replaced(state[head], rest, value)
        else:
            del out[head]
        return out
    out = list(state)
    out[head] = replaced(state[head], rest, None if value is ... else value)
    return type(state)(out) if isinstance(state, tuple) else out


def hostile(rng: random.Random, value):
    """A value a damaged or hand-edited checkpoint could hold instead of ``value``."""
    choices = [None, "x", -1, 10**12, math.nan, -math.inf, [], {}, True, ...]
    if isinstance(value, torch.Tensor):
        choices += [
            value.double(),
            value.to(torch.int64) if value.is_floating_point() else value.float(),
            torch.full_like(value, math.nan, dtype=torch.float32),
            value.flatten()[:1].clone(),
            torch.zeros(3, 5),
            -value.float().abs() - 1,
            value.bool(),
        ]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        choices += [value + 10**6, -value - 1, float(value) * 1e300]
    return rng.choice(choices)


def resume(run_dir) -> dict:
    """The resumed run's result; a refused checkpoint raises CheckpointError (the CLI's one line)
    after the run is recorded failed, so its result.json is returned then."""

    def alarm(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(120)
    try:
        return train(load_config(overrides=CFG), run_dir, progress=False)
    except CheckpointError as err:
        assert "\n" not in str(err) and len(str(err)) < 1200, str(err)
        return json.loads((run_dir / "result.json").read_text())
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def assert_refused_or_resumed(result: dict, reference: dict, what: str) -> None:
    assert result["status"] in ("completed", "failed", "diverged"), what
    if result["status"] == "completed":
        assert result["step"] == reference["step"], what
    elif result["status"] == "failed":
        assert result.get("checkpoint_unusable"), (what, result["error"])


def test_fuzzed_checkpoint_fields_are_refused_in_one_line_or_resume(interrupted, reference, tmp_path):
    rng = random.Random(2611)
    state = torch.load(interrupted / "checkpoint" / CHECKPOINT_NAME, weights_only=True)
    paths = [path for path, _ in leaves(state)]
    outcomes = {}
    for case in range(24):
        path = rng.choice(paths)
        value = hostile(rng, dict(leaves(state))[path])
        run_dir = tmp_path / f"case{case}"
        shutil.copytree(interrupted, run_dir)
        torch.save(replaced(state, path, value), run_dir / "checkpoint" / CHECKPOINT_NAME)
        what = f"{'/'.join(map(str, path))} = {str(value)[:60]}"
        result = resume(run_dir)
        assert_refused_or_resumed(result, reference, what)
        outcome = result["status"]
        if outcome == "completed" and result["metrics"] != reference["metrics"]:
            outcome = "completed differently"
        outcomes.setdefault(outcome, []).append(what)
    assert len(outcomes.get("failed", [])) >= 8, outcomes  # most damage is detected, not trained through
    # no silent garbage: what resumed, resumed to the uninterrupted run's numbers (an integer weight or
    # a flipped `maximize` flag used to be cast or taken and train to other numbers)
    assert not outcomes.get("completed differently"), outcomes


def test_checkpoint_files_with_flipped_bytes_are_refused_in_one_line_or_resume(interrupted, reference, tmp_path):
    rng = random.Random(2612)
    original = (interrupted / "checkpoint" / CHECKPOINT_NAME).read_bytes()
    for case in range(8):
        data = bytearray(original)
        for _ in range(rng.choice([1, 8, 64])):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        run_dir = tmp_path / f"case{case}"
        shutil.copytree(interrupted, run_dir)
        (run_dir / "checkpoint" / CHECKPOINT_NAME).write_bytes(bytes(data))
        assert_refused_or_resumed(resume(run_dir), reference, f"bytes case {case}")


@pytest.mark.parametrize("lie", ["base_lrs", "_last_lr", "lr"])
def test_learning_rates_that_do_not_follow_from_the_schedule_are_refused(interrupted, tmp_path, lie):
    """A rate edited tenfold (the scheduler's base rates, its last rate, a group's rate) trained on at
    that rate and ended "completed" with other weights."""
    state = torch.load(interrupted / "checkpoint" / CHECKPOINT_NAME, weights_only=True)
    if lie == "lr":
        for group in state["optimizer"]["param_groups"]:
            group["lr"] *= 10
    else:
        state["scheduler"][lie] = [rate * 10 for rate in state["scheduler"][lie]]
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted, run_dir)
    torch.save(state, run_dir / "checkpoint" / CHECKPOINT_NAME)
    result = resume(run_dir)
    assert result["status"] == "failed" and result.get("checkpoint_unusable"), result
    assert "this run's schedule at step 2" in result["error"], result["error"]
