"""Every export names the run's classes (result.json's ``provenance.data.class_names``): the safetensors header of a
merged, an unmerged and a quantized export and of the PEFT adapter (the run directory's and ``export --peft``'s),
an HF model's config.json ``id2label``; and docs/python-api.md's snippet that loads a PEFT adapter onto a timm base
whose head has the run's or another number of classes runs, for real, on the tiny ViT."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from testkit import REPO, TINY_MODEL, hf_vision_model

import peftlab
from peftlab.cli import main
from peftlab.config.schema import config_hash, load_config
from peftlab.data.synthetic import write_jpeg_folder
from peftlab.utils.errors import UserError

NAMES = ["class0", "class1", "class2"]  # write_jpeg_folder's class folders
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classes") / "images"
    write_jpeg_folder(root, n_train=24, size=32, classes=len(NAMES), n_test=6, class_colour=0.3)
    return root


def trained(images: Path, run_dir: Path, model=None, method=None, quant=None) -> Path:
    overrides = {
        "model": model or TINY_MODEL,
        "method": method or {"name": "lora", "r": 2},
        "data": {"name": "imagefolder", "root": str(images)},
        "train": {"max_steps": 2, "batch_size": 8, "lr": 1e-2},
        **({"quant": quant} if quant else {}),
    }
    result = peftlab.train(load_config(overrides=overrides), run_dir=run_dir)
    assert result["status"] == "completed", result["error"]
    assert result["provenance"]["data"]["class_names"] == NAMES
    return run_dir


@pytest.fixture(scope="module")
def lora_run(images, tmp_path_factory) -> Path:
    return trained(images, tmp_path_factory.mktemp("lora") / "run")


def header(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_the_merged_export_and_both_peft_adapters_name_the_classes(lora_run, tmp_path):
    assert main(["export", str(lora_run), "--merged", str(tmp_path / "merged.safetensors")]) == 0
    assert json.loads(header(tmp_path / "merged.safetensors")["class_names"]) == NAMES
    assert json.loads(header(lora_run / "adapter_model.safetensors")["class_names"]) == NAMES  # written by the run
    assert main(["export", str(lora_run), "--peft", str(tmp_path / "peft")]) == 0
    assert json.loads(header(tmp_path / "peft" / "adapter_model.safetensors")["class_names"]) == NAMES


def test_an_unmerged_export_names_the_classes(images, tmp_path):
    run = trained(images, tmp_path / "houlsby", method={"name": "houlsby"})
    assert main(["export", str(run), "--merged", str(tmp_path / "unmerged.safetensors")]) == 0
    metadata = header(tmp_path / "unmerged.safetensors")
    assert metadata["format"] == "peftlab-unmerged" and json.loads(metadata["class_names"]) == NAMES


def test_a_quantized_export_names_the_classes(images, tmp_path):
    run = trained(images, tmp_path / "qlora", quant={"mode": "int8"})
    assert main(["export", str(run), "--quantized", str(tmp_path / "int8.safetensors")]) == 0
    metadata = header(tmp_path / "int8.safetensors")
    assert metadata["format"] == "peftlab-bitsandbytes" and json.loads(metadata["class_names"]) == NAMES


def test_an_hf_export_names_the_classes_in_id2label(images, tmp_path):
    from transformers import AutoModelForImageClassification

    hf_vision_model("vit", num_classes=len(NAMES)).save_pretrained(tmp_path / "hf-vit")
    run = trained(images, tmp_path / "hf", model={"source": "hf", "path": str(tmp_path / "hf-vit")})
    assert main(["export", str(run), "--merged", str(tmp_path / "merged")]) == 0
    config = AutoModelForImageClassification.from_pretrained(tmp_path / "merged").config
    assert config.id2label == dict(enumerate(NAMES)) and config.label2id == {n: i for i, n in enumerate(NAMES)}
    # predict takes an HF image model's run too: its top-1 on the test folder scores the run's test top-1
    predictions = peftlab.predict(run, images / "test", top_k=1)
    hits = sum(row["top_k"][0]["class"] == Path(row["image"]).parent.name for row in predictions)
    assert hits / len(predictions) == json.loads((run / "result.json").read_text())["metrics"]["test_top1"]
    # config.json records the run: another run's export into the folder is refused, naming it
    owner = config_hash(load_config(run / "config.yaml"))
    assert config.peftlab_run == owner
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("seed: 0", "seed: 1"))  # another run
    with pytest.raises(UserError, match=f"holds run {owner}'s export \\(config.json, model.safetensors, "):
        peftlab.export(run, merged=tmp_path / "merged")


def documented_snippet() -> str:
    text = (REPO / "docs" / "python-api.md").read_text()
    found = re.search(
        r"<!-- tests/test_export_classes.py runs this block on the tiny ViT -->\n```python\n(.*?)```", text, re.S
    )
    assert found, "docs/python-api.md lost its PEFT snippet"
    return found.group(1)


def test_the_documented_snippet_loads_the_adapter_on_a_base_with_the_runs_or_another_head(lora_run, monkeypatch):
    """The snippet as docs/python-api.md prints it, with its adapter_dir this run's and timm's create_model
    building the run's base (the tiny ViT at the run's seed: its random weights are the run's base weights)."""
    import timm

    from peftlab.models.backbones import timm_kwargs
    from peftlab.utils.seed import seed_everything

    cfg = load_config(lora_run / "config.yaml")
    made, timm_create_model = [], timm.create_model

    def create_model(name, pretrained=False, num_classes=1000):
        assert (name, pretrained) == ("MODEL", True)
        made.append(num_classes)
        seed_everything(cfg.seed)  # as the recipe seeds before it builds the base
        return timm_create_model(cfg.model.name, **timm_kwargs(cfg.model, num_classes))

    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = peftlab.load_trained(lora_run).model.eval()(x)
    monkeypatch.setattr(timm, "create_model", create_model)
    code = documented_snippet()
    assert 'adapter_dir = "runs/r16"' in code
    namespace = {"MODEL": "MODEL", "images": x}
    with torch.no_grad():
        exec(code.replace('adapter_dir = "runs/r16"', f"adapter_dir = {str(lora_run)!r}"), namespace)
    assert made == [len(NAMES), 5]
    assert namespace["class_names"] == NAMES
    torch.testing.assert_close(namespace["model"](x), ours, rtol=1e-5, atol=1e-5)  # the trained head: the run's model
    assert namespace["predicted"] == [NAMES[i] for i in ours.argmax(-1)]

    new_task = namespace["new_task"]  # the adapter's weights, a 5-class head of its own, both trainable
    adapter = {k: v for k, v in namespace["model"].state_dict().items() if "lora_" in k}
    moved = {k: v for k, v in new_task.state_dict().items() if "lora_" in k}
    assert adapter.keys() == moved.keys() and adapter
    assert all(torch.equal(adapter[k], moved[k]) for k in adapter)
    with torch.no_grad():
        assert new_task(x).shape == (4, 5)
    trainable = {n for n, p in new_task.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any(".head." in n for n in trainable)
