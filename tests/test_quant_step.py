"""peftlab.quant_step: a 4-bit layer's CPU matmul through one reused buffer computes bitsandbytes'
numbers bit for bit (outputs, input and bias gradients, through stacked layers that overwrite the
buffer before the first one's backward), keeps one buffer per thread, and leaves every other
case to bitsandbytes."""

import threading

import pytest
import torch
from torch import nn

from peftlab.config_sections import QuantConfig
from peftlab.quant import quantized_linear

bnb = pytest.importorskip("bitsandbytes")
quant_step = pytest.importorskip("peftlab.quant_step")

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
