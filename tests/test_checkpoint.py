"""A checkpoint that cannot be resumed from is one CheckpointError line, and nothing in it runs."""

import os
import pickle

import pytest
import torch
from testkit import TINY_MODEL, needs_fashion_mnist

from peftlab.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, rng_state, save_checkpoint
from peftlab.utils.errors import CheckpointError


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def valid_state() -> dict:
    return {
        "trainable": {"w": torch.ones(2, 2)},
        "tuner": {},
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {},
        "scaler": {},
        "rng": rng_state(),
        "step": 4,
        "epoch": 0,
        "next_batch": 4,
        "bad_epochs": 0,
        "images_seen": 128,
        "best_val": -1.0,
        "train_seconds": 1.5,
        "log_lines": {},
    }


def test_a_valid_checkpoint_loads_and_a_missing_one_is_none(tmp_path):
    save_checkpoint(tmp_path, valid_state())
    assert load_checkpoint(tmp_path)["step"] == 4
    assert load_checkpoint(tmp_path / "none") is None


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("malicious-pickle", "cannot be loaded"),
        ("malicious-torch-save", "cannot be loaded"),
        ("empty", "cannot be loaded"),
        ("truncated", "cannot be loaded"),
        ("garbage", "cannot be loaded"),
        ("not-a-mapping", "holds a list"),
        ("string-step", "'step' is str"),
        ("missing-optimizer", "'optimizer' is NoneType"),
        ("negative-epoch", "negative"),
        ("nan-weights", "'w' is not a finite floating-point tensor"),
    ],
)
def test_an_unusable_checkpoint_is_one_line_and_runs_nothing(tmp_path, damage, needle):
    marker = tmp_path / "pwned"
    path = tmp_path / CHECKPOINT_NAME
    state = valid_state()
    if damage == "malicious-pickle":
        path.write_bytes(pickle.dumps(Payload(str(marker))))
    elif damage == "malicious-torch-save":
        torch.save({"step": Payload(str(marker))}, path)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        save_checkpoint(tmp_path, state)
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "not-a-mapping":
        torch.save([1, 2], path)
    else:
        if damage == "string-step":
            state["step"] = "4"
        elif damage == "missing-optimizer":
            del state["optimizer"]
        elif damage == "negative-epoch":
            state["epoch"] = -1
        elif damage == "nan-weights":
            state["trainable"]["w"][0, 0] = float("nan")
        save_checkpoint(tmp_path, state)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    message = str(err.value)
    assert "\n" not in message and needle in message and str(path) in message, message
    assert "move it aside" in message
    assert not marker.exists()


def test_a_methods_saved_state_moves_to_the_training_device_whole():
    """Resuming on a GPU: every tensor of a method's nested state goes to the model's device."""
    from peftlab.training.checkpoint import to_device

    state = {
        "masks": {"q": torch.ones(3, dtype=torch.bool)},
        "sens": {"q": [torch.zeros(2), torch.zeros(2)]},
        "pair": (torch.ones(1), 0.5),
        "history": [{"step": 3, "rank": 2}],
        "budget": 8,
    }
    moved = to_device(state, torch.device("meta"))
    assert moved["masks"]["q"].is_meta and all(t.is_meta for t in moved["sens"]["q"])
    assert moved["pair"][0].is_meta and moved["pair"][1] == 0.5 and isinstance(moved["pair"], tuple)
    assert moved["history"] == state["history"] and moved["budget"] == 8


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("val_seconds-a-string", "'val_seconds' is str"),
        ("log_lines-a-list", "'log_lines' is list"),
        ("log_lines-negative", "'log_lines' is not a mapping of file names to line counts"),
        ("nan-best_val", "'best_val' is nan"),
        ("best_val-above-1", "'best_val' is 5.0"),
        ("negative-seconds", "'train_seconds' is -1.0"),
        ("inf-seconds", "'train_seconds' is inf"),
        ("rng-keys-a-list", "'numpy' keys"),
        ("rng-python-garbage", "'python'"),
        ("rng-torch-floats", "'torch' or 'cuda'"),
        ("last.pt-a-directory", "not a regular file"),
    ],
)
def test_a_checkpoint_field_of_the_wrong_type_or_range_is_one_line(tmp_path, damage, needle):
    path = tmp_path / CHECKPOINT_NAME
    state = valid_state()
    key, _, what = damage.partition("-")
    if damage == "last.pt-a-directory":
        path.mkdir()
    else:
        state.update(
            {
                "val_seconds-a-string": {"val_seconds": "2.0"},
                "log_lines-a-list": {"log_lines": ["metrics.jsonl"]},
                "log_lines-negative": {"log_lines": {"metrics.jsonl": -3}},
                "nan-best_val": {"best_val": float("nan")},
                "best_val-above-1": {"best_val": 5.0},
                "negative-seconds": {"train_seconds": -1.0},
                "inf-seconds": {"train_seconds": float("inf")},
            }.get(damage, {})
        )
        if damage == "rng-keys-a-list":
            state["rng"]["numpy"]["keys"] = state["rng"]["numpy"]["keys"].tolist()
        elif damage == "rng-python-garbage":
            state["rng"]["python"] = (3, (1, 2), None)
        elif damage == "rng-torch-floats":
            state["rng"]["torch"] = torch.zeros(5056)
        save_checkpoint(tmp_path, state)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    message = str(err.value)
    assert "\n" not in message and needle in message and str(path) in message, message


