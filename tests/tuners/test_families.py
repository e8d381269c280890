"""Every method on every timm backbone family, built small and random offline: it applies or it is a
one-line refusal, never a crash; applied, it starts as the base model, every tensor it trains gets a
gradient (an adapter on a module the family never calls is an error, not a silent no-op), and its
merged model computes what the adapted one does. The table of cells is docs/methods/families.md."""

import copy

import pytest
import timm
import torch
from testkit import TEXT_ONLY, TEXT_ONLY_REFUSAL, TINY_MODEL, check_cell

from peftlab.config.schema import load_config
from peftlab.models.families import canonical_names, family_of
from peftlab.training.step import check_reached
from peftlab.tuners import TUNERS
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.tuners.peft_injection import plan_targets
from peftlab.utils.errors import ConfigError

SMALL = {"depth": 2, "embed_dim": 32, "num_heads": 2}
# family -> (timm model, architecture overrides): 2 blocks, width 32 (Swin: 2 stages of one block)
FAMILIES = {
    "vit": ("vit_base_patch16_224", {**SMALL, "img_size": 32, "patch_size": 16}),
    "deit3": ("deit3_base_patch16_224", {**SMALL, "img_size": 32, "patch_size": 16}),
    "dinov2": ("vit_base_patch14_dinov2", {**SMALL, "img_size": 28, "patch_size": 14}),
    "dinov2-reg4": ("vit_base_patch14_reg4_dinov2", {**SMALL, "img_size": 28, "patch_size": 14}),
    "clip": ("vit_base_patch16_clip_224", {**SMALL, "img_size": 32, "patch_size": 16}),
    "siglip": ("vit_base_patch16_siglip_224", {**SMALL, "img_size": 32, "patch_size": 16}),
    "eva02": ("eva02_base_patch14_224", {**SMALL, "img_size": 28, "patch_size": 14}),
    "beit": ("beit_base_patch16_224", {**SMALL, "img_size": 32, "patch_size": 16}),
    "swin": (
        "swin_tiny_patch4_window7_224",
        {"depths": (1, 1), "embed_dim": 32, "num_heads": (1, 2), "img_size": 32, "patch_size": 4, "window_size": 4},
    ),
}
NUM_CLASSES = 5
# refused for a reason of the family, its layout or the tiny model's size, named in the message
REFUSED = {
    ("eva02", "qalora"): "group sizes that divide every quantized layer",  # SwiGLU's 2/3 width: 85
    ("beit", "vpt"): "relative position bias covers the class token and the patches only",
    ("swin", "vpt"): "attention runs inside windows",
    # FacT shares one U and V across blocks of one width, over fused qkv, proj, fc1 (d -> k d) and fc2 Linears
    ("eva02", "fact_tt"): "blocks.0.attn.qkv of EvaBlock is not one",
    ("eva02", "fact_tk"): "blocks.0.attn.qkv of EvaBlock is not one",
    ("swin", "fact_tt"): "needs blocks of one width; this model's are 32, 64 wide",
    ("swin", "fact_tk"): "needs blocks of one width; this model's are 32, 64 wide",
    ("swin", "convpass"): "attention sees windows, not the grid",
}
# VPT's prompts change every token's attention by design (tests/tuners/test_zoo.py); QA-LoRA starts as
# its group-quantized base (tests/tuners/test_qalora.py), which its merge reproduces exactly
NO_IDENTITY = {"vpt", "qalora"}


def expected_refusal(family: str, method: str) -> str | None:
    if method in TEXT_ONLY:
        return f"method.name='{method}' {TEXT_ONLY_REFUSAL}.*not {type(base_model(family)).__name__}"
    return REFUSED.get((family, method))


_BASES: dict[str, torch.nn.Module] = {}


def base_model(family: str) -> torch.nn.Module:
    """The family's small random model, built once (each cell adapts a copy)."""
    if family not in _BASES:
        name, kwargs = FAMILIES[family]
        torch.manual_seed(0)
        _BASES[family] = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs).eval()
    return _BASES[family]


def images(family: str) -> torch.Tensor:
    size = FAMILIES[family][1]["img_size"]
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def adapt(family: str, method: str):
    cfg = load_config(overrides={"model": {**TINY_MODEL, "name": FAMILIES[family][0]}, "method": {"name": method}})
    torch.manual_seed(0)
    return apply_tuner(copy.deepcopy(base_model(family)), cfg.method, TunerContext.for_checks(cfg))


