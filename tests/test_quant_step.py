"""peftlab.quant.step: a 4-bit layer's CPU matmul through one reused buffer computes bitsandbytes'
numbers bit for bit (outputs, input and bias gradients, through stacked layers that overwrite the
buffer before the first one's backward), keeps one buffer per thread, and leaves every other
case to bitsandbytes."""

import threading

import pytest
import torch
from torch import nn

from peftlab.config.sections import QuantConfig
from peftlab.quant.bases import quantized_linear

bnb = pytest.importorskip("bitsandbytes")
quant_step = pytest.importorskip("peftlab.quant.step")

CPU = torch.device("cpu")


def stack(quant: dict, sizes=(64, 96, 64, 40)) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]
    return nn.Sequential(*(quantized_linear(layer, QuantConfig(**quant), CPU) for layer in layers))


def run(model: nn.Sequential, x: torch.Tensor, forward) -> tuple[torch.Tensor, ...]:
    """Output, input gradient and every bias gradient with each layer's forward replaced by ``forward``."""
    x = x.clone().requires_grad_(True)
    for layer in model:
        layer.bias.requires_grad_(True)
        layer.bias.grad = None
    y = x
    for layer in model:
        y = forward(layer, y)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(3)))
    return (y.detach(), x.grad, *(layer.bias.grad for layer in model))


@pytest.mark.parametrize("quant", [{"mode": "nf4"}, {"mode": "fp4"}, {"mode": "nf4", "double_quant": True}])
@pytest.mark.parametrize("shape", [(6, 64), (2, 5, 64)])
def test_the_buffered_matmul_is_bitsandbytes_bit_for_bit(quant, shape):
    model = stack(quant)
    assert all(type(layer) is quant_step.BufferedLinear4bit for layer in model)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ours = run(model, x, lambda layer, y: layer(y))
    theirs = run(model, x, bnb.nn.Linear4bit.forward)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_an_odd_row_length_takes_bitsandbytes_generic_dequantization_into_the_buffer():
    model = stack({"mode": "nf4", "double_quant": True}, sizes=(63, 40))
    x = torch.randn(4, 63, generator=torch.Generator().manual_seed(1))
    for a, b in zip(run(model, x, lambda layer, y: layer(y)), run(model, x, bnb.nn.Linear4bit.forward), strict=True):
        assert torch.equal(a, b)


def test_without_bitsandbytes_native_library_its_op_fills_the_buffer(monkeypatch):
    model = stack({"mode": "nf4", "double_quant": True}, sizes=(64, 40))
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    theirs = run(model, x, bnb.nn.Linear4bit.forward)
    monkeypatch.setattr(quant_step, "lib", quant_step.ErrorHandlerMockBNBNativeLibrary("not loaded here"))
    for a, b in zip(run(model, x, lambda layer, y: layer(y)), theirs, strict=True):
        assert torch.equal(a, b)


def test_one_buffer_per_thread_as_large_as_the_largest_weight():
    model = stack({"mode": "nf4"})
    model(torch.randn(2, 64))
    assert quant_step.buffer_bytes() >= 96 * 64 * 4
    layer = model[0]
    first = quant_step.dequantize_into_buffer(layer.weight, layer.weight.quant_state)
    second = quant_step.dequantize_into_buffer(model[2].weight, model[2].weight.quant_state)
    assert first.data_ptr() == second.data_ptr()
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(quant_step.weight_buffer((4, 4)).data_ptr()))
    thread.start()
    thread.join()
    assert elsewhere[0] != first.data_ptr()


def test_a_bf16_compute_dtype_is_left_to_bitsandbytes(monkeypatch):
    model = stack({"mode": "nf4", "compute_dtype": "bf16"}, sizes=(64, 32))
    calls = []
    monkeypatch.setattr(quant_step.BufferedMatmul4bit, "apply", lambda *a: calls.append(a))
    x = torch.randn(3, 64)
    assert torch.equal(model[0](x), bnb.nn.Linear4bit.forward(model[0], x))
    assert not calls


@pytest.mark.parametrize("quant", [{"mode": "nf4", "double_quant": True}, {"mode": "fp4"}])
def test_a_qlora_base_takes_the_fused_qkv_step_with_the_numbers_of_its_own_layers(quant, monkeypatch):
    from testkit import TINY_MODEL

    from peftlab.config.schema import load_config
    from peftlab.models.backbones import build_backbone
    from peftlab.tuners import modules
    from peftlab.tuners.base import TunerContext, apply_tuner

    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": "lora", "r": 4}, "quant": quant})
    torch.manual_seed(0)
    model = apply_tuner(build_backbone(cfg.model, 5), cfg.method, TunerContext.for_checks(cfg)).model
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the adapters an update to get wrong
            param.data.normal_(0, 0.1)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def outputs():
        model.zero_grad()
        y = model(x)
        y.square().sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return y.detach(), grads

    stacks = []
    stacked = modules.quantized_stack
    monkeypatch.setattr(modules, "quantized_stack", lambda *a: stacks.append(stacked(*a)) or stacks[-1])
    fused, fused_grads = outputs()
    assert stacks and all(isinstance(s, quant_step.StackedWeights) for s in stacks)
    monkeypatch.setattr(modules, "quantized_stack", lambda *a: None)
    separate, separate_grads = outputs()
    torch.testing.assert_close(fused, separate, rtol=1e-5, atol=1e-5)
    assert fused_grads.keys() == separate_grads.keys() and any("lora_A" in n for n in fused_grads)
    for name in fused_grads:
        torch.testing.assert_close(fused_grads[name], separate_grads[name], rtol=1e-4, atol=1e-5)
