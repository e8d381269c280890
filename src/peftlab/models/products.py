"""The pinned arithmetic's products (``train.reproducible``): every Linear's products through oneDNN at the pin's
AVX2 cap (``onednn_products``), not MKL's COMPATIBLE branch, the pin before 2026-11-29.

MKL chooses its code by the CPU's vendor, so the pin keeps it in COMPATIBLE, its SSE2 code, the one branch Intel
and AMD CPUs compute alike, at about twice a step's CPU time (``peftlab bench --only pin``). oneDNN generates its
kernels for an instruction set (``ONEDNN_MAX_CPU_ISA``, AVX2 under the pin) rather than a vendor: an Intel Xeon with
AMX and an AMD EPYC with AVX-512 gave the same bits for every product of benchmarks/arith_hashes.py through it, every
entry of three steps of the pretraining and of every default-study configuration at 1 and 2 threads
(``benchmarks/step_probe.py``, records in benchmarks/step_probe/), and the same 48 trials and 40 final runs of the
whole default study over one base (benchmarks/default-study-amd-epyc/), at 0.54 to 0.60 of COMPATIBLE's step.

Inside ``onednn_products()`` every fp32 CPU ``F.linear`` (timm's and PEFT's layers) and every 2-D ``mm``,
``matmul``, ``addmm`` and ``addmm_`` (peftlab's fused q/k/v and LoRA factors) is computed by oneDNN's linear
(``torch.ops.mkldnn._linear_pointwise``), forward and both backward products; its bias is added after the sum, as a
separate ``+ b`` adds it (the same bits). A TorchFunctionMode, PyTorch's own way to route functions, reaches the
libraries' calls without patching them; a mode is off while autograd runs a backward, so peftlab's own autograd
functions take their backward products through ``mm`` and ``addmm_`` here. Batched products (attention, the
stacked LoRA factors) stay in MKL's COMPATIBLE branch, as do products of other dtypes, devices and under autocast.
bitsandbytes' int8 x int8 product (an int8 base in evaluation), which its CPU kernels compute as an fp32 ``matmul`` of
the integers inside their own ops where no mode reaches, goes through oneDNN too where that is exact (``exact_int8``):
the same int32 result at about half the time. The mode also takes that layer's input quantization and the product's
dequantization (``int8_vectorwise_quant``, ``int8_mm_dequant``): bitsandbytes' arithmetic in fewer passes over
memory, the same bits, 0.74 of an int8 evaluation pass's CPU time with the product's change (benchmarks/README.md).

A quantized base's backward products (bitsandbytes' int8 layers compute their input gradient with ``torch.matmul``
inside autograd, peftlab's 4-bit ones with ``@``) go through oneDNN too (``QUANTIZED``, ``quantized_backward``) since
2026-11-30, when an AMD EPYC's step records and QLoRA runs agreed with an Intel Xeon's (the QLoRA step at 0.66 to
0.82 of MKL's); the pin of 2026-11-29 left them in MKL's COMPATIBLE branch (``ONEDNN_PRODUCTS``).

A pinned run trains inside ``onednn_products`` (``pinned_run_products``) and records ``provenance.arithmetic.products``
(``QUANTIZED``'s name, or an earlier pin's); a record without it computed with MKL's products.
``PEFTLAB_PIN_PRODUCTS=onednn`` or ``=mkl`` in a pinned run's environment (``SWITCH``, not a config field) trains as
the runs of an earlier pin did: an archive's rerun sets it for such runs
(``analysis.archive.rerun.products_environment``), and the bench times MKL's.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from peftlab.utils import cpu


def _product(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ w^T (+ bias)`` through oneDNN: a (..., K), w (N, K), either may be strided (a transposed view)."""
    return torch.ops.mkldnn._linear_pointwise(a, w, bias, "none", [], "")


