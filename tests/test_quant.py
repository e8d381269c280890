"""Quantized bases (bitsandbytes int8, nf4, fp4, nf4 + double quant) under LoRA and the linear probe.

Every mode x {timm q/v slices, timm whole qkv, HF ViT}: the layers are bitsandbytes layers
wrapped by PEFT's bnb LoRA layers; training changes only the adapters and the head, the
stored quantized base stays byte-identical; the fp32 merge equals the adapter; the adapter
file round-trips; training resumed from a saved state is bit-identical.
"""

import io

import pytest
import torch
from safetensors.torch import load_file, save_file
from testkit import TINY_MODEL

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.quant.bases import is_quantized_linear, weight_only_arithmetic
from peftlab.training.evaluate import MERGE_TOLERANCE
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.utils.errors import ConfigError

bnb = pytest.importorskip("bitsandbytes")

NUM_CLASSES = 5
MODES = {
    "int8": {"mode": "int8"},
    "nf4": {"mode": "nf4"},
    "fp4": {"mode": "fp4"},
    "nf4-dq": {"mode": "nf4", "double_quant": True},
}
TARGETS = ["timm-qv-slices", "timm-whole-qkv", "hf-vit"]


def make(target: str, quant: dict, hf_dir, method: str = "lora"):
    model = {"source": "hf", "path": str(hf_dir)} if target == "hf-vit" else TINY_MODEL
    options = {"r": 4, "target_modules": [r"blocks\.\d+\.attn\.qkv"] if target == "timm-whole-qkv" else "standard"}
    cfg = load_config(
        overrides={"model": model, "method": {"name": method, **(options if method == "lora" else {})}, "quant": quant}
    )
    torch.manual_seed(0)
    return apply_tuner(build_backbone(cfg.model, NUM_CLASSES), cfg.method, TunerContext.for_checks(cfg))


def images(n=4):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def train_steps(tuner, optimizer, steps, first=0):
    tuner.model.train()
    for step in range(first, first + steps):
        x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(step))
        loss = torch.nn.functional.cross_entropy(tuner.model(x), torch.arange(8) % NUM_CLASSES)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def optimizer_of(tuner):
    return torch.optim.AdamW(tuner.trainable_parameters().values(), lr=1e-2)


