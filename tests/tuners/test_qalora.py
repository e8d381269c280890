"""QA-LoRA: peftlab's group-wise quantizer and the QA-LoRA layer.

Every target kind (timm q/v slices, timm whole qkv, timm proj + fc1 + fc2, an HF ViT): the
adapter starts as its quantized base; only adapters and head train; the merge keeps the codes
bit-identical and equals the unmerged model to fp32 tolerance; training resumes bit-identically.
"""

import copy
import io
import math

import pytest
import torch
from testkit import TINY_MODEL
from torch import nn

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.training.evaluate import MERGE_TOLERANCE
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.tuners.qalora import quantizer
from peftlab.tuners.qalora.layer import GroupQuantLinear, QALoraLinear
from peftlab.tuners.qalora.model import schedule_lambda
from peftlab.utils.errors import ConfigError

NUM_CLASSES = 5
FORMATS = ["int2", "int3", "int4", "int8", "nf4", "fp4"]
TARGETS = {
    "timm-qv-slices": "standard",
    "timm-whole-qkv": [r"blocks\.\d+\.attn\.qkv"],
    "timm-proj-mlp": [r"blocks\.\d+\.attn\.proj", r"blocks\.\d+\.mlp\.(fc1|fc2)"],
    "hf-vit": "all-linear",
}


def make(target="timm-qv-slices", hf_dir=None, total_steps=None, **options):
    """(fp32 base model, QA-LoRA tuner on a copy of it)."""
    model_cfg = {"source": "hf", "path": str(hf_dir)} if target == "hf-vit" else TINY_MODEL
    cfg = load_config(
        overrides={
            "model": model_cfg,
            "method": {"name": "qalora", "r": 4, "target_modules": TARGETS[target], **options},
        }
    )
    torch.manual_seed(0)
    model = build_backbone(cfg.model, NUM_CLASSES)
    base = copy.deepcopy(model).eval()
    return base, apply_tuner(model, cfg.method, TunerContext(total_steps, torch.device("cpu"), cfg.quant))


def images(n=4):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def perturb_adapters(tuner):
    with torch.no_grad():
        for name, param in tuner.model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.2 * torch.randn(param.shape, generator=torch.Generator().manual_seed(len(name))))


def train_steps(tuner, optimizer, steps, first=0):
    tuner.model.train()
    for step in range(first, first + steps):
        x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(tuner.model(x), torch.arange(8) % NUM_CLASSES)
        loss.backward()
        optimizer.step()
        tuner.after_step(step)
        optimizer.zero_grad()


def optimizer_of(tuner):
    return torch.optim.AdamW(tuner.trainable_parameters().values(), lr=1e-2)


def quantized_copy(base: nn.Module, fmt: str, group_size: int) -> nn.Module:
    """The fp32 base with every block Linear's weight replaced by dequant(quant(W)), straight from quantizer.py."""
    model = copy.deepcopy(base)
    with torch.no_grad():
        for name, module in model.named_modules():
            if type(module) is nn.Linear and not name.endswith(("head", "classifier")):
                codes, scales, shifts = quantizer.quantize_groups(module.weight, fmt, group_size)
                module.weight.copy_(quantizer.dequantize_groups(codes, scales, shifts, fmt))
    return model


def tolerance(reference: torch.Tensor) -> float:
    return MERGE_TOLERANCE * max(1.0, float(reference.abs().max()))


# --- the quantizer ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantization_error_is_at_most_half_a_step(fmt):
    """Rounding to the nearest level: |W - Ŵ| <= s/2 (integers), s·(largest codebook gap)/2 (nf4, fp4)."""
    weight = torch.randn(48, 256, generator=torch.Generator().manual_seed(0))
    codes, scales, shifts = quantizer.quantize_groups(weight, fmt, 32)
    assert codes.dtype == torch.uint8 and int(codes.max()) < 2 ** quantizer.BITS[fmt]
    approx = quantizer.dequantize_groups(codes, scales, shifts, fmt)
    bound = quantizer.error_bound(scales, fmt).repeat_interleave(32, dim=1)
    assert ((weight - approx).abs() <= bound * (1 + 1e-5) + 1e-6).all()
    # the bound is not vacuous: on N(0, 1) groups of 32 the range is about 4 standard deviations
    assert quantizer.relative_error(weight, approx) <= float(bound.square().mean().sqrt())
    assert (
        quantizer.relative_error(weight, approx)
        < {"int2": 0.5, "int3": 0.2, "int4": 0.1, "int8": 0.006, "nf4": 0.12, "fp4": 0.15}[fmt]
    )


