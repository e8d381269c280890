"""``peftlab train`` end to end on each backbone family: a short LoRA, VPT, SSF and Houlsby-adapter run
of a small random model of each (where the method applies to the family, docs/methods/families.md),
through the recipe as a user runs it: data, input size, training, evaluation, the merge check, the
frozen base's hash, the adapter file that rebuilds the model; and a LoRA run interrupted after its
first steps resumes to the same weights as one that was not, on the families whose blocks differ most."""

import json

import pytest
import torch
from safetensors.torch import load_file
from testkit import assert_peft_loads, hf_vision_model, needs_fashion_mnist, write_fashion_sample

from peftlab.config.schema import load_config
from peftlab.training.run import train
from peftlab.utils.errors import UserError

pytestmark = [pytest.mark.e2e, needs_fashion_mnist()]

SMALL = {"depth": 2, "embed_dim": 32, "num_heads": 2}
TIMM = {
    "deit3": {"name": "deit3_base_patch16_224", **SMALL, "img_size": 32, "patch_size": 16},
    "dinov2-reg4": {"name": "vit_base_patch14_reg4_dinov2", **SMALL, "img_size": 28, "patch_size": 14},
    "clip": {"name": "vit_base_patch16_clip_224", **SMALL, "img_size": 32, "patch_size": 16},
    "siglip": {"name": "vit_base_patch16_siglip_224", **SMALL, "img_size": 32, "patch_size": 16},
    "eva02": {"name": "eva02_base_patch14_224", **SMALL, "img_size": 28, "patch_size": 14},
    "beit": {"name": "beit_base_patch16_224", **SMALL, "img_size": 32, "patch_size": 16},
    # Swin takes no depth or head overrides: its four stages (2, 2, 6, 2 blocks) at width 24 and 32 px
    "swin": {"name": "swin_tiny_patch4_window7_224", "embed_dim": 24, "img_size": 32},
}
HF = ("dinov2", "clip")
# the cells docs/methods/families.md marks refused: the matrix tests their one-line refusals
REFUSED = {("beit", "vpt"), ("swin", "vpt")}
# SSF shifts their layers without a bias (CLIP's patch embedding, EVA-02's k_proj, BEiT's qkv, Swin's patch
# merging), which plain timm cannot hold: no merge check, and export --merged refuses in one line
UNMERGED_SSF = {"clip", "eva02", "beit", "swin"}
METHODS = {"lora": {"r": 2}, "vpt": {"prompt_tokens": 2}, "ssf": {}, "houlsby": {"bottleneck": 4}}
CELLS = [(f, m) for f in TIMM for m in METHODS if (f, m) not in REFUSED] + [(f"hf-{f}", "lora") for f in HF]


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    dirs = {}
    for family in HF:
        dirs[family] = tmp_path_factory.mktemp("hf") / family
        hf_vision_model(family, num_classes=10).save_pretrained(dirs[family])
    return dirs


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    return write_fashion_sample(tmp_path_factory.mktemp("fashion"))


def run_config(family: str, method: str, hf_dirs, fashion, **train_options):
    model = {"source": "hf", "path": str(hf_dirs[family[3:]])} if family.startswith("hf-") else TIMM[family]
    return load_config(
        overrides={
            "model": model,
            "method": {"name": method, **METHODS[method]},
            "data": {
                "name": "fashion_mnist",
                "root": str(fashion),
                "train_subset": 32,
                "val_subset": 16,
                "test_subset": 16,
            },
            "train": {"max_steps": 4, "batch_size": 8, "eval_batch_size": 16, "lr": 1e-3, "ckpt_every": 2},
            **train_options,
        }
    )


@pytest.mark.parametrize("family, method", CELLS)
def test_a_short_run_of_each_method_on_each_family_completes_and_rebuilds(tmp_path, hf_dirs, fashion, family, method):
    from peftlab.training.export import export_merged, load_trained

    run_dir = tmp_path / "run"
    result = train(run_config(family, method, hf_dirs, fashion), run_dir, progress=False)
    assert result["status"] == "completed", result.get("error")
    frozen = result["frozen_base"]
    assert frozen["equal"] and frozen["sha256_start"] == frozen["sha256_end"]  # only the method trained
    if method == "ssf" and family in UNMERGED_SSF:
        assert result["merge"] is None
        with pytest.raises(UserError, match=r"--merged: run .* does not merge: method 'ssf' shifts .* without a bias"):
            export_merged(run_dir, tmp_path / "merged.safetensors")
    elif method in ("lora", "ssf"):  # the methods that merge: merged == adapted on the test images
        assert result["merge"]["max_abs_diff"] < 1e-4
    assert 0 < result["params"]["trainable"] < result["params"]["total"]
    tuner = load_trained(run_dir)  # the run's config and adapter file rebuild the trained model
    saved = load_file(str(run_dir / "adapter.safetensors"))
    trained = {k: v for k, v in tuner.model.state_dict().items()}
    assert saved and all(torch.equal(trained[k], v) for k, v in saved.items() if k in trained)
    assert json.loads((run_dir / "result.json").read_text())["metrics"] == result["metrics"]
    if method == "lora" and family == "beit":  # plain timm's BEiT never calls the qkv PEFT would wrap
        assert not (run_dir / "adapter_config.json").exists()
    elif method == "lora":  # PEFT's own loader, on the plain base, computes what peftlab's model does
        assert_peft_loads(run_dir)


class Interrupt(BaseException):
    """Stands for a kill: not an Exception, so nothing records it."""


@pytest.mark.parametrize("family", ["eva02", "beit", "swin", "hf-dinov2"])
def test_an_interrupted_lora_run_resumes_to_the_same_weights_on_each_family(
    tmp_path, hf_dirs, fashion, monkeypatch, family
):
    import peftlab.training.recipe

    cfg = run_config(family, "lora", hf_dirs, fashion)
    straight = train(cfg, tmp_path / "straight", progress=False)
    original = peftlab.training.recipe.training_step

    def interrupt_at_step_3(*args, step, **kwargs):
        if step == 3:
            raise Interrupt()
        return original(*args, step=step, **kwargs)

    monkeypatch.setattr(peftlab.training.recipe, "training_step", interrupt_at_step_3)
    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(peftlab.training.recipe, "training_step", original)
    resumed = train(cfg, tmp_path / "resumed", progress=False)
    a, b = (load_file(str(tmp_path / d / "adapter.safetensors")) for d in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["metrics"] == straight["metrics"]
