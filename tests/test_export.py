"""``peftlab export --merged``'s header states the run's own preprocessing (data.normalize's mean and std,
the resize and its interpolation, no crop): plain timm, built from the header's arguments and fed test
images made by the header's record alone (testkit.header_images), scores what result.json reports."""

import json
import sys

import pytest
import timm
from safetensors import safe_open
from safetensors.torch import load_file
from testkit import REPO, TINY_MODEL, header_accuracy

from peftlab.cli import main
from peftlab.config.schema import load_config
from peftlab.training.run import train

sys.path.insert(0, str(REPO / "tests" / "data"))
from suitefiles import write_vtab1k

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "protocol, normalize, interpolation",
    [("petl_vision", "none", "bicubic"), ("vpetl_bench", "imagenet", "bilinear"), ("none", "model", "bilinear")],
)
def test_a_merged_export_evaluated_with_its_headers_preprocessing_scores_what_the_run_did(
    tmp_path, protocol, normalize, interpolation
):
    written = write_vtab1k(tmp_path / "vtab", ["eurosat"], per_class=2)["eurosat"]
    cfg = load_config(
        overrides={
            "protocol": protocol,
            "model": TINY_MODEL,
            "method": {"name": "lora", "r": 2},
            "data": {"name": "vtab1k/eurosat", "root": str(tmp_path / "vtab")},
            "train": {"max_steps": 3, "lr": 1e-2},  # a protocol's batch of 64 holds the 20 training images
        }
    )
    assert (cfg.data.normalize, cfg.data.interpolation) == (normalize, interpolation)
    run_dir, out = tmp_path / "run", tmp_path / "merged.safetensors"
    result = train(cfg, run_dir, progress=False)
    assert result["status"] == "completed", result["error"]
    # the protocol card records what ran: a preset's run stopped by train.max_steps at 3 steps, not its 100
    # epochs; without a preset the configured epochs end the run first (one step each for 20 images)
    card = result["protocol"]
    length = (3, 3, None) if protocol != "none" else (result["step"], None, cfg.train.epochs)
    assert (card["steps"], card["max_steps"], card["epochs"]) == length
    assert main(["export", str(run_dir), "--merged", str(out)]) == 0
    with safe_open(str(out), "pt") as f:
        header = f.metadata()
    preprocessing = json.loads(header["preprocessing"])
    assert header["interpolation"] == preprocessing["interpolation"] == interpolation
    assert json.loads(header["mean"]) == preprocessing["mean"] and preprocessing["normalize"] == normalize
    if normalize == "none":
        assert preprocessing["mean"] == [0.0] * 3 and preprocessing["std"] == [1.0] * 3
    assert preprocessing["resize"] == json.loads(header["input_size"])[1:] == [32, 32]
    plain = timm.create_model(header["timm_model"], **json.loads(header["timm_kwargs"]))
    plain.load_state_dict(load_file(str(out)))
    paths, labels = zip(*[(written.image_dir / path, label) for path, label in written.splits["test"]])
    accuracy = header_accuracy(plain, list(paths), list(labels), preprocessing)
    assert accuracy == result["metrics"]["merged_test_top1"] == result["metrics"]["test_top1"]