def test_more_bits_give_smaller_errors():
    weight = torch.randn(32, 128, generator=torch.Generator().manual_seed(0))
    errors = [
        quantizer.relative_error(weight, quantizer.dequantize_groups(*quantizer.quantize_groups(weight, f, 32), f))
        for f in ("int2", "int3", "int4", "int8")
    ]
    assert errors == sorted(errors, reverse=True) and len(set(errors)) == 4


@pytest.mark.parametrize("fmt", FORMATS)
def test_codes_pack_and_unpack(fmt):
    codes = torch.randint(
        0, 2 ** quantizer.BITS[fmt], (7, 9), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    packed = quantizer.pack_codes(codes, fmt)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(63 * quantizer.slot_bits(fmt) / 8)
    assert torch.equal(quantizer.unpack_codes(packed, fmt, (7, 9)), codes)


@pytest.mark.parametrize("fmt", ["nf4", "fp4"])
def test_codebooks_are_bitsandbytes_values(fmt):
    functional = pytest.importorskip("bitsandbytes.functional")
    theirs = functional.get_4bit_type(fmt, device="cpu").float()
    theirs = theirs / theirs.abs().max()
    torch.testing.assert_close(quantizer.codebook(fmt), theirs.sort().values, rtol=0, atol=1e-6)


# --- the layer and the model -------------------------------------------------------------


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_zero_init_model_is_its_quantized_base(target, hf_dir):
    base, tuner = make(target, hf_dir)
    adapted = [m for m in tuner.model.modules() if isinstance(m, QALoraLinear)]
    assert adapted and all(float(m.lora_B.weight.detach().abs().max()) == 0 for m in adapted)
    tuner.model.eval()
    reference = quantized_copy(base, "int4", 32).eval()
    with torch.no_grad():
        out, expected = tuner.model(images()), reference(images())
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        assert (out - base(images())).abs().max() > 1e-4  # and it is not the fp32 base


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_only_adapters_and_head_train(target, hf_dir):
    _, tuner = make(target, hf_dir)
    before = {k: v.clone() for k, v in tuner.model.state_dict().items()}
    train_steps(tuner, optimizer_of(tuner), 3)
    changed = {k for k, v in tuner.model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all("lora_" in k or k.startswith(("head.", "model.classifier.")) for k in changed), changed
    assert any("lora_B" in k for k in changed)
    head = {"hf-vit": "model.classifier"}.get(target, "head")
    assert not any(isinstance(m, GroupQuantLinear) for n, m in tuner.model.named_modules() if n.startswith(head))
    assert not any(isinstance(m, GroupQuantLinear) for n, m in tuner.model.named_modules() if "patch_embed" in n)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_merge_keeps_the_codes_and_equals_the_adapter(target, fmt, hf_dir):
    _, tuner = make(target, hf_dir, format=fmt)
    train_steps(tuner, optimizer_of(tuner), 2)
    perturb_adapters(tuner)
    tuner.model.eval()
    x = images()
    with torch.no_grad():
        reference = tuner.model(x)
        merged_q = tuner.merged_model(quantized=True).eval()
        assert not any(isinstance(m, QALoraLinear) for m in merged_q.modules())
        before = {n.removesuffix(".base_layer"): m for n, m in tuner.quantized_layers().items()}
        after = tuner.quantized_layers(merged_q)
        assert before.keys() == after.keys()
        for name, layer in after.items():
            assert torch.equal(layer.codes, before[name].codes) and torch.equal(layer.scales, before[name].scales)
        adapted = [n.removesuffix(".base_layer") for n, m in tuner.model.named_modules() if isinstance(m, QALoraLinear)]
        assert all(not torch.equal(after[n].shifts, before[n].shifts) for n in adapted)  # the update went in there
        assert tuner.quantized_merge_facts(merged_q) == {"codes_unchanged": True}
        assert (merged_q(x) - reference).abs().max() <= tolerance(reference)
        merged = tuner.merged_model().eval()  # float weights Q(W) + ΔW
        assert not any(isinstance(m, GroupQuantLinear) for m in merged.modules())
        assert (merged(x) - reference).abs().max() <= tolerance(reference)
    if target != "hf-vit":  # a plain timm model again: the q/k/v slices fused back into qkv
        assert set(merged.state_dict()) == set(
            build_backbone(load_config(overrides={"model": TINY_MODEL}).model, NUM_CLASSES).state_dict()
        )


def test_merged_weight_is_quantized_weight_plus_the_pooled_update():
    """ΔW[i, j] = scaling·(B·A)[i, g(j)] / L: the layer's function with the pooled input, written as a weight."""
    linear = nn.Linear(64, 8)
    layer = QALoraLinear(GroupQuantLinear.from_linear(linear, "int4", 16), r=2, lora_alpha=4.0, lora_dropout=0.0)
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(3, 64)
    expected = x @ (layer.base_layer.dequantized_weight() + layer.delta_weight()).T + linear.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.merged_base()(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["timm-qv-slices", "hf-vit"])
def test_training_resumes_bit_identically(target, hf_dir):
    options = {"schedule": "cosine", "schedule_steps": 3, "lora_dropout": 0.1}
    _, straight = make(target, hf_dir, total_steps=4, **options)
    train_steps(straight, optimizer_of(straight), 4)

    _, first = make(target, hf_dir, total_steps=4, **options)
    optimizer = optimizer_of(first)
    train_steps(first, optimizer, 2)
    saved = io.BytesIO()
    torch.save(
        {
            "trainable": first.trainable_state_dict(),
            "optimizer": optimizer.state_dict(),
            "tuner": first.state_dict(),
            "rng": torch.get_rng_state(),
        },
        saved,
    )
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    _, resumed = make(target, hf_dir, total_steps=4, **options)
    resumed.load_trainable_state_dict(state["trainable"])
    resumed.load_state_dict(state["tuner"])
    optimizer = optimizer_of(resumed)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    train_steps(resumed, optimizer, 2, first=2)

    assert resumed.lam == straight.lam == 1.0
    a, b = straight.trainable_state_dict(), resumed.trainable_state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- the schedule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule, start, middle, end", [("constant", 1.0, 1.0, 1.0), ("linear", 0.0, 0.5, 1.0), ("cosine", 0.0, 0.5, 1.0)]
)
def test_schedule_lambda_at_start_middle_and_end(schedule, start, middle, end):
    assert schedule_lambda(schedule, 0, 10) == start
    assert schedule_lambda(schedule, 5, 10) == pytest.approx(middle, abs=1e-12)
    assert schedule_lambda(schedule, 10, 10) == end
    assert schedule_lambda(schedule, 13, 10) == end
    if schedule == "cosine":  # slower than linear at first, faster later
        assert schedule_lambda("cosine", 2, 10) < schedule_lambda("linear", 2, 10)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_a_schedule_moves_the_model_from_fp32_to_quantized(schedule):
    base, tuner = make(total_steps=6, schedule=schedule, schedule_steps=4)
    tuner.model.eval()
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(tuner.model(x), base(x), rtol=1e-5, atol=1e-5)  # λ = 0: the fp32 weights
        for step in range(4):
            tuner.after_step(step)
        assert tuner.lam == 1.0
        assert all(m.float_weight is None for m in tuner.quantized_layers().values())  # fp32 copies dropped
        torch.testing.assert_close(tuner.model(x), quantized_copy(base, "int4", 32).eval()(x), rtol=1e-5, atol=1e-5)


def test_a_schedule_longer_than_the_run_is_a_config_error():
    with pytest.raises(ConfigError, match=r"method.schedule_steps=8 is invalid: expected at most the run's 5 "):
        make(total_steps=5, schedule="linear", schedule_steps=8)
    with pytest.raises(ConfigError, match=r"method.schedule_steps=4 is invalid: expected null when"):
        load_config(overrides={"method": {"name": "qalora", "schedule_steps": 4}})


# --- checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target, group_size", [("timm-qv-slices", 48), ("timm-whole-qkv", 48), ("hf-vit", 48), ("timm-proj-mlp", 128)]
)
def test_a_group_size_that_does_not_divide_a_layer_is_a_one_line_error(target, group_size, hf_dir):
    with pytest.raises(ConfigError) as err:
        make(target, hf_dir, group_size=group_size)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"method.group_size={group_size} is invalid: ")
    assert "has in_features=64; group sizes that divide every quantized layer: 1, 2, 4, 8, 16, 32, 64" in message