@pytest.mark.parametrize("method", list(TUNERS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_method_applies_to_each_family_or_refuses_in_one_line(family, method, tmp_path):
    refusal = expected_refusal(family, method)
    if refusal:
        with pytest.raises(ConfigError, match=refusal) as caught:
            adapt(family, method)
        assert "\n" not in str(caught.value)
        return
    tuner = adapt(family, method)
    check_cell(tuner, base_model(family), images(family), tmp_path, identity=method not in NO_IDENTITY)


@pytest.mark.parametrize("family", ["vit", "eva02", "beit", "swin"])
def test_the_standard_preset_means_q_and_v_of_every_block_on_every_family(family):
    cfg = load_config(overrides={"method": {"name": "lora", "target_modules": "standard"}})
    _, targets = plan_targets(base_model(family), cfg.method)
    blocks = {"swin": 2}.get(family, 2)
    assert len(targets) == 2 * blocks
    assert {t.rpartition(".")[2] for t in targets} <= {"q", "v", "q_proj", "v_proj"}
    assert len({t.rpartition(".")[2][0] for t in targets}) == 2


def test_swin_blocks_are_numbered_across_stages_for_the_presets():
    names = ["layers.0.blocks.0.attn.qkv.q", "layers.0.blocks.1.attn.qkv.q", "layers.1.blocks.0.attn.qkv.q"]
    canonical = canonical_names(names, family_of(base_model("swin")))
    assert list(canonical) == ["blocks.0.attn.qkv.q", "blocks.1.attn.qkv.q", "blocks.2.attn.qkv.q"]


def test_a_distilled_deit_is_refused_in_one_line_naming_its_two_heads():
    model = timm.create_model("deit_base_distilled_patch16_224", pretrained=False, num_classes=5, **SMALL, img_size=32)
    cfg = load_config(overrides={"method": {"name": "lora"}})
    with pytest.raises(ConfigError, match=r"VisionTransformerDistilled \(deit-distilled\): .*two heads"):
        apply_tuner(model, cfg.method, TunerContext.for_checks(cfg))


def test_beit_without_its_qkv_called_as_a_module_would_train_nothing_and_is_caught():
    """BEiT computes qkv with F.linear on the Linear's weight: without ``prepare`` an adapter on it is
    never called. ``check_reached`` is what turns such a layout into an error instead of a no-op."""
    cfg = load_config(
        overrides={"method": {"name": "ia3", "target_modules": ["blocks.0.mlp.fc2", "blocks.1.attn.qkv"]}}
    )
    tuner = apply_tuner(copy.deepcopy(base_model("beit")), cfg.method, TunerContext.for_checks(cfg))
    for module in tuner.model.modules():
        if hasattr(module, "qkv_bias_separate"):
            module.qkv_bias_separate = False  # timm's default: the Linear bypassed
    tuner.model.train()
    tuner.model(images("beit")).sum().backward()
    with pytest.raises(ConfigError, match=r"never uses 1 of its trainable tensors \(first: .*blocks\.1\.attn\.qkv"):
        check_reached(tuner)


@pytest.mark.parametrize("method", ["bitfit", "difffit"])
def test_beit_query_and_value_biases_train_as_biases(method):
    """BEiT's q_bias and v_bias sit beside its bias-less qkv: BitFit and DiffFit train them (PETL_Vision
    trains every parameter named bias), its relative position tables stay frozen."""
    tuner = adapt("beit", method)
    trained = {name.replace(".base_layer", "") for name in tuner.trainable_parameters()}  # DiffFit wraps attn
    assert {"blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "blocks.1.attn.v_bias"} <= trained
    assert not any("relative_position" in name for name in trained)


def test_vpt_on_eva_keeps_the_rotary_embedding_off_its_prompts():
    """EVA rotates every token after its prefix; VPT's prompts join the prefix (no position, as on a ViT),
    so each patch keeps the rotary position it has without prompts."""
    cfg = load_config(overrides={"model": {**TINY_MODEL, "name": FAMILIES["eva02"][0]}, "method": {"name": "vpt"}})
    tuner = apply_tuner(copy.deepcopy(base_model("eva02")), cfg.method, TunerContext.for_checks(cfg))
    prefix = base_model("eva02").num_prefix_tokens
    assert {block.base_layer.attn.num_prefix_tokens for block in tuner.model.blocks} == {
        prefix + cfg.method.prompt_tokens
    }


# trainable parameters besides the head, from each block's width d (Swin's grows by stage): LoRA and DoRA
# on q and v (A r x d, B d x r; DoRA adds a magnitude per output), an adapter of width m 2dm + m + d
# (Houlsby two per block, Pfeiffer and AdaptFormer one), VPT-deep n prompts of width d per block
R, M, N = 4, 3, 2
FORMULAS = {
    "lora": ({"r": R}, lambda widths: sum(2 * 2 * R * d for d in widths)),
    "dora": ({"r": R}, lambda widths: sum(2 * (2 * R * d + d) for d in widths)),
    "houlsby": ({"bottleneck": M}, lambda widths: sum(2 * (2 * d * M + M + d) for d in widths)),
    "pfeiffer": ({"bottleneck": M}, lambda widths: sum(2 * d * M + M + d for d in widths)),
    "adaptformer": ({"bottleneck": M}, lambda widths: sum(2 * d * M + M + d for d in widths)),
    "vpt": ({"prompt_tokens": N, "deep": True}, lambda widths: sum(N * d for d in widths)),
    "linear": ({}, lambda widths: 0),
}


@pytest.mark.parametrize("family, method", [(f, m) for f in FAMILIES for m in FORMULAS if not expected_refusal(f, m)])
def test_trainable_counts_follow_the_methods_formula_on_every_family(family, method):
    from peftlab.tuners.base import is_head_param
    from peftlab.tuners.timm_blocks import block_dim, block_names

    options, formula = FORMULAS[method]
    base = base_model(family)
    widths = [block_dim(base.get_submodule(name)) for name in block_names(base)]
    cfg = load_config(
        overrides={"model": {**TINY_MODEL, "name": FAMILIES[family][0]}, "method": {"name": method, **options}}
    )
    tuner = apply_tuner(copy.deepcopy(base), cfg.method, TunerContext.for_checks(cfg))
    counted = sum(p.numel() for n, p in tuner.trainable_parameters().items() if not is_head_param(n, tuner.head))
    assert counted == formula(widths)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_no_peft_format_files_for_an_adapter_on_beits_qkv(method, tmp_path):
    """Plain timm's BEiT adds q_bias and v_bias in F.linear on qkv's weight, never calling the module PEFT
    would wrap: PEFT would load such an adapter and silently do nothing, so none is written."""
    from peftlab.training.export import write_peft_adapter

    tuner = adapt("beit", method)
    with torch.no_grad():  # away from the start, where LoRA's update is zero and nothing would be written
        for param in tuner.trainable_parameters().values():
            param.add_(torch.randn_like(param), alpha=0.05)
    assert any(".attn.qkv." in key for key in tuner.peft_adapter()[1])
    assert write_peft_adapter(tuner, tmp_path / "peft") is False
    assert not (tmp_path / "peft").exists()
    mlp_only = load_config(
        overrides={
            "model": {**TINY_MODEL, "name": "beit_base_patch16_224"},
            "method": {"name": "lora", "target_modules": ["blocks.0.mlp.fc1"]},
        }
    )
    tuner = apply_tuner(copy.deepcopy(base_model("beit")), mlp_only.method, TunerContext.for_checks(mlp_only))
    with torch.no_grad():
        for param in tuner.trainable_parameters().values():
            param.add_(torch.randn_like(param), alpha=0.05)
    assert write_peft_adapter(tuner, tmp_path / "mlp")  # an adapter on a Linear that BEiT calls is written


# a layer without a bias of each family: SSF shifts it in the adapted model, and the merge has no bias to fold into
UNBIASED = {
    "clip": "patch_embed.proj",
    "eva02": "blocks.0.attn.k_proj",
    "beit": "blocks.0.attn.qkv",  # its q and v biases sit outside the Linear
    "swin": "layers.1.downsample.reduction",
}


@pytest.mark.parametrize("family", list(UNBIASED))
def test_ssf_trains_the_shift_of_a_layer_without_a_bias_and_only_the_merge_refuses(family):
    tuner = adapt(family, "ssf")
    shift = tuner.model.get_submodule(UNBIASED[family]).ssf_shift
    optimizer = torch.optim.SGD(tuner.trainable_parameters().values(), lr=0.1)
    tuner.model.train()
    for _ in range(2):
        tuner.model(images(family)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert shift.abs().sum() > 0  # the shift trained, where no bias of the base could have held it
    with torch.no_grad():
        assert not torch.allclose(tuner.model.eval()(images(family)), base_model(family)(images(family)))
    assert tuner.merged_model() is None
    refusal = tuner.merge_refusal()
    assert UNBIASED[family] in refusal and "\n" not in refusal
