"""``model.pretrained: hub`` for real, offline: huggingface_hub's and timm's own code read a hub cache
laid out as the hub client writes it (tests/hubcache.py), holding random weights of the right shapes."""

import hashlib
import json

import pytest
import torch
from hubcache import COMMIT, lay_out_snapshot, timm_hub_files, use_cache
from testkit import TINY_MODEL, needs_fashion_mnist

from peftlab.config.sections import ModelConfig
from peftlab.models.backbones import base_provenance, build_backbone
from peftlab.utils.errors import WeightsError

NAME = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
REPO = f"timm/{NAME}"  # timm's pretrained_cfg.hf_hub_id for it; also that of TINY_MODEL's name (its default tag)


@pytest.fixture(scope="session")
def vit_tiny_hub(tmp_path_factory):
    """(cache, state dict): ViT-Ti/16 at 224 px as timm publishes it, random weights."""
    cache = tmp_path_factory.mktemp("hub")
    files, state = timm_hub_files(NAME)
    lay_out_snapshot(cache, REPO, files)
    return cache, state


def test_the_cache_is_one_huggingface_hub_recognises(vit_tiny_hub):
    from huggingface_hub import scan_cache_dir

    cache, _ = vit_tiny_hub
    info = scan_cache_dir(cache)
    assert not info.warnings, info.warnings
    (repo,) = info.repos
    (revision,) = repo.revisions
    assert (repo.repo_id, revision.commit_hash, set(revision.refs)) == (REPO, COMMIT, {"main"})
    assert {f.file_name for f in revision.files} == {"model.safetensors", "config.json"}


def test_hub_weights_load_offline_through_timm_and_huggingface_hub(vit_tiny_hub, monkeypatch):
    cache, state = vit_tiny_hub
    use_cache(monkeypatch, cache)
    cfg = ModelConfig(name=NAME, pretrained="hub")
    model = build_backbone(cfg, num_classes=1000)
    loaded = model.state_dict()
    assert torch.equal(loaded["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("head."))
    assert not torch.equal(loaded["head.weight"], state["head.weight"])  # new, though the classes agree
    weights = cache / f"models--timm--{NAME}" / "snapshots" / COMMIT / "model.safetensors"
    assert base_provenance(cfg, model) == {
        "base_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "base_hub_repo": REPO,
        "base_hub_revision": COMMIT,
    }


def test_a_missing_cache_entry_offline_is_one_line_saying_how_to_fetch_it(tmp_path, monkeypatch):
    use_cache(monkeypatch, tmp_path)
    with pytest.raises(WeightsError) as err:
        build_backbone(ModelConfig(name=NAME, pretrained="hub"), 10)
    message = str(err.value)
    assert "\n" not in message
    assert f"model.safetensors of {REPO} is not in the hub cache {tmp_path} and HF_HUB_OFFLINE is set" in message
    assert f"`hf download {REPO} model.safetensors`" in message


def test_a_cache_holding_only_a_pickle_is_refused_not_unpickled(tmp_path, monkeypatch):
    """timm's own hub loader falls back to pytorch_model.bin when model.safetensors is not cached;
    peftlab asks for the safetensors file only."""
    lay_out_snapshot(tmp_path, REPO, {"pytorch_model.bin": b"not read", "config.json": b"{}"})
    use_cache(monkeypatch, tmp_path)
    with pytest.raises(WeightsError, match="model.safetensors of .* is not in the hub cache"):
        build_backbone(ModelConfig(name=NAME, pretrained="hub"), 10)


@pytest.mark.parametrize(
    "shapes, needle",
    [
        (
            {"depth": 1},
            r"does not match model.name='.*' as configured: "
            r"key 'blocks.1.attn.proj.bias' is missing from the file",
        ),
        (
            {"embed_dim": 96, "num_heads": 3},
            r"timm could not load .*/snapshots/.*/model.safetensors into .*size mismatch",
        ),
    ],
    ids=["missing-key", "other-shape"],
)
def test_hub_weights_of_another_architecture_are_one_line_naming_the_file(tmp_path, monkeypatch, shapes, needle):
    """timm loads non-strictly when it replaces the head: a file without blocks 1 to 11 left them random."""
    files, _ = timm_hub_files(NAME, img_size=32, **shapes)
    lay_out_snapshot(tmp_path, REPO, files)
    use_cache(monkeypatch, tmp_path)
    with pytest.raises(WeightsError, match=needle) as err:
        build_backbone(ModelConfig(name=NAME, pretrained="hub", img_size=32), 10)
    assert "\n" not in str(err.value)


def test_an_hf_model_directory_laid_out_as_a_hub_snapshot_loads_offline(hf_dir, tmp_path, monkeypatch):
    """model.path names the snapshot folder (HF models are never fetched by repository id); its
    weights load, and provenance records the repository and commit the folder belongs to."""
    files = {p.name: p.read_bytes() for p in hf_dir.iterdir()}
    snapshot = lay_out_snapshot(tmp_path, "someone/vit-tiny-test", files)
    use_cache(monkeypatch, tmp_path)
    cfg = ModelConfig(source="hf", path=str(snapshot))
    model = build_backbone(cfg, 5)
    reference = build_backbone(ModelConfig(source="hf", path=str(hf_dir)), 5)
    assert torch.equal(
        model.state_dict()["model.vit.layers.0.mlp.fc1.weight"],
        reference.state_dict()["model.vit.layers.0.mlp.fc1.weight"],
    )
    assert base_provenance(cfg, model) == {
        "base_sha256": hashlib.sha256(files["model.safetensors"]).hexdigest(),
        "base_hub_repo": "someone/vit-tiny-test",
        "base_hub_revision": COMMIT,
    }


@needs_fashion_mnist()
def test_a_run_on_hub_weights_records_their_repository_revision_and_sha256(tmp_path, monkeypatch):
    from peftlab.config.schema import load_config
    from peftlab.training.run import train

    shapes = {k: v for k, v in TINY_MODEL.items() if k != "name"}
    files, _ = timm_hub_files(TINY_MODEL["name"], **shapes)
    lay_out_snapshot(tmp_path / "hub", REPO, files)
    use_cache(monkeypatch, tmp_path / "hub")
    cfg = load_config(
        overrides={
            "model": {**TINY_MODEL, "pretrained": "hub"},
            "method": {"name": "lora", "r": 2},
            "data": {"name": "fashion_mnist", "train_subset": 16, "val_subset": 16, "test_subset": 16},
            "train": {"max_steps": 1, "batch_size": 16},
        }
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    provenance = json.loads((tmp_path / "run" / "result.json").read_text())["provenance"]
    assert (provenance["base_hub_repo"], provenance["base_hub_revision"]) == (REPO, COMMIT)
    assert provenance["base_sha256"] == hashlib.sha256(files["model.safetensors"]).hexdigest()


def test_an_hf_model_directory_holding_only_a_pickle_is_refused_not_unpickled(hf_dir, tmp_path):
    files = {p.name: p.read_bytes() for p in hf_dir.iterdir() if p.name != "model.safetensors"}
    snapshot = lay_out_snapshot(tmp_path, "someone/vit-tiny-test", {**files, "pytorch_model.bin": b"not read"})
    with pytest.raises(WeightsError, match="is not a loadable HF model directory .*model.safetensors") as err:
        build_backbone(ModelConfig(source="hf", path=str(snapshot)), 5)
    assert "\n" not in str(err.value)
