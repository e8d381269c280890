"""``model.pretrained: hub`` for HF transformers models (``model.source: hf`` and ``hf-text``, ``model.name:
org/name[@revision]``), offline: huggingface_hub's own snapshot_download reads a hub cache laid out as the hub
client writes it (tests/hubcache.py), holding small random models with their tokenizers (tests/testkit.py)."""

import hashlib
import json

import pytest
import torch
import yaml
from hubcache import COMMIT, lay_out_snapshot, use_cache
from testkit import (
    assert_one_line_refusal,
    cli_in_process,
    hf_text_dir,
    hf_vision_model,
    write_instruction_task,
    write_text_task,
)

from peftlab.config.schema import load_config
from peftlab.config.sections import ModelConfig
from peftlab.models.backbones import base_provenance, build_backbone
from peftlab.models.hub import hf_model_dir, hub_model_dir
from peftlab.utils.errors import ConfigError, WeightsError

TEXT, LM, VISION = "someorg/tiny-roberta", "someorg/tiny-llama-lm", "someorg/tiny-vit"
DIALOG = "microsoft/DialoGPT-medium"  # a tiny GPT-2 (DialoGPT's architecture, GPT2LMHeadModel) under its name
CONFIG_ONLY, PICKLED = "someorg/config-only", "someorg/pickled"


def folder_files(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir()}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """(cache, {repository: its files}): the hub cache of six repositories, each at COMMIT on main."""
    root = tmp_path_factory.mktemp("hf-hub-models")
    torch.manual_seed(0)
    repos = {
        TEXT: folder_files(hf_text_dir(root / "text", "roberta")),
        LM: folder_files(hf_text_dir(root / "lm", "llama", causal=True)),
        DIALOG: folder_files(hf_text_dir(root / "dialog", "gpt2", causal=True)),
    }
    hf_vision_model("vit").save_pretrained(root / "vit")
    repos[VISION] = folder_files(root / "vit")
    repos[CONFIG_ONLY] = {k: v for k, v in repos[TEXT].items() if k != "model.safetensors"}
    repos[PICKLED] = {**repos[CONFIG_ONLY], "pytorch_model.bin": b"never unpickled"}
    cache = tmp_path_factory.mktemp("hf-hub-cache")
    for repo_id, files in repos.items():
        lay_out_snapshot(cache, repo_id, files)
    return cache, repos


@pytest.fixture
def cache(hub, monkeypatch):
    use_cache(monkeypatch, hub[0])
    return hub[0]


def snapshot(cache, repo_id: str):
    return cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / COMMIT


def test_the_snapshot_folder_is_read_from_the_cache_offline(hub, cache):
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(cache)
    assert not info.warnings, info.warnings
    assert {r.repo_id for r in info.repos} == set(hub[1])
    assert hub_model_dir(TEXT) == snapshot(cache, TEXT)
    assert hub_model_dir(TEXT, COMMIT) == snapshot(cache, TEXT)  # a pinned commit
    assert hf_model_dir(ModelConfig(source="hf-text", name=f"{TEXT}@main", pretrained="hub")) == snapshot(cache, TEXT)
    assert hf_model_dir(ModelConfig(source="hf-text", path="/some/dir")).as_posix() == "/some/dir"


