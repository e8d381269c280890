"""Submodules replaced in place, and timm's fused ``qkv`` split into three Linears so q, k and v adapt apart.

``replace_modules(model, names, build)`` is how every method swaps a layer for its own (SSF's and
DiffFit's wrappers, the adapters, QA-LoRA's layers, the qkv split and fuse, export's dequantized Linears).

timm computes ``qkv = x @ W.T + b`` with ``W`` of shape (3d, d): rows [0:d] are q, [d:2d] k,
[2d:3d] v. ``SplitQKV`` holds the same rows as ``q``, ``k`` and ``v`` Linears (d -> d), so
PEFT can target ``attn.qkv.q`` and ``attn.qkv.v`` like any Linear; an un-targeted slice stays
frozen and bit-identical. ``fuse_qkv`` turns it back into one Linear (after a merge, for export).

When every slice is a plain float Linear or PEFT's plain LoRA (or AdaLoRA) Linear over one, the forward
still does timm's single fused matmul: the three base weights are concatenated (a small
copy) and the adapters' low-rank updates are added to their slices of the output. Three
separate matmuls and a ``cat`` of their outputs give the same numbers but cost about a fifth
more per training step (measured, see benchmarks/README.md). On a 4-bit base (QLoRA) whose q, k
and v are peftlab's ``BufferedLinear4bit`` under PEFT's plain bnb LoRA Linear or bare, the fused step
runs too, on the three weights dequantized into one buffer (``quant_step.StackedWeights``). Any
other slice (an int8 base, a LoRA variant such as DoRA, another PEFT method) runs its own forward:
peftlab does not re-implement layer math it does not know.

When the base weights are frozen and each adapter is PEFT's plain LoRA or AdaLoRA without dropout
(a LoRA run's usual case), ``FusedLoraQKV`` does that forward and its backward by hand: the frozen
fused weight is concatenated once, the three weights become its row views (no second copy), the
adapters' updates are added in place, and the backward takes every product in the
orientation that is fast for a rank-r factor (``(h^T g)^T`` for B, never ``g^T h``) and
computes no gradient for a frozen weight. Autograd through the same ops spends a zero fill
and a copy of the (N, 3d) output gradient on ``narrow`` and a slow (d, N) x (N, r) product
per adapter (profiled, see benchmarks/README.md). Adapters of one rank and scaling (LoRA on q and
v) share their products: one for every A, one batched for every B through strided views of the
output's slices, so a forward and backward dispatch no more ops than PEFT's LoRA on the whole
fused qkv (tests/test_step_shape.py counts them). Tests compare outputs and gradients with
PEFT's own layers.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from peftlab.models import products
from peftlab.tuners.lora.peft_layers import is_plain_float, lora_delta, plain_lora


class SplitQKV(nn.Module):
    """q, k and v Linears computing timm's fused qkv. Which of the four forwards below runs (``PATHS``) is
    decided by ``choose_path`` when the module is built, when a slice is replaced (an adapter injected), when
    the tuner has frozen the base (``choose_paths``) and at each ``train()`` / ``eval()``: never per call,
    so the step has no Python decision of its own and a captured CUDA graph replays one path."""

    PATHS = ("fused_lora", "quantized_fused_lora", "one_linear", "concat")

    def __init__(self, q: nn.Linear, k: nn.Linear, v: nn.Linear):
        super().__init__()
        self.q, self.k, self.v = q, k, v
        self.in_features = q.in_features
        self.out_features = q.out_features + k.out_features + v.out_features

        self._frozen: tuple | None = None  # (key, weight, bias): the frozen fused weight, see frozen_fused
        self.choose_path()

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name in ("q", "k", "v") and all(part in self._modules for part in ("q", "k", "v")):
            self.choose_path()  # a slice replaced (PEFT injecting its LoRA Linear): its path may change

    def choose_path(self) -> str:
        """Set ``path``: ``fused_lora`` for float slices over frozen bases with plain LoRA (or none) on each,
        ``quantized_fused_lora`` for the same over 4-bit bases that stack (``stackable``), ``one_linear``
        for other float slices (trained bases, dropout), ``concat`` for anything else (each slice's own forward)."""
        parts = (self.q, self.k, self.v)
        bases = [getattr(part, "base_layer", part) for part in parts]
        float_parts = all(is_plain_float(part) for part in parts)
        if not float_parts and not stackable(parts):
            path = "concat"  # layers peftlab does not know: each slice's own forward
        elif frozen_bases(bases) and all(plain_lora(part) is not False for part in parts):
            path = "fused_lora" if float_parts else "quantized_fused_lora"
        else:
            path = "one_linear" if float_parts else "concat"
        self.__dict__["path"] = path  # not through __setattr__: a str attribute, no module
        return path

    def train(self, mode: bool = True):
        super().train(mode)
        self.choose_path()  # the recipe's train() after the tuner is applied; evaluation's eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., d) -> (..., 3d), the layout of timm's fused qkv
        return getattr(self, self.path)(x)

    def fused_lora(self, x: torch.Tensor) -> torch.Tensor:
        parts = (self.q, self.k, self.v)
        bases = [part.base_layer if hasattr(part, "base_layer") else part for part in parts]
        weight, bias = self.frozen_fused(bases)
        return fused_lora_qkv(x, weight, bias, bases, [plain_lora(part) for part in parts])

    def quantized_fused_lora(self, x: torch.Tensor) -> torch.Tensor:
        parts = (self.q, self.k, self.v)
        bases = [part.base_layer if hasattr(part, "base_layer") else part for part in parts]
        stacked = quantized_stack(bases, x)  # None under autocast, or where the buffers do not serve x's dtype
        if stacked is None:
            return self.concat(x)
        bias = torch.cat([base.bias for base in bases]).float() if bases[0].bias is not None else None
        return fused_lora_qkv(x, stacked, bias, bases, [plain_lora(part) for part in parts])

    def one_linear(self, x: torch.Tensor) -> torch.Tensor:
        bases = [getattr(part, "base_layer", part) for part in (self.q, self.k, self.v)]
        weight = torch.cat([base.weight for base in bases])  # (3d, d)
        bias = torch.cat([base.bias for base in bases]) if bases[0].bias is not None else None
        out = F.linear(x, weight, bias)
        start = 0
        for part, base in zip((self.q, self.k, self.v), bases):
            delta = lora_delta(part, x)
            if delta is not None:
                out.narrow(-1, start, base.out_features).add_(delta)
            start += base.out_features
        return out

    def concat(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)

    def frozen_fused(self, bases: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The (3d, d) weight and (3d,) bias of frozen q, k, v, concatenated again only when one of
        them changed (another tensor, or written in place: ``_version`` counts in-place writes).

        Once concatenated, q, k and v hold row views of the fused tensors (their ``.data`` points
        there), so the fused weight costs no memory of its own: a copy kept beside the three was a
        quarter of a ViT's base weights (288 MiB at ViT-L in fp32, issue 38).

        Under ``torch.compile`` the cached tensors are used as they are: a key of data pointers cannot
        be traced (a graph break, and under autocast the whole frame fell back to eager: compiled LoRA
        ran slower than eager on an H100, issue 61), and a frozen weight changes between steps only
        by a merge, which takes LoRA's own forward, not this one. Before the first eager call the
        compiled graph concatenates the three itself."""
        if torch.compiler.is_compiling():
            if self._frozen is not None:
                return self._frozen[1], self._frozen[2]
            bias = torch.cat([base.bias for base in bases]) if bases[0].bias is not None else None
            return torch.cat([base.weight for base in bases]).detach(), None if bias is None else bias.detach()
        key = self.frozen_key(bases)
        if self._frozen is None or self._frozen[0] != key:
            if not frozen_bases(bases):  # its path was chosen with the bases frozen: say so, never train them wrong
                raise RuntimeError("SplitQKV: a base weight trains since its path was chosen: call choose_path()")
            with torch.no_grad():
                weight = torch.cat([base.weight for base in bases])
                bias = torch.cat([base.bias for base in bases]) if bases[0].bias is not None else None
                start = 0
                for base in bases:
                    size = base.out_features
                    base.weight.data = weight[start : start + size]
                    if bias is not None:
                        base.bias.data = bias[start : start + size]
                    start += size
            self._frozen = (self.frozen_key(bases), weight, bias)
        return self._frozen[1], self._frozen[2]

    def before_compile(self) -> None:
        """Fill the frozen fused weight's cache eagerly, so the compiled step reads it (``frozen_fused``)."""
        if self.choose_path() == "fused_lora":
            self.frozen_fused([getattr(part, "base_layer", part) for part in (self.q, self.k, self.v)])

    @staticmethod
    def frozen_key(bases: list[nn.Linear]) -> tuple:
        tensors = [t for base in bases for t in (base.weight, base.bias) if t is not None]
        return tuple((t.data_ptr(), t._version, t.dtype, t.device, t.requires_grad) for t in tensors)

    def _apply(self, fn, recurse=True):  # .to(), .half(), ...: the cached copy would be stale
        self._frozen = None
        return super()._apply(fn, recurse)


def frozen_bases(bases: list[nn.Module]) -> bool:
    """No parameter of q's, k's or v's base layer trains (read from their own parameters: a step asks
    3 times a block, and ``parameters()``'s generator cost more than the products of a small model)."""
    return not any(p is not None and p.requires_grad for base in bases for p in base._parameters.values())


def fused_lora_qkv(x, weight, bias, bases: list[nn.Module], adapters: list) -> torch.Tensor:
    """``FusedLoraQKV`` over q, k and v with their adapters (``plain_lora`` of each slice)."""
    slices, factors, start = [], [], 0
    for base, adapter in zip(bases, adapters):
        if adapter is not None:
            lora_A, lora_B, scaling = adapter
            slices.append((start, base.out_features, scaling))
            factors += [lora_A, lora_B]
        start += base.out_features
    return FusedLoraQKV.apply(x, weight, bias, tuple(slices), *factors)


def choose_paths(model: nn.Module) -> None:
    """Every ``SplitQKV`` of ``model`` decides its forward again (the tuner has frozen the base)."""
    for module in model.modules():
        if isinstance(module, SplitQKV):
            module.choose_path()


def stackable(parts) -> bool:
    """Whether 4-bit q, k, v (peftlab's ``BufferedLinear4bit``, bare or under PEFT's plain bnb LoRA Linear)
    can be dequantized into one (3d, d) buffer for the fused step (``quantized_stack``); bitsandbytes is
    never imported to answer."""
    if sys.modules.get("bitsandbytes") is None:
        return False
    from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit

    from peftlab.quant.step import BufferedLinear4bit

    for part in parts:
        if hasattr(part, "base_layer") and not (
            type(part) is LoraLinear4bit and not part.lora_variant and not any(part.lora_bias.values())
        ):
            return False
    return all(type(getattr(part, "base_layer", part)) is BufferedLinear4bit for part in parts)


def quantized_stack(bases: list[nn.Module], x: torch.Tensor):
    """A callable that dequantizes stackable 4-bit q, k, v into one (3d, d) buffer for ``x``
    (``quant_step.StackedWeights``); None under autocast or where the buffers do not serve ``x``."""
    from peftlab.quant.step import stacked_weights

    return stacked_weights(bases, x)


class FusedLoraQKV(torch.autograd.Function):
    """``out = x W^T + b`` plus, on each adapted slice [start, start + size) of the output,
    ``scaling * (x A^T) B^T``; W and b frozen, gradients for x, A and B.

    x: (..., d); W: (3d, d); A: (r, d); B: (size, r). Under autocast every product runs in the
    autocast dtype, as ``F.linear`` would; gradients come back in each input's own dtype. W may be
    a callable that returns it (a 4-bit base dequantized into a buffer, only without autocast):
    it is called again for the backward instead of being saved.

    Adapters of one rank and scaling on evenly spaced slices (q and v; q, k and v) take one product
    for all their A's and one batched product for all their B's, written into their slices of the
    output through a strided view (``slice_batch``): a forward and backward dispatches fewer ops
    than PEFT's LoRA on the whole fused qkv, each a kernel launch on a GPU (``stacked_layout``).
    Other adapters take a product pair each (``per_slice``).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, slices, *factors):
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        with torch.autocast(x.device.type, enabled=False):
            x2 = x.reshape(-1, x.shape[-1]).to(dtype)  # (N, d)
            w = weight() if callable(weight) else weight.to(dtype)
            # (..., 3d), written through its (N, 3d) view: the output is no view, so a caller may add
            # to it in place (BEiT's attention adds its q and v biases so)
            out = torch.empty(*x.shape[:-1], w.shape[0], dtype=dtype, device=x.device)
            flat = out.view(-1, w.shape[0])
            if bias is None:
                torch.mm(x2, w.t(), out=flat)
            else:
                torch.addmm(bias.to(dtype), x2, w.t(), out=flat)
            ctx.layout = stacked_layout(slices, factors, dtype, x.device, w.shape[0])
            if ctx.layout is None:
                saved = per_slice_forward(flat, x2, slices, factors, dtype)
            else:
                first, step, size, scaling = ctx.layout
                a = torch.cat(factors[0::2]).to(dtype)  # (n r, d): every A
                b = torch.stack(factors[1::2]).to(dtype)  # (n, size, r): every B
                h = torch.mm(x2, a.t()).mul_(scaling)  # (N, n r)
                rank = factors[0].shape[0]
                output_blocks(out, len(slices), size, step, first).baddbmm_(
                    slice_batch(h, len(slices), rank, rank, 0), b.transpose(1, 2)
                )
                saved = [a, b, h]
        ctx.slices, ctx.x_shape, ctx.x_dtype = slices, x.shape, x.dtype
        ctx.factor_dtypes = [f.dtype for f in factors]
        ctx.weight = weight if callable(weight) else None
        ctx.save_for_backward(x2, None if callable(weight) else w, *saved)
        return out

    @staticmethod
    def backward(ctx, grad):
        x2, w, *saved = ctx.saved_tensors
        w = ctx.weight() if ctx.weight is not None else w
        g = grad.reshape(-1, grad.shape[-1]).to(w.dtype)  # (N, 3d)
        grad_x = products.mm(g, w) if ctx.needs_input_grad[0] else None  # (N, d); no gradient for the frozen W
        if ctx.layout is None:
            grads = per_slice_backward(g, x2, grad_x, ctx.slices, saved)
            grads = [gr.to(dt) for gr, dt in zip(grads, ctx.factor_dtypes)]
        else:
            grads = stacked_backward(g, x2, grad_x, ctx.layout, saved, ctx.factor_dtypes[0])
        if grad_x is not None:
            grad_x = grad_x.view(ctx.x_shape).to(ctx.x_dtype)
        return (grad_x, None, None, None, *grads)


def stacked_layout(slices, factors, dtype, device, width: int) -> tuple[int, int, int, float] | None:
    """``(first, step, size, scaling)`` where the adapted slices can share their products: two or more,
    of one size, evenly spaced on a grid of that size over the output's ``width`` (any of q, k, v are),
    with one scaling, one rank and one dtype; else None. Not in bf16 on a CPU: oneDNN's bf16 matmul
    cannot write the strided batch (torch warns and falls back)."""
    starts = [start for start, _, _ in slices]
    if len(slices) < 2 or len({(size, scaling) for _, size, scaling in slices}) > 1:
        return None
    size = slices[0][1]
    if width % size or any(start % size for start in starts):
        return None
    if device.type == "cpu" and dtype == torch.bfloat16:
        return None
    steps = {later - earlier for earlier, later in zip(starts, starts[1:])}
    if len(steps) > 1 or len({(f.shape, f.dtype) for f in factors[0::2]}) > 1:
        return None
    if len({(f.shape, f.dtype) for f in factors[1::2]}) > 1 or len({f.dtype for f in factors}) > 1:
        return None
    return starts[0], steps.pop(), slices[0][1], slices[0][2]


def output_blocks(out: torch.Tensor, n: int, size: int, step: int, first: int) -> torch.Tensor:
    """The column blocks [first + i step, first + i step + size), i < n, of the output (..., 3d) as one
    (n, N, size) view to add into, made of views torch.compile can write through (a write through
    ``as_strided`` cannot be functionalized)."""
    blocks = out.view(-1, out.shape[-1] // size, size)  # (N, 3, size)
    start, every = first // size, step // size
    return blocks[:, start : start + (n - 1) * every + 1 : every].transpose(0, 1)


def slice_batch(t: torch.Tensor, n: int, width: int, step: int, first: int, transposed: bool = False):
    """The column blocks [first + i step, first + i step + width), i < n, of the 2-D ``t`` (N, C) as one
    strided (n, N, width) view ((n, width, N) ``transposed``), so one batched product reads them (one op;
    not for writing: see ``output_blocks``)."""
    if first:
        t = t[:, first:]  # as_strided keeps a view's offset (read with storage_offset(), dynamo would break here)
    if transposed:
        return t.as_strided((n, width, t.shape[0]), (step, 1, t.stride(0)))
    return t.as_strided((n, t.shape[0], width), (step, t.stride(0), 1))


def stacked_backward(g, x2, grad_x, layout, saved, dtype) -> list[torch.Tensor]:
    """Gradients of every A and B of ``stacked_layout``'s adapters from two products and two batched
    ones; A's and B's gradients are row blocks of one tensor each, in their parameters' layout."""
    first, step, size, scaling = layout
    a, b, h = saved  # (n r, d), (n, size, r), (N, n r)
    g = g.contiguous()  # slice_batch's views need rows in memory (a sum's gradient is one expanded value)
    n, rank = b.shape[0], b.shape[2]
    # (n, r, N): every g_i B_i, transposed, the orientation that is fast for a rank-r factor
    gh = torch.bmm(b.transpose(1, 2), slice_batch(g, n, size, step, first, transposed=True))
    gh = gh.mul_(scaling).view(n * rank, -1)  # (n r, N)
    grad_a = products.mm(gh, x2).to(dtype).split(rank)  # (r, d) each
    if grad_x is not None:
        products.addmm_(grad_x, gh.t(), a)
    # (n, r, size): every h_i^T g_i (fast, as above), then each B's (size, r) in one copy
    grad_b = torch.bmm(slice_batch(h, n, rank, rank, 0, transposed=True), slice_batch(g, n, size, step, first))
    grad_b = grad_b.transpose(1, 2).contiguous().to(dtype).unbind()
    return [grad for pair in zip(grad_a, grad_b) for grad in pair]


def per_slice_forward(flat, x2, slices, factors, dtype) -> list[torch.Tensor]:
    """Each adapter's update added to its slice of ``flat`` (N, 3d); the tensors its backward needs."""
    saved = []
    for (start, size, scaling), lora_A, lora_B in zip(slices, factors[0::2], factors[1::2]):
        a, b = lora_A.to(dtype), lora_B.to(dtype)
        h = (x2 @ a.t()).mul_(scaling)  # (N, r)
        flat[:, start : start + size].addmm_(h, b.t())
        saved += [a, b, h]
    return saved


def per_slice_backward(g, x2, grad_x, slices, saved) -> list[torch.Tensor]:
    """``per_slice_forward``'s gradients: A's and B's in turn, adding each adapter's part to ``grad_x``."""
    grads = []
    for (start, size, scaling), a, b, h in zip(slices, saved[0::3], saved[1::3], saved[2::3]):
        g_slice = g[:, start : start + size]  # (N, size), a strided view
        gh = products.mm(g_slice, b).mul_(scaling)  # (N, r)
        grads.append(products.mm(gh.t(), x2))  # A: (r, d)
        grads.append(products.mm(h.t(), g_slice).t())  # B: (size, r), from (r, N) x (N, size), the fast orientation
        if grad_x is not None:
            products.addmm_(grad_x, gh, a)
    return grads


def split_qkv(qkv: nn.Linear) -> SplitQKV:
    """Copy the rows of a fused (3d, d) Linear into three (d, d) Linears."""
    d = qkv.out_features // 3
    source = getattr(qkv, "weight_source", None)  # a weight still in its file (peftlab.quant.load)
    parts = []
    for i in range(3):
        # on the CPU even then: the new Linear's random init draws what it draws in a base loaded in full
        linear = nn.Linear(
            qkv.in_features,
            d,
            bias=qkv.bias is not None,
            device="cpu" if source else qkv.weight.device,
            dtype=qkv.weight.dtype,
        )
        with torch.no_grad():
            if source:
                linear.weight = nn.Parameter(linear.weight.to("meta"))
                linear.weight_source = source.rows(i * d, (i + 1) * d)
            else:
                linear.weight.copy_(qkv.weight[i * d : (i + 1) * d])
            if qkv.bias is not None:
                linear.bias.copy_(qkv.bias[i * d : (i + 1) * d])
        linear.weight.requires_grad_(qkv.weight.requires_grad)
        if qkv.bias is not None:
            linear.bias.requires_grad_(qkv.bias.requires_grad)
        parts.append(linear)
    return SplitQKV(*parts)


def fuse_qkv(split: SplitQKV) -> nn.Linear:
    """One (3d, d) Linear with the q, k, v rows in timm's order."""
    q, k, v = split.q, split.k, split.v
    fused = nn.Linear(
        q.in_features, split.out_features, bias=q.bias is not None, device=q.weight.device, dtype=q.weight.dtype
    )
    with torch.no_grad():
        fused.weight.copy_(torch.cat([q.weight, k.weight, v.weight], dim=0))
        if q.bias is not None:
            fused.bias.copy_(torch.cat([q.bias, k.bias, v.bias], dim=0))
    return fused


def replace_modules(model: nn.Module, names: list[str], build) -> None:
    """Replace each named submodule by ``build(old_module)``."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, build(getattr(parent, child)))
