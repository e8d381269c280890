"""The adapter in PEFT's own format: ``PeftModel.from_pretrained`` on the plain timm model
(fused qkv, no peftlab code) gives the outputs of peftlab's tuned model."""

import json

import pytest
import timm
import torch
from testkit import TINY_MODEL, train_with_hooks

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.training.export import PEFT_CONFIG, write_peft_adapter
from peftlab.tuners.base import TunerContext, apply_tuner

NUM_CLASSES = 5
STEPS = 10


def make(method, **options):
    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": method, **options}})
    torch.manual_seed(0)
    return apply_tuner(
        build_backbone(cfg.model, NUM_CLASSES), cfg.method, TunerContext(STEPS, torch.device("cpu"), cfg.quant)
    )


def plain_base():
    """The same base weights as a plain timm model: fused qkv, nothing of peftlab's."""
    torch.manual_seed(0)
    model = build_backbone(load_config(overrides={"model": TINY_MODEL}).model, NUM_CLASSES)
    assert type(model) is timm.models.vision_transformer.VisionTransformer
    return model


def train(tuner, steps=STEPS):
    """The recipe's order of hooks on one fixed batch, so AdaLoRA prunes and the controller moves ranks."""
    g = torch.Generator().manual_seed(1)
    train_with_hooks(tuner, steps, torch.randn(16, 3, 32, 32, generator=g), torch.arange(16) % NUM_CLASSES, lr=3e-2)


CASES = {
    "lora q,v": ("lora", {"r": 4}),
    "lora extended, rank and alpha patterns": (
        "lora",
        {
            "r": 4,
            "target_modules": "extended",
            "lora_alpha": 8.0,
            "rank_pattern": {"qkv.v": 2},
            "alpha_pattern": {"proj": 3.0},
        },
    ),
    "lora all-linear, static strategy": (
        "lora",
        {"r": 4, "target_modules": "all-linear", "rank_strategy": "linear_decay"},
    ),
    "adalora": ("adalora", {"init_r": 6, "target_r": 2, "tinit": 2, "tfinal": 2}),
    "adaptive": (
        "adaptive",
        {
            "r": 4,
            "max_rank": 8,
            "importance": "fisher",
            "warmup": 2,
            "interval": 2,
            "final_step": 6,
            "target_modules": "extended",
        },
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_peft_from_pretrained_on_plain_timm_gives_peftlabs_outputs(tmp_path, case):
    from peft import PeftModel

    method, options = CASES[case]
    tuner = make(method, **options)
    train(tuner)
    assert write_peft_adapter(tuner, tmp_path)
    config = json.loads((tmp_path / PEFT_CONFIG).read_text())
    assert config["peft_type"] == "LORA" and config["modules_to_save"] == ["head"]
    loaded = PeftModel.from_pretrained(plain_base(), tmp_path).eval()
    names = {n for n, _ in loaded.named_modules()}
    assert "base_model.model.blocks.0.attn.qkv.lora_A.default" in names  # on timm's own fused qkv
    assert not any(n.endswith("qkv.q") for n in names)
    tuner.model.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = tuner.model(x), loaded(x)
        assert not torch.allclose(expected, plain_base().eval()(x), atol=1e-3)  # the adapter changed something
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_qalora_has_no_peft_format(tmp_path):
    tuner = make("qalora", r=4, group_size=32)
    assert not write_peft_adapter(tuner, tmp_path)
    assert not any(tmp_path.iterdir())