class OneDNNLinear(torch.autograd.Function):
    """``x W^T + b`` with both backward products through oneDNN: x (..., K), W (N, K), b (N,)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x2 = x.reshape(-1, x.shape[-1])  # (M, K)
        ctx.save_for_backward(x2, weight)
        ctx.x_shape, ctx.has_bias = x.shape, bias is not None
        return _product(x2, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x2, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])  # (M, N)
        grad_x = _product(g, weight.t()).view(ctx.x_shape) if ctx.needs_input_grad[0] else None  # g W
        grad_w = _product(g.t(), x2.t()) if ctx.needs_input_grad[1] else None  # g^T x: (N, K)
        grad_b = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def _fp32_cpu(*tensors) -> bool:
    return all(
        isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors
    ) and not torch.is_autocast_enabled("cpu")


def _mm(a, b, bias=None):
    """``a @ b (+ bias)`` for 2-D a (M, K) and b (K, N), differentiable."""
    return OneDNNLinear.apply(a, b.t(), bias)


def _write(result, out):
    if out is None:
        return result
    return out.copy_(result)


EXACT_INT8_DEPTH = 1024  # K: each partial sum of int8 products is an integer of at most 1024 * 128 * 128 = 2**24


def exact_int8(a, b) -> bool:
    """Whether ``a @ b^T`` of int8 CPU tensors a (..., K) and b (N, K) is exact in fp32, whatever the order of its
    sums: every product and partial sum is then an integer of magnitude at most 2**24, which fp32 holds exactly. So
    MKL's COMPATIBLE branch (bitsandbytes' own route) and oneDNN give the same int32 result, bit for bit."""
    return (
        all(isinstance(t, torch.Tensor) and t.dtype == torch.int8 and t.device.type == "cpu" for t in (a, b))
        and b.dim() == 2
        and a.dim() >= 1
        and a.shape[-1] == b.shape[1] <= EXACT_INT8_DEPTH
    )


def int8_sums(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b^T`` of int8 a (..., K) and b (N, K) as (M, N) fp32 through oneDNN: integers that fp32 holds exactly
    (``exact_int8``), so the same values as bitsandbytes' int32 product, at about half the time of MKL's COMPATIBLE
    branch at an int8 ViT's shapes."""
    return _product(a.reshape(-1, a.shape[-1]).float(), b.float())


def int8_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """bitsandbytes' ``int8_linear_matmul`` (a (..., K) int8, b (N, K) int8 -> int32) through ``int8_sums``."""
    return int8_sums(a, b).to(torch.int32).view(*a.shape[:-1], b.shape[0])


def _dequantized(values, row_stats, col_stats, dtype, bias) -> torch.Tensor:
    """bitsandbytes' CPU dequantization of an int8 product's (M, N) values in fp32, in place, with the kernel's
    operations in its order, each rounding as there: ``values * (row_stats * col_stats) * 6.200124e-05 (+ bias)``."""
    values.mul_(row_stats.reshape(-1).unsqueeze(-1) * col_stats.reshape(-1).unsqueeze(0)).mul_(6.200124e-05)
    if bias is not None:
        values += bias
    return values.to(dtype or torch.float16)


def int8_mm_dequant(product, row_stats, col_stats, dtype=None, bias=None) -> torch.Tensor:
    """``bitsandbytes::int8_mm_dequant`` of an int32 product: the same bits as bitsandbytes' kernel in about half its
    time at an evaluation batch's shapes (tests/test_int8_products.py)."""
    return _dequantized(product.view(-1, product.shape[-1]).float(), row_stats, col_stats, dtype, bias)


def int8_scaled_mm(a, b, row_stats, col_stats, bias=None, dtype=None) -> torch.Tensor:
    """``bitsandbytes::int8_scaled_mm`` as bitsandbytes' CPU kernel computes it (its int8 product, then its
    ``int8_mm_dequant``), the product through ``int8_sums`` and dequantized from its fp32 values: converting them to
    int32 and back, as the kernel does, is exact. The op runs its product inside its own kernel, where no mode
    reaches, so the mode takes the op whole."""
    return _dequantized(int8_sums(a, b), row_stats, col_stats, dtype, bias)


def fast_quant(a, threshold) -> bool:
    """Whether ``int8_vectorwise_quant`` computes bitsandbytes' result for ``a`` and ``threshold``: a 2-D fp16 or
    fp32 CPU tensor of more than one row (bitsandbytes' kernel zeroes the outlier columns only then), a threshold
    its dtype holds exactly (the kernel compares in that dtype)."""
    return (
        isinstance(a, torch.Tensor)
        and a.device.type == "cpu"
        and a.dtype in (torch.float16, torch.float32)
        and a.dim() == 2
        and a.shape[0] > 1
        and isinstance(threshold, (int, float))
        and float(torch.tensor(float(threshold), dtype=a.dtype)) == threshold
    )


