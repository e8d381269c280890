"""``peftlab export --merged``'s header states the run's own preprocessing (data.normalize's mean and std,
the resize and its interpolation, no crop): plain timm, built from the header's arguments and fed test
images made by the header's record alone (testkit.header_images), scores what result.json reports."""

import filecmp
import json
import sys

import pytest
import timm
from safetensors import safe_open
from safetensors.torch import load_file
from testkit import REPO, TINY_MODEL, assert_one_line_refusal, command_in_process, header_accuracy

import peftlab
from peftlab.cli import main
from peftlab.config.schema import config_hash, load_config
from peftlab.training.run import train
from peftlab.utils.errors import UserError

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
    assert accuracy == result["metrics"]["test_top1"]
    assert result["metrics"]["merged_test_top1"] is None  # an exact merge, checked on a batch (train.merged_test)


def test_two_identical_runs_export_the_same_bytes_and_never_over_another_runs_export(tmp_path):
    """safetensors writes a header's metadata in a Rust HashMap's order, which changes from call to call: peftlab
    sorts it, so two identical runs (in one process, as in two) write and export the same bytes. An export writes
    over its own run's export, and over another run's only with --replace, the refusal naming whose it was."""
    write_vtab1k(tmp_path / "vtab", ["eurosat"], per_class=1)
    overrides = {
        "model": TINY_MODEL,
        "method": {"name": "lora", "r": 2},
        "data": {"name": "vtab1k/eurosat", "root": str(tmp_path / "vtab")},
        "train": {"max_steps": 1, "batch_size": 4},
    }
    for name in ("a", "b"):
        assert train(load_config(overrides=overrides), tmp_path / name, progress=False)["status"] == "completed"
        assert main(["export", str(tmp_path / name), "--merged", str(tmp_path / f"{name}.safetensors")]) == 0
        assert main(["export", str(tmp_path / name), "--peft", str(tmp_path / f"{name}-peft")]) == 0
    for a, b in [
        ("a/adapter.safetensors", "b/adapter.safetensors"),
        ("a/adapter_model.safetensors", "b/adapter_model.safetensors"),
        ("a-peft/adapter_model.safetensors", "b-peft/adapter_model.safetensors"),
        ("a-peft/adapter_config.json", "b-peft/adapter_config.json"),
        ("a.safetensors", "b.safetensors"),
    ]:
        assert filecmp.cmp(tmp_path / a, tmp_path / b, shallow=False), (a, b)
    run = config_hash(load_config(tmp_path / "a" / "config.yaml"))
    with safe_open(str(tmp_path / "a-peft" / "adapter_model.safetensors"), "pt") as f:
        assert f.metadata()["peftlab_run"] == run
    assert main(["export", str(tmp_path / "b"), "--peft", str(tmp_path / "a-peft")]) == 0  # the same run's
    assert main(["export", str(tmp_path / "b"), "--peft", str(tmp_path / "a")]) == 0  # its own adapter, again

    # another run: b with another seed (the adapter's shapes are the seed's alike)
    config = tmp_path / "b" / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0", "seed: 1"))
    other = config_hash(load_config(config))
    before = {path: path.read_bytes() for path in tmp_path.glob("a*/*.*") if path.is_file()}
    before[tmp_path / "a.safetensors"] = (tmp_path / "a.safetensors").read_bytes()
    for flag, out in [("--peft", "a-peft"), ("--peft", "a"), ("--merged", "a.safetensors")]:
        status, stderr = command_in_process("export", str(tmp_path / "b"), flag, str(tmp_path / out))
        assert_one_line_refusal(status, stderr, f"holds run {run}'s export", f"not run {other}'s", "--replace")
    (tmp_path / "foreign.safetensors").write_bytes(b"not mine")
    status, stderr = command_in_process(
        "export", str(tmp_path / "b"), "--merged", str(tmp_path / "foreign.safetensors")
    )
    assert_one_line_refusal(status, stderr, "exists with no peftlab run recorded", "--replace")
    assert before == {path: path.read_bytes() for path in before}  # nothing written over
    with pytest.raises(UserError, match=f"holds run {run}'s export .*give replace=True to write over it"):
        peftlab.export(tmp_path / "b", peft=tmp_path / "a-peft")
    assert peftlab.export(tmp_path / "b", peft=tmp_path / "a-peft", replace=True) == tmp_path / "a-peft"
    assert main(["export", str(tmp_path / "b"), "--merged", str(tmp_path / "a.safetensors"), "--replace"]) == 0
    for out in ("a-peft/adapter_model.safetensors", "a.safetensors"):
        with safe_open(str(tmp_path / out), "pt") as f:
            assert f.metadata()["peftlab_run"] == other