# a run of 2 epochs of 6 batches, one batch a step: 12 steps; the checkpoint of step 4 (epoch 0)
BOUNDS = {"total_steps": 12, "epochs": 2, "batches_per_epoch": 6, "grad_accum": 1, "batch_size": 32}


def live_run():
    """A run's optimizer, schedule and scaler, as the recipe builds them (one weight and one head group)."""
    params = [torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.ones(3))]
    optimizer = torch.optim.AdamW([{"params": [params[0]]}, {"params": [params[1]], "lr": 1e-2}], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return params, optimizer, scheduler, scaler


def resumable_state(steps: int = 4) -> dict:
    params, optimizer, scheduler, scaler = live_run()
    for _ in range(steps):
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
        scheduler.step()
    return {
        **valid_state(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "step": steps,
        "epoch": 0,
        "next_batch": steps,
        "images_seen": 32 * steps,
    }


def fits(state: dict, directory) -> None:
    from peftlab.training.checkpoint import check_fits

    _, optimizer, scheduler, scaler = live_run()
    check_fits(state, directory, **BOUNDS, optimizer=optimizer, scheduler=scheduler, scaler=scaler)


def test_a_checkpoint_that_fits_its_run_passes(tmp_path):
    fits(resumable_state(), tmp_path)
    at_the_end = resumable_state(12)
    fits({**at_the_end, "epoch": 2, "next_batch": 0, "bad_epochs": 1}, tmp_path)  # both epochs done
    fits({**at_the_end, "epoch": 1, "next_batch": 6}, tmp_path)  # the last step taken, its epoch record owed


def lie(state: dict, damage: str) -> dict:
    optimizer, scheduler = state["optimizer"], state["scheduler"]
    first = optimizer["state"][0]
    changes = {
        "step-1e9": {"step": 10**9},
        "epoch-out-of-range": {"epoch": 3},
        "next_batch-out-of-range": {"next_batch": 7},
        "step-does-not-follow": {"step": 2, "images_seen": 64},
        "images_seen-too-many": {"images_seen": 10**6},
        "bad_epochs-beyond-epoch": {"bad_epochs": 1},
        "lr-a-string": {
            "optimizer": {
                **optimizer,
                "param_groups": [{**optimizer["param_groups"][0], "lr": "0.1"}, optimizer["param_groups"][1]],
            }
        },
        "lr-nan": {
            "optimizer": {
                **optimizer,
                "param_groups": [{**optimizer["param_groups"][0], "lr": float("nan")}, optimizer["param_groups"][1]],
            }
        },
        "exp_avg-wrong-shape": {
            "optimizer": {**optimizer, "state": {**optimizer["state"], 0: {**first, "exp_avg": torch.zeros(3, 2)}}}
        },
        "exp_avg_sq-negative": {
            "optimizer": {**optimizer, "state": {**optimizer["state"], 0: {**first, "exp_avg_sq": -torch.ones(2, 3)}}}
        },
        "adam-step-ahead": {
            "optimizer": {**optimizer, "state": {**optimizer["state"], 0: {**first, "step": torch.tensor(1e9)}}}
        },
        "state-of-no-parameter": {"optimizer": {**optimizer, "state": {**optimizer["state"], 7: first}}},
        "one-group": {"optimizer": {**optimizer, "param_groups": optimizer["param_groups"][:1]}},
        "scheduler-foreign-key": {"scheduler": {**scheduler, "lr_lambdas": [None, None], "evil": 1}},
        "scheduler-base_lrs-a-string": {"scheduler": {**scheduler, "base_lrs": "0.1"}},
        "scheduler-behind": {"scheduler": {**scheduler, "last_epoch": 1}},
        "scaler-of-another-run": {"scaler": {"scale": 65536.0}},
    }
    return {**state, **changes[damage]}


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("step-1e9", "'step' is 1000000000, beyond this run's 12"),
        ("epoch-out-of-range", "'epoch' is 3, beyond this run's 2"),
        ("next_batch-out-of-range", "'next_batch' is 7, beyond this run's 6"),
        ("step-does-not-follow", "'step' 2 does not follow from epoch 0 and next_batch 4"),
        ("images_seen-too-many", "'images_seen' is 1000000"),
        ("bad_epochs-beyond-epoch", "'bad_epochs' is 1, beyond this run's 0"),
        ("lr-a-string", "optimizer group 0.lr is '0.1'"),
        ("lr-nan", "optimizer group 0.lr is 'nan'"),
        ("exp_avg-wrong-shape", "has shape (3, 2), the parameter (2, 3)"),
        ("exp_avg_sq-negative", "negative values"),
        ("adam-step-ahead", "'step' of parameter 0 is 1000000000.0"),
        ("state-of-no-parameter", "belongs to no parameter"),
        ("one-group", "1 parameter groups, this run 2"),
        ("scheduler-foreign-key", "foreign key 'evil'"),
        ("scheduler-base_lrs-a-string", "scheduler.base_lrs is not a list of 2"),
        ("scheduler-behind", "the scheduler is at step 1, the run at 4"),
        ("scaler-of-another-run", "scaler has the foreign key 'scale'"),
    ],
)
def test_a_checkpoint_whose_counters_or_states_lie_does_not_fit_its_run(tmp_path, damage, needle):
    save_checkpoint(tmp_path, lie(resumable_state(), damage))
    state = load_checkpoint(tmp_path)  # the types are right: only the run can tell
    with pytest.raises(CheckpointError) as err:
        fits(state, tmp_path)
    message = str(err.value)
    assert "\n" not in message and needle in message and str(tmp_path / CHECKPOINT_NAME) in message, message


@needs_fashion_mnist()
def test_a_run_resumed_from_a_checkpoint_whose_counters_lie_fails_with_one_line(tmp_path):
    """Before, `step: 10**9` ended the run "completed" with untrained weights and wrong results."""
    from peftlab.config.schema import load_config
    from peftlab.training.run import train

    cfg = load_config(
        overrides={
            "model": TINY_MODEL,
            "method": {"name": "lora", "r": 4},
            "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32},
            "train": {"epochs": 1, "batch_size": 32, "ckpt_every": 1, "threads": 1},
        }
    )
    run_dir = tmp_path / "run"
    assert train(cfg, run_dir, progress=False)["status"] == "completed"
    (run_dir / "result.json").unlink()
    state = load_checkpoint(run_dir / "checkpoint")
    save_checkpoint(run_dir / "checkpoint", {**state, "step": 10**9})
    with pytest.raises(CheckpointError, match="'step' is 1000000000, beyond this run's 2"):
        train(cfg, run_dir, progress=False)