def int8_vectorwise_quant(a, threshold=0.0):
    """``bitsandbytes::int8_vectorwise_quant`` (an int8 layer's input in evaluation, rows to int8 by their absmax,
    the columns holding an outlier zeroed) with the same result in fewer passes: in fp32, which holds every fp16
    value exactly, the absolute values taken once, and ``a`` left as it is rather than zeroed and restored. An
    outlier lies in an outlier column, which the kernel zeroes after rounding, so only the rows' absmax needs its
    outliers zeroed. Where ``fast_quant`` is False the mode leaves the op to bitsandbytes."""
    values = a.to(torch.float32, copy=True)
    magnitude = values.abs()
    outlier_cols = None
    if threshold > 0.0:
        outliers = magnitude >= threshold
        outlier_cols = torch.argwhere(outliers.view(torch.uint8).amax(dim=0)).view(-1)  # any(0), 20 times faster
        if outlier_cols.numel():
            magnitude.masked_fill_(outliers, 0.0)
    row_stats = magnitude.amax(dim=1)
    out_row = values.mul_(127.0 / row_stats.unsqueeze(-1)).round_().to(torch.int8)
    if outlier_cols is not None and outlier_cols.numel():
        out_row.index_fill_(1, outlier_cols, 0)
    return out_row, row_stats, outlier_cols


def int8_mixed_scaled_mm(a, ca, cb, sca, scb, outlier_cols=None, bias=None):
    """``bitsandbytes::int8_mixed_scaled_mm`` (an int8 layer with an outlier threshold in evaluation) as bitsandbytes'
    CPU kernel computes it: the int8 part through ``int8_scaled_mm``, the outlier columns added in fp32 by the same
    ``addmm`` (MKL's, as in bitsandbytes: a mode is off inside its own handler)."""
    output = int8_scaled_mm(ca, cb, sca, scb, bias=bias, dtype=a.dtype)
    if outlier_cols is None or not outlier_cols.numel():
        return output, torch.empty(0, device=a.device, dtype=a.dtype)
    sub_a = a[:, outlier_cols].contiguous()
    sub_b = torch.ops.bitsandbytes.int8_vectorwise_dequant.default(cb[:, outlier_cols].contiguous(), scb)
    return output.addmm(sub_a, sub_b.to(a.dtype).t()), sub_a


INT8_OPS = {  # bitsandbytes' ops whose CPU kernels compute an int8 product: the arguments whose product it is
    "bitsandbytes::int8_linear_matmul": (int8_product, 0, 1),
    "bitsandbytes::int8_scaled_mm": (int8_scaled_mm, 0, 1),
    "bitsandbytes::int8_mixed_scaled_mm": (int8_mixed_scaled_mm, 1, 2),
}


OP_TYPES = (torch._ops.OpOverload, torch._ops.OpOverloadPacket)  # what the mode sees of a torch.ops call


QUANT_OP = "bitsandbytes::int8_vectorwise_quant"
DEQUANT_OP = "bitsandbytes::int8_mm_dequant"


def dequant_args(product=None, row_stats=None, col_stats=None, *_) -> bool:
    """Whether ``int8_mm_dequant`` takes these arguments as bitsandbytes' kernel does without refusing them: an int32
    CPU product and fp32 statistics (the kernel's own errors are left to it)."""
    dtypes = (torch.int32, torch.float32, torch.float32)
    tensors = (product, row_stats, col_stats)
    return all(isinstance(t, torch.Tensor) and t.dtype == d and t.device.type == "cpu" for t, d in zip(tensors, dtypes))


def _int8_op(func, args, kwargs) -> object | None:
    """The handler of a bitsandbytes int8 op (its default overload, or the packet bitsandbytes calls) whose product
    ``exact_int8`` finds exact, or of its input's quantization where ``fast_quant`` holds, or of a product's
    dequantization (``dequant_args``), else None."""
    if isinstance(func, torch._ops.OpOverload) and func._overloadname == "default":
        name = func.name()
    elif isinstance(func, torch._ops.OpOverloadPacket) and "out" not in kwargs:
        name = func._qualified_op_name
    else:
        return None
    if name == QUANT_OP:
        threshold = args[1] if len(args) > 1 else kwargs.get("threshold", 0.0)
        return int8_vectorwise_quant if args and fast_quant(args[0], threshold) else None
    if name == DEQUANT_OP:
        return int8_mm_dequant if dequant_args(*args) else None
    handler, first, second = INT8_OPS.get(name, (None, 0, 1))
    if handler is None or len(args) <= second or not exact_int8(args[first], args[second]):
        return None
    return handler


MATMULS = {torch.mm, torch.matmul, torch.Tensor.mm, torch.Tensor.matmul, torch.Tensor.__matmul__}


