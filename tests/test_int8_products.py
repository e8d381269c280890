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
    inner = products.int8_sums
    monkeypatch.setattr(products, "int8_sums", lambda a, b: products_run.append(a.shape) or inner(a, b))
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


def bitsandbytes_quant(a: torch.Tensor, threshold: float):
    """bitsandbytes' own CPU kernel (outside the mode), on a copy: the kernel zeroes and restores its input."""
    return torch.ops.bitsandbytes.int8_vectorwise_quant.default(a.clone(), threshold)


def quant_inputs() -> dict[str, torch.Tensor]:
    """Inputs whose quantization has every branch of the kernel: outliers in some columns, none at all, a row whose
    every value is an outlier (its absmax is then 0), a row of zeros, infinities and a NaN, fp16 (as
    ``MatMul8bitLt`` calls it) and fp32."""
    torch.manual_seed(1)
    mixed = (torch.randn(64, 96) * 3).half()
    few = (torch.randn(40, 128) * 0.5).half()
    edges = (torch.randn(16, 32) * 3).half()
    edges[2] = 7.0
    edges[3] = 0.0
    edges[4, 5], edges[5, 6], edges[6, 7] = float("inf"), -float("inf"), float("nan")
    return {"mixed": mixed, "few": few, "edges": edges, "fp32": torch.randn(24, 64) * 3}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype and values, NaN where the other has NaN."""
    nan = torch.isnan(a) if a.is_floating_point() else torch.zeros_like(a, dtype=torch.bool)
    return (
        a.dtype == b.dtype
        and torch.equal(nan, b.isnan() if b.is_floating_point() else nan)
        and torch.equal(a.masked_fill(nan, 0), b.masked_fill(nan, 0))
    )


@pytest.mark.parametrize("threshold", [0.0, 6.0, 2.5])
@pytest.mark.parametrize("name", ["mixed", "few", "edges", "fp32"])
def test_the_input_quantization_gives_bitsandbytes_bits_and_leaves_the_input(monkeypatch, name, threshold):
    """Inside the mode ``int8_vectorwise_quant`` is peftlab's: the same int8 rows, row absmax and outlier columns as
    bitsandbytes' kernel, with NaN where it has NaN, and the input unchanged."""
    a = quant_inputs()[name]
    before = a.clone()
    want = bitsandbytes_quant(a, threshold)
    calls = []
    inner = products.int8_vectorwise_quant
    monkeypatch.setattr(products, "int8_vectorwise_quant", lambda *args: calls.append(1) or inner(*args))
    with products.onednn_products():
        got = bnb.functional.int8_vectorwise_quant(a, threshold)
    assert calls, "the quantization did not take peftlab's route"
    assert same_bits(got[0], want[0]) and same_bits(got[1], want[1]) and got[1].dtype == torch.float32
    assert (got[2] is None) == (want[2] is None) and (got[2] is None or torch.equal(got[2], want[2]))
    assert same_bits(a, before)
    if name == "edges" and threshold == 6.0:
        assert want[1][2] == 0 and want[1][6].isnan(), "the edge rows lost their edge"


def test_an_input_the_fast_quantization_cannot_match_goes_to_bitsandbytes():
    """One row (bitsandbytes then keeps the outlier columns), a threshold fp16 does not hold (6.1 is 6.1015625 there),
    3-D and bf16 inputs: the op runs as bitsandbytes computes it."""
    row = torch.randn(1, 32).half()
    assert not products.fast_quant(row, 6.0)
    assert not products.fast_quant(torch.randn(4, 32).half(), 6.1)
    assert not products.fast_quant(torch.randn(2, 4, 32).half(), 6.0)
    assert not products.fast_quant(torch.randn(4, 32).bfloat16(), 6.0)
    assert products.fast_quant(torch.randn(4, 32).half(), 6.0) and products.fast_quant(torch.randn(4, 32), 0.0)


def test_the_dequantization_gives_bitsandbytes_bits():
    """``int8_mm_dequant`` in place: the same fp32 and fp16 outputs as bitsandbytes' kernel, with a bias and
    without."""
    torch.manual_seed(2)
    product = torch.randint(-(2**24), 2**24, (300, 48), dtype=torch.int32)
    rows, cols, bias = torch.rand(300) * 9, torch.rand(48) * 9, torch.randn(48)
    kernel = torch.ops.bitsandbytes.int8_mm_dequant.default
    for dtype in (torch.float32, torch.float16, None):
        for b in (bias, None):
            got = products.int8_mm_dequant(product, rows, cols, dtype=dtype, bias=b)
            want = kernel(product, rows, cols, dtype=dtype, bias=b)
            assert got.dtype == want.dtype and torch.equal(got, want)
            with products.onednn_products():  # the op called inside the mode is peftlab's, the same bits
                assert torch.equal(kernel(product, rows, cols, dtype=dtype, bias=b), want)
    assert products._int8_op(kernel, (product, rows, cols), {}) is products.int8_mm_dequant
    assert products._int8_op(kernel, (product.float(), rows, cols), {}) is None  # bitsandbytes' own error
