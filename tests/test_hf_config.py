"""An HF model directory's config.json is held to the bounds of ``model.*`` and to the meta-device
size check: out of bounds is one line naming the file and the key, before any model is built."""

import json
import shutil

import pytest
import yaml
from testkit import assert_one_line_refusal, cli_in_process, needs_fashion_mnist

from peftlab.config.checks import MAX_DEPTH, MAX_EMBED_DIM, MAX_IMG_SIZE

CPU_SECONDS = 60  # each refusal takes about a CPU second in process; a spin or a hang runs past it
RSS_GROWTH = 2**30


def hf_copy(hf_dir, tmp_path, **changes):
    """The tiny HF ViT of ``hf_dir`` with ``changes`` to its config.json (None: the key removed)."""
    model_dir = tmp_path / "vit"
    shutil.copytree(hf_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config.update(changes)
    (model_dir / "config.json").write_text(json.dumps(config))
    return model_dir


def run_config(tmp_path, model_dir) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"source": "hf", "path": str(model_dir)},
                "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32},
                "train": {"max_steps": 2, "batch_size": 16},
            }
        )
    )
    return str(path)


OUT_OF_BOUNDS = [
    ({"num_hidden_layers": 100000}, f"num_hidden_layers=100000 is invalid: expected an integer in [1, {MAX_DEPTH}]"),
    ({"num_hidden_layers": 2**31 - 1}, "num_hidden_layers=2147483647 is invalid"),
    ({"num_hidden_layers": 0}, "num_hidden_layers=0 is invalid"),
    ({"num_hidden_layers": "12"}, "num_hidden_layers='12' is invalid"),
    ({"num_hidden_layers": True}, "num_hidden_layers=True is invalid"),
    ({"hidden_size": MAX_EMBED_DIM + 2}, f"hidden_size=65538 is invalid: expected an integer in [1, {MAX_EMBED_DIM}]"),
    ({"num_attention_heads": 3}, "num_attention_heads=3 is invalid: expected a divisor of hidden_size=64"),
    ({"intermediate_size": 10**9}, "intermediate_size=1000000000 is invalid"),
    ({"image_size": MAX_IMG_SIZE + 8}, "image_size=8200 is invalid"),
    ({"patch_size": 3}, "patch_size=3 is invalid: expected a divisor of image_size=32"),
    ({"patch_size": 2.5}, "patch_size=2.5 is invalid"),
    ({"num_channels": 4}, "num_channels=4 is invalid: expected 1 or 3"),
    ({"hidden_size": MAX_EMBED_DIM, "pooler_output_size": 64}, "expected a model that fits"),  # the meta count
]


@pytest.mark.parametrize(
    ("changes", "needle"),
    OUT_OF_BOUNDS,
    ids=[",".join(f"{k}={v}" for k, v in changes.items()) for changes, _ in OUT_OF_BOUNDS],
)
def test_an_hf_config_out_of_bounds_is_one_line_naming_the_file_and_key(hf_dir, tmp_path, changes, needle):
    """num_hidden_layers: 100000 hung validate while its memory grew past 3 GB."""
    model_dir = hf_copy(hf_dir, tmp_path, **changes)
    status, stderr, seconds, growth = cli_in_process("validate", run_config(tmp_path, model_dir))
    assert_one_line_refusal(status, stderr, str(model_dir / "config.json"), needle)
    assert seconds < CPU_SECONDS and growth < RSS_GROWTH, (seconds, growth / 2**20)


@pytest.mark.parametrize(
    "content",
    ["{not json", "[1, 2]", "1" * 5000, "[" * 100000, " " * (2 << 20)],
    ids=["broken", "a list", "5000 digits", "deep", "over 1 MiB"],
)
def test_an_hf_config_that_is_no_json_object_is_one_line(hf_dir, tmp_path, content):
    model_dir = hf_copy(hf_dir, tmp_path)
    (model_dir / "config.json").write_text(content)
    assert_one_line_refusal(
        *cli_in_process("validate", run_config(tmp_path, model_dir))[:2], str(model_dir / "config.json")
    )


@needs_fashion_mnist()
def test_train_and_a_study_dry_run_refuse_an_hf_config_out_of_bounds_before_building(hf_dir, tmp_path):
    """train grew to 4.4 GB in 90 s on num_hidden_layers: 100000."""
    path = run_config(tmp_path, hf_copy(hf_dir, tmp_path, num_hidden_layers=100000))
    status, stderr, seconds, growth = cli_in_process("train", path, "--run-dir", str(tmp_path / "run"))
    assert_one_line_refusal(status, stderr, "num_hidden_layers=100000 is invalid")
    assert seconds < CPU_SECONDS and growth < RSS_GROWTH, (seconds, growth / 2**20)
    (tmp_path / "study.yaml").write_text(
        yaml.safe_dump({"name": "s", "base": "run.yaml", "seeds": 1, "methods": {"lora": {}}})
    )
    assert_one_line_refusal(
        *cli_in_process("study", str(tmp_path / "study.yaml"), "--dry-run", "--study-dir", str(tmp_path / "out"))[:2],
        "num_hidden_layers=100000 is invalid",
    )


def test_an_hf_model_of_many_patches_is_probed_small_and_exactly(hf_dir, tmp_path, monkeypatch):
    """As a timm model's: an HF config of image_size 8192 (1M patches) hung validate in a full-size probe."""
    import torch

    from peftlab.config.schema import load_config
    from peftlab.training import preflight

    cfg = load_config(overrides={"model": {"source": "hf", "path": str(hf_dir)}, "method": {"name": "lora"}})
    assert (
        preflight.patch_grid(cfg.model, 10) == (8, 4)
        and preflight.probed_for_config(cfg.model, cfg.method, cfg.quant, 10, "fp32") is None
    )
    monkeypatch.setattr(preflight, "PROBED_PATCHES", 8)
    tuner = preflight.adapted(cfg.model, cfg.method, cfg.quant, 10)
    assert preflight.probed_for_config(cfg.model, cfg.method, cfg.quant, 10, "fp32") == preflight.probe(
        tuner.model, (3, 32, 32), "fp32", torch.device("cpu")
    )
    model_dir = hf_copy(hf_dir, tmp_path, image_size=MAX_IMG_SIZE)
    status, stderr, seconds, _ = cli_in_process("validate", run_config(tmp_path, model_dir))
    assert status == 0 or status == 2 and "GiB are available" in stderr, stderr
    assert seconds < CPU_SECONDS
