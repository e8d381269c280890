"""Protocol presets (the top-level config key ``protocol``) and the protocol record of a run."""

import pytest
from testkit import REPO

from peftlab.config.protocol import PRESETS, protocol_card
from peftlab.config.schema import config_hash, load_config
from peftlab.utils.errors import ConfigError


def test_a_preset_sets_its_values_and_refuses_a_config_that_sets_one_otherwise():
    cfg = load_config(None, ["protocol=petl_vision", "data.name=vtab1k/dtd"])
    for dotted, value in PRESETS["petl_vision"].items():
        section, _, name = dotted.partition(".")
        assert getattr(getattr(cfg, section), name) == value, dotted
    assert cfg.data.interpolation == "bicubic" and cfg.data.normalize == "none" and cfg.train.epochs == 100
    with pytest.raises(ConfigError) as err:
        load_config(None, ["protocol=petl_vision", "data.name=vtab1k/dtd", "data.normalize=model"])
    assert str(err.value) == (
        "data.normalize='model' is invalid: expected 'none', the value of protocol petl_vision (or protocol: none)"
    )
    # a key the preset leaves alone is the config's own
    assert load_config(None, ["protocol=petl_vision", "train.lr=0.01"]).train.lr == 0.01


def test_vpetl_bench_smooths_labels_on_its_augmented_tasks_only():
    smoothing = {
        task: load_config(None, ["protocol=vpetl_bench", f"data.name=vtab1k/{task}"]).train.label_smoothing
        for task in ("dtd", "svhn", "cifar", "dsprites_loc")
    }
    assert smoothing == {"dtd": 0.1, "svhn": 0.1, "cifar": 0.0, "dsprites_loc": 0.0}
    assert load_config(None, ["protocol=vpetl_bench"]).data.normalize == "imagenet"


def test_the_new_keys_at_their_defaults_keep_run_ids():
    cfg = load_config(REPO / "configs" / "downstream.yaml")
    assert config_hash(cfg) == "817ef5e4015b"  # as before the protocol keys existed
    assert (
        config_hash(load_config(REPO / "configs" / "downstream.yaml", ["data.interpolation=bicubic"])) != "817ef5e4015b"
    )


def test_the_protocol_record_names_the_splits_and_counts_the_head_apart():
    cfg = load_config(None, ["protocol=petl_vision", "data.name=vtab1k/dtd"])
    sources = {"train": "/d/dtd/train800.txt", "val": "/d/dtd/val200.txt", "test": "/d/dtd/test.txt"}
    card = protocol_card(cfg, sources, 224, (0.5,) * 3, (0.5,) * 3, {"trainable": 1000, "head": 40})
    assert card["normalization"] == "none: pixels in [0, 1]" and card["interpolation"] == "bicubic, antialiased"
    assert card["trainable_without_head"] == 960 and card["selection_split"].endswith("val200.txt")
    assert card["test_split"].endswith("test.txt") and card["drop_path"] == 0.1 and card["label_smoothing"] == 0.0


def test_the_protocol_record_holds_the_length_that_ran():
    """Epochs only where they bounded the run; where train.max_steps stopped it first, the steps and that bound."""
    cfg = load_config(None, ["protocol=petl_vision", "data.name=vtab1k/dtd", "train.max_steps=40"])
    sources = {"train": "train800.txt", "val": "val200.txt", "test": "test.txt"}
    cut = protocol_card(cfg, sources, 224, (0.5,) * 3, (0.5,) * 3, {"trainable": 1000}, steps=40, epochs_bound=False)
    assert (cut["epochs"], cut["max_steps"], cut["steps"]) == (None, 40, 40)
    full = protocol_card(cfg, sources, 224, (0.5,) * 3, (0.5,) * 3, {"trainable": 1000}, steps=1600)
    assert (full["epochs"], full["max_steps"], full["steps"]) == (100, None, 1600)


def test_epochs_bound_a_run_unless_max_steps_comes_first():
    from types import SimpleNamespace

    from peftlab.training.outcome import epochs_bound

    train = SimpleNamespace(epochs=100, grad_accum=1, max_steps=None)
    assert epochs_bound(train, batches_per_epoch=16)
    assert not epochs_bound(SimpleNamespace(**{**vars(train), "max_steps": 40}), batches_per_epoch=16)
    assert epochs_bound(SimpleNamespace(**{**vars(train), "max_steps": 1600}), batches_per_epoch=16)
    assert epochs_bound(SimpleNamespace(epochs=2, grad_accum=2, max_steps=8), batches_per_epoch=8)  # 4 steps an epoch