class OneDNNProducts(TorchFunctionMode):
    """Routes the products named in the module's docstring to oneDNN; every other function runs as called."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if _fp32_cpu(x, weight) and (bias is None or _fp32_cpu(bias)):
                return OneDNNLinear.apply(x, weight, bias)
        elif func in MATMULS and len(args) == 2 and set(kwargs) <= {"out"}:
            a, b = args
            if _fp32_cpu(a, b) and b.dim() == 2 and a.dim() >= 2 and (a.dim() == 2 or func is not torch.Tensor.mm):
                return _write(_mm(a, b), kwargs.get("out"))
        elif func is torch.addmm and len(args) == 3 and set(kwargs) <= {"out"}:
            bias, a, b = args
            if _fp32_cpu(bias, a, b) and a.dim() == b.dim() == 2:
                if bias.dim() == 1 and bias.shape[0] == b.shape[1]:
                    return _write(_mm(a, b, bias), kwargs.get("out"))
                return _write(_mm(a, b) + bias, kwargs.get("out"))
        elif func is torch.Tensor.addmm_ and len(args) == 3 and not kwargs:
            target, a, b = args
            tracked = torch.is_grad_enabled() and any(t.requires_grad for t in (target, a, b))
            if _fp32_cpu(target, a, b) and a.dim() == b.dim() == 2 and not tracked:  # a backward's accumulation
                return addmm_(target, a, b)
        elif type(func) in OP_TYPES and (int8 := _int8_op(func, args, kwargs)) is not None:
            return int8(*args, **kwargs)
        return func(*args, **kwargs)


ACTIVE: list[str] = []  # inside ``onednn_products``: the products it computes (provenance.arithmetic.products)


@contextlib.contextmanager
def onednn_products(products: str | None = None):
    """While it is open (a step's forward and backward inside it): the products through oneDNN. A mode is off
    while autograd runs a backward, so peftlab's own autograd functions compute their backward products with
    ``mm`` and ``addmm_``, which read ``ACTIVE``. ``products``: the pin's (``QUANTIZED``, see ``quantized_backward``)
    or the pin of 2026-11-29's (``ONEDNN_PRODUCTS``); None: that one where ``SWITCH`` asks for it, else the pin's."""
    if products is None:
        asked = os.environ.get(SWITCH) == cpu.products_switch(ONEDNN_PRODUCTS)
        products = ONEDNN_PRODUCTS if asked else QUANTIZED
    ACTIVE.append(products)
    try:
        with OneDNNProducts():
            yield
    finally:
        ACTIVE.pop()


def quantized_backward() -> bool:
    """Whether a quantized base's backward products go through oneDNN here: the pin's (``QUANTIZED``), not the
    pin of 2026-11-29's, whose runs computed them in MKL's COMPATIBLE branch as bitsandbytes' int8 layers and
    peftlab's 4-bit ones call them (``quant.step``)."""
    return bool(ACTIVE) and ACTIVE[-1] == QUANTIZED


def quantized_input_grad(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``grad @ weight`` (grad (..., N), weight (N, K)) of a quantized base's backward: through oneDNN under the
    pin (``quantized_backward``), else as ``@`` computes it (the pin of 2026-11-29: MKL's COMPATIBLE branch)."""
    if not quantized_backward():
        return grad @ weight
    return mm(grad.reshape(-1, grad.shape[-1]), weight).view(*grad.shape[:-1], weight.shape[1])


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D tensors (no autograd: a backward's product): through oneDNN inside ``onednn_products``."""
    if ACTIVE and _fp32_cpu(a, b):
        return _product(a, b.t())
    return a @ b


def addmm_(target: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``target += a @ b`` in place (no autograd), as ``mm``."""
    if ACTIVE and _fp32_cpu(target, a, b):
        return target.add_(_product(a, b.t()))
    return target.addmm_(a, b)


SWITCH = cpu.PRODUCTS_SWITCH  # "onednn" or "mkl": a pinned run's products as an earlier pin computed them
ONEDNN_PRODUCTS = cpu.PRODUCTS_ONEDNN  # provenance.arithmetic.products of a pinned run of 2026-11-29
pinned_products = cpu.pinned_products  # the products a run computes in this environment (torch-free, in utils.cpu)


QUANTIZED = cpu.PRODUCTS_ONEDNN_QUANTIZED  # the pin's products (``quantized_backward``), since 2026-11-30


def pinned_run_products(reproducible: bool):
    """The context a run trains in: ``onednn_products`` for a pinned run (``pinned_products``), else none."""
    products = pinned_products(reproducible)
    return onednn_products(products) if products else contextlib.nullcontext()


def products_record() -> str | None:
    """provenance.arithmetic.products: inside ``onednn_products`` the products it computes (``QUANTIZED``'s name or
    ``ONEDNN_PRODUCTS``), None where MKL computes them."""
    return ACTIVE[-1] if ACTIVE else None