def test_qalora_refuses_a_bitsandbytes_base_and_quant_group_size_points_to_the_method():
    with pytest.raises(
        ConfigError,
        match=r"quant.mode='nf4' is invalid: expected 'none' for method 'qalora', "
        r"which quantizes its own base group-wise",
    ):
        load_config(overrides={"method": {"name": "qalora"}, "quant": {"mode": "nf4"}})
    with pytest.raises(
        ConfigError,
        match=r"quant.group_size=32 is invalid: expected null \(QA-LoRA's group size "
        r"is method.group_size",
    ):
        load_config(overrides={"quant": {"group_size": 32}})
    with pytest.raises(ConfigError, match=r"method.format='int5' is invalid: expected one of"):
        load_config(overrides={"method": {"name": "qalora", "format": "int5"}})


# --- counts and bytes ----------------------------------------------------------------------


def test_parameter_counts_and_stored_bytes():
    base, tuner = make(format="nf4", group_size=16)
    counts = tuner.parameter_counts()
    d, depth, hidden = TINY_MODEL["embed_dim"], TINY_MODEL["depth"], 4 * TINY_MODEL["embed_dim"]
    adapter = depth * 2 * (4 * d // 16 + d * 4)  # q and v: A is r x in/L, B is out x r
    head = d * NUM_CLASSES + NUM_CLASSES
    assert counts == {"total": sum(p.numel() for p in base.parameters()) + adapter, "trainable": adapter + head}
    layers = [(d, d)] * 3 + [(d, d), (d, hidden), (hidden, d)]  # (in, out): q, k, v, proj, fc1, fc2
    stored = 0
    for in_features, out_features in layers * depth:
        groups = out_features * in_features // 16
        stored += (
            out_features * in_features // 2 + 2 * 4 * groups + 4 * out_features + 4 * 16
        )  # codes, scales, offsets, bias, codebook
    quantized = sum(
        t.numel() * t.element_size() for m in tuner.quantized_layers().values() for t in m.state_dict().values()
    )
    assert quantized == stored
    sizes = tuner.base_weight_bytes()
    fp32_linears = sum(4 * (i * o + o) for i, o in layers * depth)
    assert sizes["base_weights_fp32_bytes"] - sizes["base_weights_bytes"] == fp32_linears - stored


def test_parameter_counts_of_deit_tiny_on_the_meta_device():
    from peftlab.tuners.params import count_parameters

    cfg = load_config(
        overrides={
            "model": {"name": "deit_tiny_patch16_224", "num_classes": 10},
            "method": {"name": "qalora", "r": 8, "group_size": 32},
        }
    )
    counts = count_parameters(cfg)
    assert counts["adapter"] == 12 * 2 * (8 * 192 // 32 + 192 * 8)  # q and v in 12 blocks
    assert counts["head"] == 1_930 and counts["total"] == 5_526_346 + counts["adapter"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("fmt", FORMATS)
def test_on_cuda_the_codes_match_cpu_and_the_merge_is_exact(fmt):
    weight = torch.randn(96, 256, generator=torch.Generator().manual_seed(0))
    on_cpu, on_gpu = (quantizer.quantize_groups(w, fmt, 32) for w in (weight, weight.cuda()))
    assert torch.equal(on_cpu[0], on_gpu[0].cpu())  # the same integer codes on both devices
    torch.testing.assert_close(on_cpu[1], on_gpu[1].cpu(), rtol=1e-6, atol=0)
    packed = quantizer.pack_codes(on_gpu[0], fmt)
    assert torch.equal(packed.cpu(), quantizer.pack_codes(on_cpu[0], fmt))
    assert torch.equal(quantizer.unpack_codes(packed, fmt, (96, 256)).cpu(), on_cpu[0])

    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": "qalora", "r": 4, "format": fmt}})
    torch.manual_seed(0)
    tuner = apply_tuner(
        build_backbone(cfg.model, NUM_CLASSES), cfg.method, TunerContext(None, torch.device("cuda"), cfg.quant)
    )
    tuner.model.cuda()
    optimizer = optimizer_of(tuner)
    x = images(8).cuda()
    for _ in range(2):
        nn.functional.cross_entropy(tuner.model(x), torch.arange(8, device="cuda") % NUM_CLASSES).backward()
        optimizer.step()
        optimizer.zero_grad()
    perturb_adapters(tuner)
    tuner.model.eval()
    with torch.no_grad():
        reference = tuner.model(x)
        merged = tuner.merged_model(quantized=True).eval()
        assert tuner.quantized_merge_facts(merged) == {"codes_unchanged": True}
        assert (merged(x) - reference).abs().max() <= tolerance(reference)
