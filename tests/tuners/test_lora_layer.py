"""The hand-written fused q/k/v LoRA step (``FusedLoraQKV``) against PEFT's own layers (LoRA's and
AdaLoRA's SVD layers)."""

import pytest
import torch
from testkit import TINY_MODEL

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.tuners.modules import SplitQKV, plain_lora

RANKS = {"lora": {"r": 4}, "adalora": {"init_r": 4, "target_r": 2}}


def split_qkv_of(targets=("q", "v"), method="lora", **options) -> SplitQKV:
    cfg = load_config(
        overrides={
            "model": TINY_MODEL,
            "method": {
                "name": method,
                **RANKS[method],
                "target_modules": [rf"blocks\.\d+\.attn\.qkv\.{t}" for t in targets],
                **options,
            },
        }
    )
    torch.manual_seed(0)
    model = apply_tuner(build_backbone(cfg.model, 5), cfg.method, TunerContext.for_checks(cfg)).model
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "lora_E" in name:  # both start at zero, and so would the update
                param.normal_(0, 0.2)
            if "ranknum" in name:  # not r: a module resized to its kept ranks keeps its former ranknum
                param.fill_(7.0)
    return next(m for m in model.modules() if isinstance(m, SplitQKV))


def reference(split: SplitQKV, x: torch.Tensor) -> torch.Tensor:
    """PEFT's forward of each slice and a cat: what the fused path must equal."""
    return torch.cat([part(x) for part in (split.q, split.k, split.v)], dim=-1)


def outputs_and_grads(forward, split: SplitQKV, x: torch.Tensor, dtype=None):
    x = x.clone().requires_grad_(True)
    params = [p for p in split.parameters() if p.requires_grad]
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = forward(x)
    (out.float() * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = [x.grad.clone()] + [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out.detach(), grads


@pytest.mark.parametrize("method", ["lora", "adalora"])
@pytest.mark.parametrize("targets", [("q", "v"), ("q", "k", "v"), ("k", "v"), ("k",)])
def test_fused_forward_and_backward_equal_peft(targets, method):
    """The hand-written step and, with a base weight trained, the fused matmul plus each slice's update
    (``lora_delta``) equal PEFT's layers: outputs and the gradients of x and every adapter tensor
    (AdaLoRA's A, E and B)."""
    split = split_qkv_of(targets, method)
    assert all(plain_lora(part) is not False for part in (split.q, split.k, split.v))
    x = torch.randn(3, 7, split.in_features, generator=torch.Generator().manual_seed(1))
    per_factor = {"lora": 2, "adalora": 3}[method]
    for trained_base in (False, True):
        split.k.weight.requires_grad_(trained_base)  # trained: the autograd path through lora_delta
        split.choose_path()  # decided when the base is frozen or trained, not per call (issue 74)
        fused, fused_grads = outputs_and_grads(split, split, x)
        ref, ref_grads = outputs_and_grads(lambda t: reference(split, t), split, x)
        torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
        assert len(fused_grads) == len(ref_grads) == 1 + per_factor * len(targets) + trained_base
        for got, want in zip(fused_grads, ref_grads):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "options, stacked",
    [
        ({}, True),  # q and v, one rank and scaling: one product for the A's, one batched for the B's
        ({"rank_pattern": {"q": 2}}, False),  # ranks differ: a product pair per adapter
        ({"alpha_pattern": {"v": 4.0}}, False),  # scalings differ
    ],
)
def test_adapters_share_their_products_only_where_they_can_and_equal_peft_either_way(options, stacked, monkeypatch):
    """``stacked_layout`` picks the shared products, or each adapter's own; both equal PEFT's layers,
    and every gradient comes back in its parameter's layout (so autograd keeps it without a copy)."""
    from peftlab.tuners import modules

    layouts = []
    pick = modules.stacked_layout
    monkeypatch.setattr(modules, "stacked_layout", lambda *args: layouts.append(pick(*args)) or layouts[-1])
    split = split_qkv_of(**options)
    x = torch.randn(3, 7, split.in_features, generator=torch.Generator().manual_seed(4))
    fused, fused_grads = outputs_and_grads(split, split, x)
    ref, ref_grads = outputs_and_grads(lambda t: reference(split, t), split, x)
    assert [layout is not None for layout in layouts] == [stacked]
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(fused_grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    split(x).sum().backward()
    for p in split.parameters():
        assert p.grad is None or p.grad.stride() == p.stride()


def test_fused_path_under_bf16_autocast_matches_peft_and_keeps_parameter_dtypes():
    split = split_qkv_of()
    x = torch.randn(2, 5, split.in_features, generator=torch.Generator().manual_seed(2))
    fused, fused_grads = outputs_and_grads(split, split, x, torch.bfloat16)
    ref, ref_grads = outputs_and_grads(lambda t: reference(split, t), split, x, torch.bfloat16)
    assert fused.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(fused.float(), ref.float(), rtol=2e-2, atol=2e-2)
    for got, want in zip(fused_grads, ref_grads):
        assert got.dtype == want.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)


def test_the_cached_frozen_weight_follows_in_place_writes_and_moves():
    split = split_qkv_of()
    x = torch.randn(2, 4, split.in_features)
    with torch.no_grad():
        split(x)
        split.k.weight.add_(1.0)  # an in-place write to a frozen weight (a loaded checkpoint does this)
        torch.testing.assert_close(split(x), reference(split, x))
        split.double()
        torch.testing.assert_close(split(x.double()), reference(split, x.double()))


def test_the_fused_frozen_weight_is_no_second_copy():
    """After a forward, q, k and v hold row views of the one fused weight and bias: the fused step
    keeps no copy of the frozen base beside them (a quarter of a ViT's weights)."""
    split = split_qkv_of()
    x = torch.randn(2, 4, split.in_features)
    before = [p.detach().clone() for p in (split.q.weight, split.k.weight, split.v.weight)]
    with torch.no_grad():
        split(x)
    weight, bias = split._frozen[1], split._frozen[2]
    for i, part in enumerate((split.q, split.k, split.v)):
        base = getattr(part, "base_layer", part)
        assert base.weight.untyped_storage().data_ptr() == weight.untyped_storage().data_ptr()
        assert base.bias.untyped_storage().data_ptr() == bias.untyped_storage().data_ptr()
        assert torch.equal(base.weight, before[i])
    with torch.no_grad():
        first = split(x)
        assert split._frozen[1] is weight  # not concatenated again
        torch.testing.assert_close(first, reference(split, x))


def test_dropout_disabled_and_merged_adapters_take_peft_s_own_path():
    split = split_qkv_of(lora_dropout=0.1)
    assert plain_lora(split.q) is False  # dropout: PEFT's forward, not the hand-written one
    split.train()
    torch.manual_seed(3)
    out = split(torch.randn(2, 4, split.in_features))
    assert out.shape[-1] == split.out_features
    split = split_qkv_of()
    split.q.merge()
    assert plain_lora(split.q) is None  # merged: the base weight holds the update
    x = torch.randn(2, 4, split.in_features)
    with torch.no_grad():
        torch.testing.assert_close(split(x), reference(split, x))
