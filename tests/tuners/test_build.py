"""The model's one entrance (peftlab.tuners.build.build_tuned): the recipe's build, in its order."""

import pytest
import torch
from testkit import TINY_MODEL

from peftlab.config.schema import load_config
from peftlab.quant.load import build_base
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.tuners.build import build_tuned
from peftlab.utils.errors import ConfigError
from peftlab.utils.seed import seed_everything

NUM_CLASSES = 5


def tiny(seed: int = 0):
    return load_config(overrides={"seed": seed, "model": TINY_MODEL, "method": {"name": "lora", "r": 4}})


def built(cfg, **options):
    return build_tuned(cfg.model, cfg.method, NUM_CLASSES, TunerContext.for_checks(cfg), seed=cfg.seed, **options)


def test_it_builds_what_the_seed_the_base_and_the_tuner_build_in_that_order():
    """Its random draws are the sequence the recipe made before it had one entrance: a random base
    and LoRA's initialisation, the same tensors, and no weights file in the base's record."""
    cfg = tiny(seed=3)
    torch.manual_seed(99)  # whatever came before: the seed is set inside
    tuner, base = built(cfg)
    seed_everything(cfg.seed)
    expected = apply_tuner(
        build_base(cfg.model, cfg.quant, cfg.method, NUM_CLASSES), cfg.method, TunerContext.for_checks(cfg)
    )
    ours, theirs = tuner.model.state_dict(), expected.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert base["base_sha256"] is None  # a random base: no file
    other, _ = built(tiny(seed=4))
    assert not torch.equal(next(iter(other.model.state_dict().values())), next(iter(ours.values())))


def test_after_check_runs_once_after_the_size_check_and_not_when_it_refuses(monkeypatch):
    calls = []
    built(tiny(), after_check=lambda: calls.append("checked"))
    assert len(calls) == 1

    def refuse(*args):
        raise ConfigError("too large")

    monkeypatch.setattr("peftlab.tuners.build.check_model_size", refuse)
    with pytest.raises(ConfigError, match="too large"):
        built(tiny(), after_check=lambda: calls.append("checked"))
    assert len(calls) == 1  # a refusal builds nothing and takes no baseline
