"""The pin's quantized bases (issue 87; a candidate, ``onednn-quantized``, until 2026-11-30): a quantized base's
backward products through oneDNN, not MKL's COMPATIBLE branch where bitsandbytes' int8 layers and peftlab's 4-bit ones
call them under the pin of 2026-11-29 (``PEFTLAB_PIN_PRODUCTS=onednn``). Under the pin an int8 layer trains with
bitsandbytes' forward bit for bit and its input gradient is oneDNN's product; under that of 2026-11-29 nothing
changes. The committed Intel records of the two differ in the two quantized configurations alone."""

import json

import pytest
import torch
from testkit import REPO

from peftlab.analysis.archive.rerun import products_environment
from peftlab.analysis.results.record import class_vendor
from peftlab.config.sections import QuantConfig
from peftlab.models import products
from peftlab.utils import cpu

bnb = pytest.importorskip("bitsandbytes")


def int8_layers(in_features: int, out_features: int):
    """bitsandbytes' int8 layer and the pin's (``CandidateLinear8bitLt``), the same weights, in training mode."""
    from peftlab.quant.int8 import CandidateLinear8bitLt

    torch.manual_seed(0)
    linear = torch.nn.Linear(in_features, out_features)
    layers = []
    for kind in (bnb.nn.Linear8bitLt, CandidateLinear8bitLt):
        layer = kind(in_features, out_features, has_fp16_weights=False, threshold=6.0)
        layer.load_state_dict(linear.state_dict())
        layers.append(layer.to("cpu").train())
    return layers


def trained(layer, x: torch.Tensor, grad: torch.Tensor, products_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output and input gradient for ``x`` and the output gradient ``grad``, inside the mode."""
    x = x.clone().requires_grad_()
    with products.onednn_products(products_name):
        out = layer(x)
        out.backward(grad)
    return out.detach(), x.grad


def dequantized(layer) -> torch.Tensor:
    """The int8 layer's weight as bitsandbytes' training forward dequantizes it."""
    return layer.state.CB.to(torch.float32).mul_(layer.state.SCB.unsqueeze(1).mul(1.0 / 127.0))


@pytest.fixture
def through_onednn(monkeypatch) -> list:
    """The shapes of the backward products ``products.mm`` computes (oneDNN's inside the mode)."""
    shapes = []
    inner = products.mm
    monkeypatch.setattr(products, "mm", lambda a, b: shapes.append((tuple(a.shape), tuple(b.shape))) or inner(a, b))
    return shapes


def test_under_the_pin_an_int8_layer_trains_as_bitsandbytes_forward_its_input_gradient_through_onednn(
    through_onednn,
):
    plain, candidate = int8_layers(96, 48)
    x, grad = torch.randn(3, 5, 96) * 3, torch.randn(3, 5, 48)
    want_out, want_grad = trained(plain, x, grad, products.ONEDNN_PRODUCTS)  # 2026-11-29's pin: bitsandbytes' own
    same_out, same_grad = trained(candidate, x, grad, products.ONEDNN_PRODUCTS)
    assert torch.equal(same_out, want_out) and torch.equal(same_grad, want_grad)  # the class alone changes nothing
    assert not through_onednn
    got_out, got_grad = trained(candidate, x, grad, products.QUANTIZED)
    assert through_onednn == [((15, 48), (48, 96))]  # the input gradient, g (M, N) times the weight (N, K)
    assert torch.equal(got_out, want_out)  # the forward: bitsandbytes' operations, the same bits
    onednn = products._product(grad.reshape(-1, 48), dequantized(candidate).t()).view(3, 5, 96)
    assert torch.equal(got_grad, onednn)
    assert torch.equal(candidate.weight.data, candidate.state.CB)  # as bitsandbytes' forward leaves the layer


def test_under_the_pin_a_4bit_layers_input_gradient_goes_through_onednn(through_onednn):
    from peftlab.quant.bases import quantized_linear
    from peftlab.quant.step import dequantize_into_buffer

    torch.manual_seed(1)
    layer = quantized_linear(torch.nn.Linear(64, 32), QuantConfig(mode="nf4"), torch.device("cpu")).train()
    x, grad = torch.randn(4, 64), torch.randn(4, 32)
    _, pinned = trained(layer, x, grad, products.ONEDNN_PRODUCTS)
    assert not through_onednn
    _, candidate = trained(layer, x, grad, products.QUANTIZED)
    assert through_onednn == [((4, 32), (32, 64))]
    weight = dequantize_into_buffer(layer.weight, layer.weight.quant_state).clone()
    assert torch.equal(pinned, grad @ weight)  # 2026-11-29's pin: ``@`` as autograd calls it, MKL's COMPATIBLE branch
    assert torch.equal(candidate, products._product(grad, weight.t()))


def test_the_pin_builds_its_int8_layer_records_its_products_and_an_earlier_pins_runs_rerun_with_theirs(monkeypatch):
    from peftlab.quant.bases import int8_layer_class
    from peftlab.quant.int8 import CandidateLinear8bitLt

    monkeypatch.setenv(products.SWITCH, "onednn")  # the pin of 2026-11-29: bitsandbytes' own layer
    assert int8_layer_class(bnb) is bnb.nn.Linear8bitLt
    with products.onednn_products():  # the switch read where no products are given (benchmarks/step_probe.py)
        assert not products.quantized_backward()
    monkeypatch.delenv(products.SWITCH)  # unset: the pin's
    if cpu.applies():
        assert int8_layer_class(bnb) is CandidateLinear8bitLt
        with products.pinned_run_products(True):
            assert products.products_record() == products.QUANTIZED and products.quantized_backward()
    with products.onednn_products():
        assert products.quantized_backward()
    record = {"environment": {"arithmetic": {"pinned": True, "products": products.QUANTIZED}}}
    assert products_environment(record) == {}  # the pin's: no switch
    record["environment"]["arithmetic"]["products"] = products.ONEDNN_PRODUCTS
    assert products_environment(record) == {products.SWITCH: "onednn"}
    arithmetic = {"pinned": True, "mkl_branch": "COMPATIBLE,STRICT", "cpu_vendor": "GenuineIntel"}
    assert class_vendor({**arithmetic, "products": products.ONEDNN_PRODUCTS}) == "Intel or AMD"
    assert class_vendor({**arithmetic, "products": products.QUANTIZED}) == "Intel or AMD"  # an AMD EPYC's agree


def entries(record: list[dict]) -> list[list[str]]:
    """A step-probe record's (operation, digest) entries, step after step."""
    return [entry for step in record for entry in step["entries"]]


def test_the_pins_intel_records_differ_from_the_former_pins_in_the_quantized_configurations_alone():
    """benchmarks/step_probe/: at 1 and 2 threads every entry of the pretraining and of the six fp32 configurations
    equals the former pin's record, and the int8 and nf4 steps first differ at a backward entry (the forward is the
    same)."""
    records = REPO / "benchmarks" / "step_probe"
    for threads in (1, 2):
        name = "intel-xeon-avx512-amx-onednn{}-downstream-threads" + str(threads) + ".json"
        candidate = json.loads((records / name.format("-quantized")).read_text())
        pin = json.loads((records / name.format("")).read_text())
        assert candidate["variant"] == "onednn-quantized" and candidate["record"] == pin["record"]
        for config, step in pin["downstream"].items():
            mine, theirs = entries(candidate["downstream"][config]["record"]), entries(step["record"])
            if "quant=" not in config:
                assert mine == theirs, config
                continue
            first = next(i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b)
            assert mine[:first] == theirs[:first] and mine[first][0].startswith("bwd "), config