def text_run(tmp_path, repo_id: str, data: dict | None = None, **model) -> dict:
    """``peftlab train`` of a 2-step LoRA run on ``repo_id`` from the hub cache (``data``: more data options); its
    result.json."""
    lm = model.get("task") == "causal-lm"
    root = (write_instruction_task if lm else write_text_task)(tmp_path / "data")
    config = {
        "model": {"source": "hf-text", "name": repo_id, "pretrained": "hub", **model},
        "method": {"name": "lora", "r": 2},
        "data": {
            "name": "instructions" if lm else "text",
            "root": str(root),
            "max_length": 64 if lm else 16,
            **(data or {}),
        },
        "train": {"max_steps": 2, "batch_size": 8, "eval_batch_size": 16},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    argv = ["train", str(tmp_path / "run.yaml"), "--run-dir", str(tmp_path / "run"), "--quiet"]
    status, stderr, _, _ = cli_in_process(*argv)
    assert status == 0, stderr
    return json.loads((tmp_path / "run" / "result.json").read_text())


@pytest.mark.parametrize("repo_id, model", [(TEXT, {}), (LM, {"task": "causal-lm"})], ids=["classifier", "causal-lm"])
def test_peftlab_train_runs_on_a_hub_model_and_records_its_repository_and_commit(hub, cache, tmp_path, repo_id, model):
    result = text_run(tmp_path, repo_id, **model)
    assert result["status"] == "completed", result["error"]
    provenance = result["provenance"]
    assert (provenance["base_hub_repo"], provenance["base_hub_revision"]) == (repo_id, COMMIT)
    assert provenance["base_sha256"] == hashlib.sha256(hub[1][repo_id]["model.safetensors"]).hexdigest()
    assert result["config"]["model"]["name"] == repo_id and result["config"]["model"]["path"] is None
    metric = "test_perplexity" if model else "test_top1"
    assert result["metrics"][metric] is not None


def test_a_dialogpt_shaped_model_trains_by_its_hub_name_on_dialogue_turns(hub, cache, tmp_path):
    """DialoGPT's hub name, read from the local hub cache with the hub offline: its GPT-2 architecture trains on
    turns separated by its EOS (``data.prompt_format: dialogue``), records the repository and commit, and reports
    its perplexity and its base's."""
    result = text_run(tmp_path, DIALOG, data={"prompt_format": "dialogue"}, task="causal-lm")
    assert result["status"] == "completed", result["error"]
    assert (result["provenance"]["base_hub_repo"], result["provenance"]["base_hub_revision"]) == (DIALOG, COMMIT)
    assert result["config"]["data"]["prompt_format"] == "dialogue"
    assert result["metrics"]["test_perplexity"] > 1 and result["metrics"]["base_test_perplexity"] > 1
    assert json.loads((snapshot(cache, DIALOG) / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]


def test_an_hf_image_classifier_loads_its_hub_weights(hub, cache):
    from transformers import AutoModelForImageClassification

    cfg = ModelConfig(source="hf", name=VISION, pretrained="hub")
    model = build_backbone(cfg, 5)
    reference = AutoModelForImageClassification.from_pretrained(snapshot(cache, VISION), use_safetensors=True)
    ours, theirs = model.model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(v, theirs[k]) for k, v in ours.items() if not k.startswith("classifier."))
    assert base_provenance(cfg, model) == {
        "base_sha256": hashlib.sha256(hub[1][VISION]["model.safetensors"]).hexdigest(),
        "base_hub_repo": VISION,
        "base_hub_revision": COMMIT,
    }


@pytest.mark.parametrize("repo_id", [TEXT, CONFIG_ONLY])
def test_peftlab_params_counts_a_hub_repository_from_its_config_alone(cache, repo_id, capsys):
    """LoRA r=8 on q and v of 2 layers of width 32: weights are not needed to count."""
    from peftlab import cli

    argv = ["params", repo_id, "--method", "lora", "--r", "8", "--targets", "standard", "--json"]
    assert cli.main(argv) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["model"] == repo_id and counts["num_classes"] == 3
    assert counts["adapter"] == 2 * 2 * 8 * (32 + 32)


def test_a_repository_missing_from_the_cache_offline_is_one_line_saying_how_to_fetch_it(cache, tmp_path):
    with pytest.raises(WeightsError) as err:
        build_backbone(ModelConfig(source="hf-text", name="someorg/missing@v2", pretrained="hub"), 3)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("model.name='someorg/missing@v2' (model.pretrained: hub): someorg/missing@v2 is not in")
    assert f"hub cache {cache}" in message and "HF_HUB_OFFLINE is set" in message
    assert "`hf download someorg/missing --include '*.json' --include '*.txt' --include '*.model' " in message
    assert "--exclude '*/*' --revision v2`" in message
    status, stderr, _, _ = cli_in_process("params", "someorg/missing")
    assert_one_line_refusal(status, stderr, "someorg/missing is not in the hub cache")


@pytest.mark.parametrize("repo_id", [PICKLED, CONFIG_ONLY])
def test_a_snapshot_without_safetensors_weights_is_refused_not_unpickled(cache, repo_id):
    with pytest.raises(WeightsError) as err:
        build_backbone(ModelConfig(source="hf-text", name=repo_id, pretrained="hub"), 3)
    message = str(err.value)
    assert "\n" not in message
    assert f"model.name={repo_id!r} (model.pretrained: hub): the hub snapshot " in message
    assert "holds no safetensors weights (model.safetensors) and peftlab never loads pickled ones" in message


def test_the_first_commit_a_revision_resolves_to_is_kept_for_the_process(hub, tmp_path, monkeypatch):
    """A run's weights, tokenizer and provenance come from one commit, though main moves meanwhile."""
    files = hub[1][CONFIG_ONLY]
    lay_out_snapshot(tmp_path, CONFIG_ONLY, files)
    use_cache(monkeypatch, tmp_path)
    first = hub_model_dir(CONFIG_ONLY, weights=False)
    lay_out_snapshot(tmp_path, CONFIG_ONLY, files, commit="f" * 40)  # refs/main now names another commit
    assert hub_model_dir(CONFIG_ONLY, weights=False) == first == snapshot(tmp_path, CONFIG_ONLY)
    assert hub_model_dir(CONFIG_ONLY, "f" * 40, weights=False).name == "f" * 40


@pytest.mark.parametrize(
    "model, needle",
    [
        ({"name": "deit_tiny_patch16_224"}, "model.name='deit_tiny_patch16_224' is invalid: expected a Hugging Face"),
        ({"name": "someorg/a--b"}, "model.name='someorg/a--b' is invalid"),
        ({"name": TEXT, "path": "/some/dir"}, "model.path='/some/dir' is invalid: expected null when model.pretrained"),
        ({"name": TEXT, "pretrained": "/some/w.safetensors"}, "model.pretrained='/some/w.safetensors' is invalid"),
        ({"name": TEXT, "pretrained": "none"}, "model.path=None is invalid: expected a local HF transformers model"),
    ],
    ids=["timm-name", "bad-repo-id", "path-too", "weights-file", "no-path"],
)
def test_a_bad_hub_model_config_is_one_line(model, needle):
    with pytest.raises(ConfigError, match="^" + needle.replace("(", r"\(")) as err:
        load_config(overrides={"model": {"source": "hf-text", "pretrained": "hub", **model}})
    assert "\n" not in str(err.value)


def test_a_text_base_is_not_pretrained_from_hub_weights():
    from peftlab.training.bases.text_base import check_text_base

    cfg = load_config(overrides={"model": {"source": "hf-text", "task": "causal-lm", "name": LM, "pretrained": "hub"}})
    with pytest.raises(ConfigError, match="^model.pretrained='hub': a text base is trained from scratch"):
        check_text_base(cfg)


def test_a_report_names_a_hub_model_by_its_repository():
    import pandas as pd

    from peftlab.analysis.report.build import model_names

    df = pd.DataFrame(
        {
            "config.model.source": ["hf-text", "hf-text", "timm"],
            "config.model.path": ["/models/fortunes-lm", None, None],
            "config.model.name": ["deit_tiny_patch16_224", TEXT, "vit_tiny_patch16_224"],
        }
    )
    assert model_names(df).tolist() == ["fortunes-lm", TEXT, "vit_tiny_patch16_224"]
