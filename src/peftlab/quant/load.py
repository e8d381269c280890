"""A quantized base built while loading: the fp32 base is never held whole.

    model = build_base(cfg.model, cfg.quant, cfg.method, num_classes)  # quantized Linears' weights left in their file
    tuner = apply_tuner(model, cfg.method, ctx)  # split qkv -> quantize_base reads them one at a time

``build_base`` builds a timm backbone whose weights come from a local safetensors file with every
Linear that the run quantizes (``quant.mode``, or QA-LoRA's own base) on the meta device, a
``WeightSource`` on each saying where its weight lies; norms, embeddings and the head are built and
loaded as ``build_backbone`` does. ``quantize_base`` (and QA-LoRA's quantizer) read each weight from
the file when they quantize its layer, so building peaks near the quantized size plus one layer
rather than at the fp32 size. Any other run, a random base or timm's hub weights included, is
built by ``build_backbone`` alone.

Same bytes as a base loaded in full and then quantized: the backbone is built on the CPU as timm
builds it, but under ``DeferLinears`` the tensors that will hold the quantized Linears' weights are
made on the meta device (found by the order timm makes its tensors, recorded in a first build on the
meta device) and each random draw into one of them is made into a scratch tensor of its shape. The
head and every other tensor therefore get timm's values, and the random generator ends where it
ends after a full build (LoRA's initialisation, dropout), whatever the draws are.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from peftlab.config.sections import MethodConfig, ModelConfig, QuantConfig
from peftlab.models.backbones import build_backbone
from peftlab.models.meta import shapes_only
from peftlab.models.weights import (
    HEAD_PREFIXES,
    check_weights_file,
    opened_weights,
    resample_pos_embed,
    timm_sources,
)
from peftlab.quant.allocator import release_freed_memory
from peftlab.quant.bases import Placeholder, WeightSource, quantizable_linears


def quantizes_base(quant: QuantConfig, method: MethodConfig) -> bool:
    """The run's base Linears are quantized: by bitsandbytes (``quant.mode``) or by the method itself
    (QA-LoRA: ``quantizes_base``)."""
    return quant.mode != "none" or method.quantizes_base


def loads_quantized(model: ModelConfig, quant: QuantConfig, method: MethodConfig) -> bool:
    """``build_base`` quantizes while loading: a timm backbone from a local safetensors file, quantized."""
    return model.source == "timm" and model.pretrained not in ("none", "hub") and quantizes_base(quant, method)


def build_base(model: ModelConfig, quant: QuantConfig, method: MethodConfig, num_classes: int) -> nn.Module:
    """The run's backbone: its quantized Linears' weights left in their file when ``loads_quantized``,
    otherwise ``build_backbone``'s."""
    if not loads_quantized(model, quant, method):
        return build_backbone(model, num_classes)
    return build_deferred(model, num_classes, quant)


def build_deferred(cfg: ModelConfig, num_classes: int, quant: QuantConfig) -> nn.Module:
    """A timm backbone loaded from ``cfg.pretrained`` but for the weights of the Linears ``quant``
    quantizes, which stay in the file (each with its ``weight_source``)."""
    check = lambda shapes: check_weights_file(shapes, cfg.pretrained)  # before anything is read: one line if not
    model, names = build_without_linears(cfg, num_classes, quant, check)
    load_rest(model, cfg.pretrained, {f"{n}.weight" for n in names})
    release_freed_memory()
    return model


def build_for_saved_state(cfg: ModelConfig, num_classes: int, quant: QuantConfig) -> nn.Module:
    """A timm backbone whose quantizable Linears hold a ``Placeholder`` instead of an fp32 weight: for a
    saved quantized state that replaces every value (``export.load_quantized``), so the base is
    quantized one layer at a time and the fp32 model is never held whole."""
    model, names = build_without_linears(cfg, num_classes, quant)
    for name in names:
        module = model.get_submodule(name)
        module.weight_source = Placeholder(tuple(module.weight.shape), module.weight.dtype)
    return model