def is_trainable_key(key: str) -> bool:
    return "lora_" in key or "modules_to_save" in key


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_quantized_lora_trains_only_adapters_and_merges_exactly(mode, target, hf_dir):
    from peft.tuners.lora import bnb as lora_bnb

    tuner = make(target, MODES[mode], hf_dir)
    adapted = [m for m in tuner.model.modules() if hasattr(m, "lora_A")]
    wrapper = lora_bnb.Linear8bitLt if mode == "int8" else lora_bnb.Linear4bit
    assert adapted and all(type(m) is wrapper for m in adapted)  # PEFT's bnb LoRA layers, not plain Linear ones
    assert tuner.quantized and not any(
        is_quantized_linear(m) for n, m in tuner.model.named_modules() if n.endswith(("head", "classifier"))
    )
    before = {k: v.clone() for k, v in tuner.model.state_dict().items()}
    train_steps(tuner, optimizer_of(tuner), 3)
    after = tuner.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(is_trainable_key(k) for k in changed)  # the stored quantized base is untouched
    assert any("lora_B" in k for k in changed)

    tuner.model.eval()
    x = images()
    with torch.no_grad():
        with weight_only_arithmetic(tuner.model):
            reference = tuner.model(x)
        merged = tuner.merged_model().eval()
        assert not any(is_quantized_linear(m) for m in merged.modules())  # fp32 weights dequant(W) + ΔW
        diff = (merged(x) - reference).abs().max()
        assert diff <= MERGE_TOLERANCE * max(1.0, float(reference.abs().max())), diff
        requantized = tuner.merged_model(quantized=True).eval()
        assert any(is_quantized_linear(m) for m in requantized.modules())
        assert torch.isfinite(requantized(x)).all()

    # the adapter file round trip: a fresh model on the same quantized base gives the same outputs
    path = hf_dir.parent / f"adapter-{mode}-{target}.safetensors"
    save_file(tuner.adapter_state_dict(), str(path))
    fresh = make(target, MODES[mode], hf_dir)
    fresh.load_adapter_state_dict(load_file(str(path)))
    fresh.model.eval()
    with torch.no_grad():
        assert torch.equal(fresh.model(x), tuner.model(x))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_quantized_training_resumes_bit_identically(mode, target, hf_dir):
    straight = make(target, MODES[mode], hf_dir)
    train_steps(straight, optimizer_of(straight), 4)

    first = make(target, MODES[mode], hf_dir)
    optimizer = optimizer_of(first)
    train_steps(first, optimizer, 2)
    saved = io.BytesIO()
    torch.save({"trainable": first.trainable_state_dict(), "optimizer": optimizer.state_dict()}, saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    resumed = make(target, MODES[mode], hf_dir)
    resumed.load_trainable_state_dict(state["trainable"])
    optimizer = optimizer_of(resumed)
    optimizer.load_state_dict(state["optimizer"])
    train_steps(resumed, optimizer, 2, first=2)

    a, b = straight.trainable_state_dict(), resumed.trainable_state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_linear_probe_on_a_quantized_base_trains_the_head_only(hf_dir):
    tuner = make("timm-qv-slices", MODES["nf4"], hf_dir, method="linear")
    assert tuner.quantized
    before = {k: v.clone() for k, v in tuner.model.state_dict().items()}
    train_steps(tuner, optimizer_of(tuner), 2)
    changed = {k for k, v in tuner.model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"head.weight", "head.bias"}


def test_full_fine_tuning_on_a_quantized_base_is_a_config_error():
    with pytest.raises(ConfigError, match=r"quant.mode='nf4' is invalid: expected 'none' for method 'full'"):
        load_config(overrides={"method": {"name": "full"}, "quant": {"mode": "nf4"}})


def test_quantizing_the_head_is_a_config_error(hf_dir):
    with pytest.raises(ConfigError, match=r"quant.skip=.* must name the classifier head 'head'"):
        make("timm-qv-slices", {"mode": "nf4", "skip": ["patch_embed.*"]}, hf_dir)


def test_missing_bitsandbytes_is_a_one_line_config_error(monkeypatch, hf_dir):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as on a machine without it
    with pytest.raises(ConfigError, match=r"quant.mode='nf4' needs bitsandbytes.*pip install bitsandbytes==") as err:
        make("timm-qv-slices", MODES["nf4"], hf_dir)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_stored_bytes_are_what_bitsandbytes_keeps(mode, hf_dir):
    """int8 keeps a byte per weight plus a scale per row; 4-bit half a byte plus absmax per 64 weights."""
    tuner = make("timm-qv-slices", MODES[mode], hf_dir)
    layers = [m for m in tuner.model.modules() if is_quantized_linear(m)]
    expected = 0
    for layer in layers:
        n, rows = layer.in_features * layer.out_features, layer.out_features
        if mode == "int8":
            expected += n + 4 * rows + 1  # int8 codes, fp32 SCB per row, the weight_format byte
        else:
            blocks = n // 64
            absmax = blocks + 4 * (-(-blocks // 256)) + 4 * 256 if mode == "nf4-dq" else 4 * blocks
            expected += (
                n // 2 + absmax + 4 * 16 + sum(t.numel() for k, t in layer.state_dict().items() if "quant_state" in k)
            )
        expected += 4 * rows  # fp32 bias
    counted = sum(t.numel() * t.element_size() for layer in layers for t in layer.state_dict().values())
    assert counted == expected
    sizes = tuner.base_weight_bytes()
    assert sizes["base_weights_bytes"] < sizes["base_weights_fp32_bytes"]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_parameter_counts_do_not_change_with_quantization(mode, hf_dir):
    plain, quantized = make("timm-qv-slices", {}, hf_dir), make("timm-qv-slices", MODES[mode], hf_dir)
    assert quantized.parameter_counts() == plain.parameter_counts()


# bitsandbytes' AVX512-BF16 CPU kernel repacks a 4-bit weight in place during evaluation (only on
# such CPUs). These tests force the repacking by hand, so they pin the behaviour on every CPU.
FOUR_BIT = ["nf4", "fp4", "nf4-dq"]


def repack_by_hand(model) -> int:
    """What ``Linear4bit.forward`` does to every 4-bit layer on an AVX512-BF16 CPU in eval mode."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu(
            layer.weight.data, layer.weight.quant_state
        )
    return len(layers)


@pytest.mark.parametrize("kernel", ["reference", "bnb"])
def test_every_4bit_layer_peftlab_builds_takes_the_kernel_its_config_names(kernel, hf_dir, tmp_path):
    from peftlab.quant.bases import load_quantized_state, quantize_base

    tuner = make("timm-qv-slices", {"mode": "nf4", "cpu_kernel": kernel}, hf_dir)
    requantized = tuner.merged_model(quantized=True)
    cfg = load_config(overrides={"model": TINY_MODEL, "quant": {"mode": "nf4", "cpu_kernel": kernel}})
    saved, fresh = (build_backbone(cfg.model, NUM_CLASSES) for _ in range(2))
    for model in (saved, fresh):
        quantize_base(model, cfg.quant, torch.device("cpu"))
    load_quantized_state(
        fresh, saved.state_dict(), torch.device("cpu")
    )  # as peftlab.training.export.load_quantized does
    from peftlab.quant.bases import cpu_has_bnb_kernel

    expected = kernel == "bnb" and cpu_has_bnb_kernel()  # bnb's kernel only where the CPU has AVX512-BF16
    for model in (tuner.model, requantized, fresh):
        layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert layers and all(m.support_avx512bf16_for_cpu is expected for m in layers)


def test_the_reference_kernel_never_repacks_in_evaluation(hf_dir):
    tuner = make("timm-qv-slices", MODES["nf4"], hf_dir)
    tuner.model.eval()
    with torch.no_grad():
        tuner.model(images())
    assert not any(
        getattr(m.weight.quant_state, "packing_format_for_cpu", False)
        for m in tuner.model.modules()
        if isinstance(m, bnb.nn.Linear4bit)
    )


@pytest.mark.parametrize("mode", FOUR_BIT)
def test_restore_layout_gives_back_the_codes_and_the_bf16_statistics(mode):
    """bitsandbytes' own inverse leaves a non-nested absmax transposed (5.6% weight error); ours does not."""
    from peftlab.quant.bases import dequantized_weight, is_repacked, quantized_linear, restore_layout

    torch.manual_seed(0)
    quant = load_config(overrides={"quant": MODES[mode]}).quant
    layer = quantized_linear(torch.nn.Linear(128, 64), quant, torch.device("cpu"))  # as peftlab builds them
    codes, before = layer.weight.data.clone(), dequantized_weight(layer)
    bytes_before = {k: v.numel() * v.element_size() for k, v in layer.state_dict().items()}
    assert repack_by_hand(layer) == 1 and is_repacked(layer)
    restore_layout(layer)
    assert not is_repacked(layer)
    assert torch.equal(layer.weight.data, codes)
    after = dequantized_weight(layer)
    scale = before.abs().amax()
    assert (after - before).abs().max() <= 2**-7 * scale  # only the absmax's bf16 rounding
    assert {k: v.numel() * v.element_size() for k, v in layer.state_dict().items()} == bytes_before

    repack_by_hand(layer)  # state_dict() itself restores it first (bitsandbytes' own inverse would not, exactly)
    saved = layer.state_dict()
    assert {k: v.numel() * v.element_size() for k, v in saved.items()} == bytes_before
    assert torch.equal(saved["weight"], codes) and torch.equal(dequantized_weight(layer), after)


@pytest.mark.parametrize("target", ["timm-qv-slices", "hf-vit"])
@pytest.mark.parametrize("mode", FOUR_BIT)
def test_a_repacked_base_still_merges_exactly_counts_its_bytes_and_trains(mode, target, hf_dir):
    tuner = make(target, MODES[mode], hf_dir)
    optimizer = optimizer_of(tuner)
    train_steps(tuner, optimizer, 2)
    sizes = tuner.base_weight_bytes()
    assert repack_by_hand(tuner.model) > 0
    assert tuner.base_weight_bytes() == sizes

    repack_by_hand(tuner.model)
    tuner.model.eval()
    x = images()
    with torch.no_grad():
        merged = tuner.merged_model().eval()
        with weight_only_arithmetic(tuner.model):
            reference = tuner.model(x)
        diff = (merged(x) - reference).abs().max()
    assert diff <= MERGE_TOLERANCE * max(1.0, float(reference.abs().max())), diff
    assert torch.isfinite(tuner.merged_model(quantized=True).eval()(x)).all()

    repack_by_hand(tuner.model)  # as after an evaluation with quant.cpu_kernel bnb: the recipe's evaluate restores
    from peftlab.training.evaluate import evaluate

    evaluate(
        tuner.model,
        torch.utils.data.TensorDataset(x, torch.zeros(4, dtype=torch.long)),
        4,
        torch.device("cpu"),
        "fp32",
        "val",
    )
    train_steps(tuner, optimizer, 1, first=2)  # bitsandbytes' packed path would fail here ("a view of a leaf")
