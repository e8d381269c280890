"""The candidate pinned arithmetic (``peftlab.models.products``, issue 87): inside ``onednn_products`` a Linear's
forward and both backward products go through oneDNN, computing what PyTorch computes to rounding; outside it
nothing changes, bit for bit. Whether its bits agree across CPU vendors is what the step probe's records say
(benchmarks/step_probe/, benchmarks/pin_candidates.sh), not this file."""

import json

import pytest
import torch
import torch.nn.functional as F
from testkit import REPO
from tuners.test_lora_layer import outputs_and_grads, reference, split_qkv_of

from peftlab.models import products


def linear_and_grads(x, w, b):
    x, w, b = (t.clone().requires_grad_(True) for t in (x, w, b))
    out = F.linear(x, w, b)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach(), x.grad, w.grad, b.grad


def test_a_linear_inside_the_candidate_is_onednn_s_and_equals_pytorch_s_to_rounding():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(3, 17, 64, generator=g), torch.randn(96, 64, generator=g), torch.randn(96, generator=g)
    want = linear_and_grads(x, w, b)
    with products.onednn_products():
        assert type(F.linear(x.requires_grad_(), w, b).grad_fn).__name__ == "OneDNNLinearBackward"
        got = linear_and_grads(x.detach(), w, b)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-4)


def test_the_matrix_products_are_routed_with_their_out_and_in_place_forms():
    g = torch.Generator().manual_seed(1)
    a, m, bias = torch.randn(9, 16, generator=g), torch.randn(16, 5, generator=g), torch.randn(5, generator=g)
    out, acc = torch.empty(9, 5), torch.ones(9, 5)
    with products.onednn_products():
        results = [torch.mm(a, m), a @ m, torch.matmul(a, m), torch.addmm(bias, a, m)]
        torch.addmm(bias, a, m, out=out)
        acc.addmm_(a, m)
        mm, added = products.mm(a, m), products.addmm_(torch.ones(9, 5), a, m)
    for got, want in zip(
        results + [out, acc, mm, added], [a @ m] * 3 + [a @ m + bias] * 2 + [1 + a @ m] + [a @ m] + [1 + a @ m]
    ):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_outside_the_candidate_the_products_are_pytorch_s_bit_for_bit():
    """The current pin is untouched: ``products.mm`` and ``addmm_`` are ``@`` and ``addmm_`` outside the mode."""
    g = torch.Generator().manual_seed(2)
    a, m = torch.randn(33, 40, generator=g), torch.randn(40, 7, generator=g)
    assert torch.equal(products.mm(a, m), a @ m)
    assert torch.equal(products.addmm_(torch.ones(33, 7), a, m), torch.ones(33, 7).addmm_(a, m))


def test_bf16_autocast_and_other_dtypes_are_left_to_pytorch():
    x, w = torch.randn(4, 8), torch.randn(6, 8)
    with products.onednn_products():
        assert F.linear(x.double().requires_grad_(), w.double()).grad_fn.name() != "OneDNNLinearBackward"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert F.linear(x, w).dtype == torch.bfloat16


@pytest.mark.parametrize("targets", [("q", "v"), ("k",)])
def test_the_fused_qkv_lora_step_inside_the_candidate_equals_peft_s_layers(targets):
    """peftlab's fused q/k/v LoRA (stacked and per-slice backward) through oneDNN: PEFT's outputs and gradients."""
    split = split_qkv_of(targets)
    x = torch.randn(3, 7, split.in_features, generator=torch.Generator().manual_seed(1))
    ref, ref_grads = outputs_and_grads(lambda t: reference(split, t), split, x)
    with products.onednn_products():
        fused, fused_grads = outputs_and_grads(split, split, x)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(fused_grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_candidate_s_records_are_whole_and_name_the_pin_s_switches(threads):
    """The Intel Xeon's records of the candidate (made with benchmarks/step_probe.py --variant onednn --downstream):
    every default-study configuration, the pin's switches, and other bits than the COMPATIBLE pin's."""
    from peftlab.utils import cpu

    records = REPO / "benchmarks" / "step_probe"
    onednn = json.loads((records / f"intel-xeon-avx512-amx-onednn-downstream-threads{threads}.json").read_text())
    pinned = json.loads(
        (records / f"intel-xeon-avx512-amx-host-compatible-downstream-threads{threads}.json").read_text()
    )
    assert onednn["variant"] == "onednn" and onednn["pin"] == cpu.PINNED and onednn["threads"] == threads
    assert set(onednn["downstream"]) == set(pinned["downstream"])
    assert onednn["all"] != pinned["all"]