def build_without_linears(cfg: ModelConfig, num_classes: int, quant: QuantConfig, check=None):
    """``cfg``'s architecture built as timm builds it, the weights of the Linears ``quant`` quantizes on
    the meta device; the model and those Linears' names. ``check(meta_model)`` runs before the build."""
    random = dataclasses.replace(cfg, pretrained="none")
    with shapes_only(), TensorOrder() as order:  # the writes it skips make no tensor: the numbering is the same
        shapes = build_backbone(random, num_classes)
    if check:
        check(shapes)
    names = quantizable_linears(shapes, quant)
    deferred = {order.index(shapes.get_submodule(n).weight): shapes.get_submodule(n).weight.shape for n in names}
    with DeferLinears(deferred):
        model = build_backbone(random, num_classes)
    return model, names


def load_rest(model: nn.Module, path: str, deferred: set[str]) -> None:
    """Load the file's tensors into ``model`` but for the ``deferred`` weights, which get their
    ``WeightSource`` (checked by ``check_weights_file`` first: the same file ``load_weights`` accepts)."""
    from safetensors import safe_open

    with opened_weights(path) as name, safe_open(name, "pt") as f:  # the file checked, not one swapped in
        sources = timm_sources(list(f.keys()))
        state = {
            key: torch.cat([f.get_tensor(k) for k in keys]) if len(keys) > 1 else f.get_tensor(keys[0])
            for key, keys in sources.items()
            if key not in deferred and not key.startswith(HEAD_PREFIXES)
        }
    model.load_state_dict(resample_pos_embed(state, model), strict=False)
    for key in deferred:
        module = model.get_submodule(key.removesuffix(".weight"))
        module.weight_source = WeightSource(path, sources[key], module.weight.dtype)


def makes_tensor(func, args, kwargs) -> bool:
    """A factory call: a new tensor from no tensor (other calls without tensors, such as torchvision's
    one-off ``_cuda_version`` on first use, are not counted: they need not recur in the second build)."""
    returns = func._schema.returns
    return (
        len(returns) == 1
        and isinstance(returns[0].type, torch.TensorType)
        and not any(isinstance(t, torch.Tensor) for t in tree_leaves((args, kwargs)))
    )


class TensorOrder(TorchDispatchMode):
    """Numbers the tensors a build makes from nothing (factory calls: ``torch.empty`` and the like),
    in order, so that a second build of the same model can tell which call makes which tensor."""

    def __init__(self):
        super().__init__()
        self.made: dict[int, tuple[int, torch.Tensor]] = {}  # storage -> (call number, tensor kept alive)
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if makes_tensor(func, args, kwargs):
            self.made[out.untyped_storage()._cdata] = (self.calls, out)
            self.calls += 1
        return out

    def index(self, tensor: torch.Tensor) -> int:
        """The factory call that made ``tensor``'s storage."""
        return self.made[tensor.untyped_storage()._cdata][0]


class DeferLinears(TorchDispatchMode):
    """A build in which the factory calls numbered in ``deferred`` make meta tensors of their recorded
    shape. A random draw into a meta tensor is made into a CPU scratch tensor of the same shape and
    strides first, so that the generator advances as it does in a full build; other operations on meta
    tensors compute nothing."""

    def __init__(self, deferred: dict[int, torch.Size]):
        super().__init__()
        self.deferred = deferred
        self.calls = 0
        self.scratch = torch.empty(0, dtype=torch.uint8)  # reused: one allocation per draw fragmented the heap

    def scratch_like(self, target: torch.Tensor) -> torch.Tensor:
        """A CPU tensor of ``target``'s shape, strides and dtype (its values: whatever was there)."""
        size = target.untyped_storage().nbytes()
        if self.scratch.numel() < size:
            self.scratch = torch.empty(size, dtype=torch.uint8)
        return self.scratch[:size].view(target.dtype).as_strided(target.shape, target.stride(), target.storage_offset())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if makes_tensor(func, args, kwargs):
            call, self.calls = self.calls, self.calls + 1
            if call in self.deferred:
                out = func(*args, **{**kwargs, "device": torch.device("meta")})
                if out.shape != self.deferred[call]:  # timm built in another order than on the meta device
                    raise RuntimeError(
                        f"quantized loading: tensor {call} is {tuple(out.shape)}, expected {tuple(self.deferred[call])}"
                    )
                return out
        elif torch.Tag.nondeterministic_seeded in func.tags and args[0].is_meta:
            func(self.scratch_like(args[0]), *args[1:], **kwargs)
        return func(*args, **kwargs)
