"""Every method on every transformers vision family (ViT, DeiT, DINOv2, CLIP's vision tower), each a
small random model saved with ``save_pretrained`` and loaded through peftlab's own HF path: it applies
or refuses in one line, starts as the base model, trains every tensor it adds, merges exactly, and
the presets mean q and v (and so on) of every layer, as on timm's families (tests/tuners/test_families.py)."""

import copy

import pytest
import torch
from testkit import PRESET_PARTS, TEXT_ONLY, TEXT_ONLY_REFUSAL, TIMM_ONLY, check_cell, hf_vision_model

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_hf
from peftlab.tuners import TUNERS
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.tuners.peft_injection import plan_targets
from peftlab.utils.errors import ConfigError

NUM_CLASSES = 5

FAMILIES = ["vit", "deit", "dinov2", "clip"]
HAND_WRITTEN = TIMM_ONLY  # timm ViTs only (testkit)
NO_IDENTITY = {"qalora"}  # starts as its group-quantized base (tests/tuners/test_qalora.py)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """Each family saved once as transformers saves a model (config.json, model.safetensors)."""
    dirs = {}
    torch.manual_seed(0)
    for family in FAMILIES:
        dirs[family] = tmp_path_factory.mktemp("hf") / family
        hf_vision_model(family, NUM_CLASSES).save_pretrained(dirs[family])
    return dirs


_BASES: dict[str, torch.nn.Module] = {}


def load(hf_dirs, family: str, method: str = "lora"):
    cfg = load_config(overrides={"model": {"source": "hf", "path": str(hf_dirs[family])}, "method": {"name": method}})
    if family not in _BASES:
        _BASES[family] = build_hf(cfg.model, NUM_CLASSES).eval()
    return cfg, _BASES[family]


def images(family: str) -> torch.Tensor:
    size = 28 if family == "dinov2" else 32
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", list(TUNERS))
@pytest.mark.parametrize("family", FAMILIES)
def test_each_method_applies_to_each_hf_family_or_refuses_in_one_line(hf_dirs, family, method, tmp_path):
    cfg, base = load(hf_dirs, family, method)
    torch.manual_seed(0)
    if method in TEXT_ONLY:
        with pytest.raises(ConfigError, match=f"{TEXT_ONLY_REFUSAL}.*not {type(base.model).__name__}") as caught:
            apply_tuner(copy.deepcopy(base), cfg.method, TunerContext.for_checks(cfg))
        assert "\n" not in str(caught.value)
        return
    if method in HAND_WRITTEN:
        with pytest.raises(ConfigError, match="supports timm ViT, EVA, BEiT and Swin models") as caught:
            apply_tuner(copy.deepcopy(base), cfg.method, TunerContext.for_checks(cfg))
        assert "\n" not in str(caught.value)
        return
    tuner = apply_tuner(copy.deepcopy(base), cfg.method, TunerContext.for_checks(cfg))
    check_cell(tuner, base, images(family), tmp_path, identity=method not in NO_IDENTITY)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("preset, parts", PRESET_PARTS)
def test_the_presets_mean_the_same_layers_of_every_hf_family(hf_dirs, family, preset, parts):
    from peftlab.models.families import HF, canonical_names

    cfg, base = load(hf_dirs, family)
    cfg = load_config(
        overrides={
            "model": {"source": "hf", "path": str(hf_dirs[family])},
            "method": {"name": "lora", "target_modules": preset},
        }
    )
    _, targets = plan_targets(base, cfg.method)
    canonical = list(canonical_names(targets, HF))
    assert len(canonical) == len(targets) == 2 * len(parts)  # 2 layers
    assert {name.rpartition(".")[2] for name in canonical} == parts


def test_an_hf_directory_is_normalised_as_its_image_processor_says(hf_dirs, tmp_path):
    """CLIP's mean is not ViT's 0.5: the input follows preprocessor_config.json, the vision tower's size."""
    import shutil

    from transformers import CLIPImageProcessor

    from peftlab.models.backbones import input_spec_for
    from peftlab.utils.errors import WeightsError

    path = tmp_path / "clip"
    shutil.copytree(hf_dirs["clip"], path)
    cfg = load_config(overrides={"model": {"source": "hf", "path": str(path)}})
    assert input_spec_for(cfg.model).mean == (0.5, 0.5, 0.5)
    CLIPImageProcessor().save_pretrained(path)
    spec = input_spec_for(cfg.model)
    assert (spec.img_size, spec.mean, spec.std) == (
        32,
        tuple(CLIPImageProcessor().image_mean),
        tuple(CLIPImageProcessor().image_std),
    )
    (path / "preprocessor_config.json").write_text('{"image_mean": [0.5, 0.5]}')
    with pytest.raises(WeightsError, match=r"preprocessor_config.json: image_mean=\[0.5, 0.5\] is invalid: expected 3"):
        input_spec_for(cfg.model)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method, extra", [("lora", 0), ("dora", 2)])
def test_lora_counts_follow_the_formula_on_every_hf_family(hf_dirs, family, method, extra):
    """q and v of each of the 2 layers of width 32: A r x d and B d x r each, DoRA a magnitude per output."""
    from peftlab.tuners.base import is_head_param

    cfg = load_config(
        overrides={"model": {"source": "hf", "path": str(hf_dirs[family])}, "method": {"name": method, "r": 4}}
    )
    tuner = apply_tuner(copy.deepcopy(load(hf_dirs, family)[1]), cfg.method, TunerContext.for_checks(cfg))
    counted = sum(p.numel() for n, p in tuner.trainable_parameters().items() if not is_head_param(n, tuner.head))
    assert counted == 2 * 2 * (2 * 4 * 32 + extra * 32 // 2)
