"""bitsandbytes' int8 products inside the pin's products (``models.products``): an int8 layer in evaluation gives the
same bits through oneDNN as through bitsandbytes' own CPU kernels, because its int8 x int8 sums are exact in fp32
up to a depth of 1,024; deeper ones stay bitsandbytes'."""

import pytest
import torch

from peftlab.models import products

bnb = pytest.importorskip("bitsandbytes")


def int8_layer(in_features: int, out_features: int, threshold: float) -> torch.nn.Module:
    linear = torch.nn.Linear(in_features, out_features)
    layer = bnb.nn.Linear8bitLt(in_features, out_features, has_fp16_weights=False, threshold=threshold)
    layer.load_state_dict(linear.state_dict())
    return layer.to("cpu").eval()  # .to quantizes the weight to int8


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_an_int8_layer_in_evaluation_gives_bitsandbytes_bits_through_onednn(monkeypatch, threshold):
    """threshold 0: ``int8_scaled_mm``; 6: ``int8_mixed_scaled_mm``, with outlier columns in the input."""
    torch.manual_seed(0)
    layer = int8_layer(512, 96, threshold)
    x = torch.randn(5, 13, 512) * 3  # |x| >= 6 in some columns
    products_run = []
    inner = products.int8_product
    monkeypatch.setattr(products, "int8_product", lambda a, b: products_run.append(a.shape) or inner(a, b))
    with torch.no_grad():
        want = layer(x)
        with products.onednn_products():
            got = layer(x)
    assert products_run, "the int8 product did not go through oneDNN"
    assert torch.equal(got, want)


def test_the_product_is_exact_at_the_depth_bound_and_deeper_ones_stay_bitsandbytes():
    """At K = 1,024 the extreme int8 values give the exact integer product; at 1,025 the op runs as bitsandbytes
    computes it (``exact_int8`` is False, so the mode passes it on)."""
    a = torch.full((3, 1024), -128, dtype=torch.int8)
    b = torch.full((2, 1024), -128, dtype=torch.int8)
    b[1, ::2] = 127
    exact = a.long() @ b.long().t()
    with products.onednn_products():
        got = bnb.functional.int8_linear_matmul(a, b)
    assert got.dtype == torch.int32 and torch.equal(got.long(), exact)
    assert products.exact_int8(a, b)
    deeper = torch.ones(3, products.EXACT_INT8_DEPTH + 1, dtype=torch.int8)
    assert not products.exact_int8(deeper, deeper[:2])
    assert not products.exact_int8(a.float(), b)
