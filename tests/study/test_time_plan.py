"""``peftlab study --dry-run --time-steps`` (issue 61 item 4): a study's time from a measured training
step of each distinct configuration, multiplied out over every run and trial."""

import yaml
from testkit import TINY_MODEL, cli_here

from peftlab.bench.plan import run_seconds, step_key, time_plan, time_step
from peftlab.config.schema import load_config

BASE = {
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 16},
    "train": {"epochs": 2, "batch_size": 16, "eval_batch_size": 16, "device": "cpu", "threads": 1},
}


def config(method: str, **train):
    return load_config(overrides={**BASE, "method": {"name": method}, "train": {**BASE["train"], **train}})


def test_each_distinct_step_is_timed_once_and_every_run_counts_it():
    configs = [config("lora"), config("lora"), config("full"), config("lora", lr=0.5)]  # lr: the same step
    timed = []

    def measure(cfg):
        timed.append(cfg.method.name)
        return {"lora": 0.1, "full": 0.3}[cfg.method.name]

    lines = time_plan(configs, measure=measure, progress=lambda text: None)
    assert timed == ["lora", "full"]
    # 64 images / 16 = 4 steps x 2 epochs, and 16 validation images x 2 epochs at a third of a step per image
    lora = 8 * 0.1 + 16 * 2 * 0.1 / 3 / 16
    assert run_seconds(configs[0], 0.1) == lora
    full = 8 * 0.3 + 16 * 2 * 0.3 / 3 / 16
    assert f"about {3 * lora + full:.1f} s" in lines[0] and "in 4 runs and trials" in lines[0]
    assert "100.0 ms a step (3 runs and trials)" in lines[1] and "300.0 ms a step (1 runs and trials)" in lines[2]
    assert step_key(config("lora", batch_size=8)) != step_key(configs[0])


def test_a_step_that_cannot_be_timed_is_said_and_left_out():
    def measure(cfg):
        raise RuntimeError("CUDA out of memory.\nmore")

    lines = time_plan([config("lora")], measure=measure, progress=lambda text: None)
    assert "not timed (RuntimeError: CUDA out of memory.)" in lines[1]
    assert "1 runs of unknown size or untimed step not counted" in lines[0]


def test_the_dry_run_times_the_study_s_own_steps(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    study = {"name": "s", "base": "base.yaml", "seeds": 2, "methods": {"lora": {}, "full": {}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    args = ("study", str(tmp_path / "study.yaml"), "--study-dir", str(tmp_path / "out"))
    proc = cli_here(*args, "--dry-run", "--time-steps", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "measured time: about" in proc.stdout and "in 4 runs and trials" in proc.stdout
    assert proc.stdout.count("ms a step (2 runs and trials)") == 2
    refused = cli_here(*args, "--time-steps")
    assert refused.returncode != 0 and "--time-steps times a study's steps for --dry-run" in refused.stderr
    assert not (tmp_path / "out" / "runs").exists()


def test_a_protocol_s_step_is_timed_as_its_runs_train():
    """A run under protocol petl_vision keeps its own clip_grad (none) and batch size (64): the bench's
    clip of 1.0 made every step of configs/studies/vtab1k.yaml "not timed" (a ConfigError)."""
    cfg = load_config(
        overrides={
            "model": TINY_MODEL,
            "protocol": "petl_vision",
            "method": {"name": "lora"},
            "train": {"device": "cpu"},
        }
    )
    assert cfg.train.clip_grad is None and cfg.train.batch_size == 64
    lines = time_plan([cfg], measure=lambda c: time_step(c, steps=1), progress=lambda text: None)
    assert "ms a step (1 runs and trials)" in lines[1], lines
