"""W&B follows its own environment variables (issue 72): ``WANDB_MODE`` and ``WANDB_PROJECT`` take effect as W&B
documents them; offline into the run directory and the study as the project stay the default when neither is set.
``wandb.init`` reads them only where it is not given the value, so what peftlab passes decides."""

import pytest

pytest.importorskip("wandb")

from peftlab.training.tracking import wandb_sink

INFO = {"resuming": False, "run_id": "abc123", "study": "mystudy", "variant": "lora", "seed": 0, "method": "lora"}


@pytest.fixture
def init_kwargs(monkeypatch):
    import wandb

    seen = {}

    def fake_init(**kwargs):
        seen.update(kwargs)
        return object()

    monkeypatch.setattr(wandb, "init", fake_init)
    return seen


@pytest.mark.parametrize(
    "env, mode, project",
    [
        ({}, "offline", "mystudy"),
        ({"WANDB_MODE": "online"}, None, "mystudy"),
        ({"WANDB_MODE": "disabled", "WANDB_PROJECT": "theirs"}, None, None),
        ({"WANDB_PROJECT": "theirs"}, "offline", None),
    ],
)
def test_wandb_takes_its_mode_and_project_from_its_environment(tmp_path, monkeypatch, init_kwargs, env, mode, project):
    for name in ("WANDB_MODE", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    wandb_sink.WandbSink(tmp_path, INFO, {})
    assert (init_kwargs["mode"], init_kwargs["project"]) == (mode, project)
