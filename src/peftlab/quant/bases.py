"""Quantized bases (QLoRA): bitsandbytes int8 and 4-bit (nf4 / fp4) Linears under the adapters.

A quantized base is an attribute of the base model, not another pipeline: a tuner's
``apply`` calls ``quantize_base`` after it has split what it adapts (timm's fused qkv) and
before PEFT injects adapters, so PEFT wraps the bitsandbytes layers as its own bnb LoRA
layers. Every ``nn.Linear`` is quantized except those ``quant.skip`` names (by default the
head; the patch embedding is a Conv2d). Layers are quantized one at a time, so the base is
never held twice in fp32.

Facts this module relies on (bitsandbytes 0.50.2, probed on AVX2 and AVX512-BF16 CPUs):
- Quantization happens when a layer is moved with ``.to(device)``. ``Linear4bit`` defaults
  to fp4, so ``quant_type`` is always set; ``compress_statistics`` is double quantization.
- 4-bit layers dequantize the whole weight per forward and multiply in ``compute_dtype``
  (peftlab's ``BufferedLinear4bit`` writes an fp32 CPU dequantization into one reused buffer:
  peftlab.quant.step).
- ``Linear8bitLt`` computes with the dequantized weight in training mode but quantizes the
  activations to int8 in eval mode (LLM.int8: fp16 for outlier columns above
  ``INT8_THRESHOLD``); its eval warning on every call is silenced here.
- Merging into a quantized base re-quantizes (PEFT's bnb ``merge``): merged 4-bit weights are
  quant(dequant(W) + ΔW), not W + ΔW. ``dequantized_linear`` gives the exact fp32 merge.
- On a CPU with AVX512-BF16, ``Linear4bit.forward`` in eval mode with an input that needs no
  gradient repacks the weight IN PLACE into a layout for its bf16 kernel (codes reordered, the
  absmax statistics rounded to bf16 and un-nested) and computes in bf16 from then on; elsewhere
  it dequantizes and multiplies in ``compute_dtype``. peftlab turns the repacking off on every
  4-bit layer it builds (``quant.cpu_kernel: reference``, the default), so a run's numbers do
  not depend on the CPU model. With ``cpu_kernel: bnb`` the repacking happens in evaluation;
  ``restore_layout`` reads the weight back into the standard layout before anything else reads
  it (training, dequantizing, merging, counting bytes). bitsandbytes' own inverse leaves a
  non-nested absmax transposed (5.6% weight error measured); ``restore_layout`` does not.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from peftlab.config.sections import QuantConfig
from peftlab.models.backbones import head_prefix
from peftlab.quant.allocator import let_go, release_freed_memory
from peftlab.utils.cpu import PRODUCTS_ONEDNN_QUANTIZED, pinned_products
from peftlab.utils.errors import ConfigError, WeightsError

BNB_PIN = "bitsandbytes==0.50.2"
INT8_THRESHOLD = 6.0  # LLM.int8's outlier threshold, transformers' default llm_int8_threshold
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def require_bitsandbytes(mode: str):
    """The bitsandbytes module, or a one-line ConfigError naming the package and the fix."""
    try:
        import bitsandbytes
    except Exception as err:  # ImportError, or a native library that fails to load
        raise ConfigError(
            f"quant.mode={mode!r} needs bitsandbytes, which cannot be loaded here "
            f"({type(err).__name__}: {' '.join(str(err).split())[:160]}); install it with "
            f"`pip install {BNB_PIN}` or use quant.mode=none"
        ) from None
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    return bitsandbytes


def is_skipped(name: str, skip: tuple[str, ...]) -> bool:
    """True when a pattern matches whole dot-separated components of ``name`` (or all of it)."""
    return any(re.fullmatch(rf"(.*\.)?({pattern})(\..*)?", name) for pattern in skip)


def quantizable_linears(model: nn.Module, quant: QuantConfig) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) is nn.Linear and not is_skipped(n, quant.skip)]


def check_quant(quant: QuantConfig, model: nn.Module) -> None:
    """Refuse what cannot be built: a missing bitsandbytes, nothing to quantize, a quantized head."""
    if quant.mode == "none":
        return
    require_bitsandbytes(quant.mode)
    if not quantizable_linears(model, quant):
        raise ConfigError(f"quant.skip={list(quant.skip)!r} leaves no Linear module to quantize")
    head = head_prefix(model)
    if not is_skipped(head, quant.skip):
        raise ConfigError(
            f"quant.skip={list(quant.skip)!r} must name the classifier head {head!r}: the head trains "
            "and cannot be quantized"
        )


def is_quantized_linear(module: nn.Module) -> bool:
    """A bitsandbytes Linear, or one of peftlab's own quantized Linears (QA-LoRA's ``GroupQuantLinear``),
    which say so with the class attribute ``quantized_base = True`` (quant imports no tuner)."""
    return getattr(type(module), "quantized_base", False) is True or is_bnb_linear(module)


def is_bnb_linear(module: nn.Module) -> bool:
    """A bitsandbytes int8 or 4-bit Linear (bitsandbytes is never imported to answer)."""
    bnb = sys.modules.get("bitsandbytes")
    return bnb is not None and isinstance(module, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit))


def cpu_has_bnb_kernel() -> bool:
    """Whether bitsandbytes' bf16 4-bit CPU kernel runs here (AVX512-BF16), as bitsandbytes itself decides."""
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def quantized_linear(linear: nn.Linear, quant: QuantConfig, device: torch.device) -> nn.Module:
    """A bitsandbytes copy of ``linear`` on ``device`` (quantized by the move), frozen."""
    bnb = require_bitsandbytes(quant.mode)
    weight = linear.weight.detach()
    if quant.mode == "int8":
        layer = int8_layer_class(bnb)(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            has_fp16_weights=False,
            threshold=INT8_THRESHOLD,
            device="meta",
        )
        layer.weight = bnb.nn.Int8Params(weight.to("cpu", copy=True), requires_grad=False, has_fp16_weights=False)
    else:
        from peftlab.quant.step import BufferedLinear4bit  # imports bitsandbytes

        layer = BufferedLinear4bit(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            compute_dtype=DTYPES[quant.compute_dtype],
            compress_statistics=quant.double_quant,
            quant_type=quant.mode,
            device="meta",
        )
        layer.weight = bnb.nn.Params4bit(
            weight.to("cpu", copy=True),
            requires_grad=False,
            quant_type=quant.mode,
            compress_statistics=quant.double_quant,
            module=layer,
        )
        # read by Linear4bit.forward; bitsandbytes' bf16 kernel exists only on AVX512-BF16 CPUs (its own default
        # asks the CPU): forced on an AVX2-only CPU it repacks the weight for a kernel the CPU lacks, and the
        # merged model's accuracy then differed from its exported copy's. There "bnb" is the reference path.
        layer.support_avx512bf16_for_cpu = quant.cpu_kernel == "bnb" and cpu_has_bnb_kernel()
        layer.register_state_dict_pre_hook(restore_layout_before_saving)  # before bnb's own (lossy) inverse
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    return moved(layer, device, quant.mode)


def int8_layer_class(bnb) -> type:
    """peftlab's subclass of bitsandbytes' ``Linear8bitLt`` whose pinned training input gradient goes through
    oneDNN (``quant.int8``), the pin's products; bitsandbytes' own where ``utils.cpu.PRODUCTS_SWITCH`` asks for an
    earlier pin's."""
    if pinned_products(True) != PRODUCTS_ONEDNN_QUANTIZED:
        return bnb.nn.Linear8bitLt
    from peftlab.quant.int8 import CandidateLinear8bitLt  # imports bitsandbytes

    return CandidateLinear8bitLt


def moved(layer: nn.Module, device: torch.device, mode: str) -> nn.Module:
    """``layer.to(device)``, which quantizes it; a device where bitsandbytes lacks a kernel for the
    mode (torch's NotImplementedError "Could not run 'bitsandbytes::...' with arguments from the ...
    backend") is a one-line ConfigError, not a traceback."""
    try:
        return layer.to(device)
    except NotImplementedError as err:
        first = " ".join(str(err).split(". ")[0].split())[:160]
        raise ConfigError(
            f"quant.mode={mode!r} is not supported by {BNB_PIN} on {device.type} ({first}); "
            "use train.device=cpu or quant.mode=none"
        ) from None


@dataclass(frozen=True)
class WeightSource:
    """Where a Linear's weight still lies when the base is quantized while loading (peftlab.quant.load):
    rows ``start:stop`` of ``keys`` concatenated along dim 0 (HF files hold q, k and v apart) in a
    safetensors file, read as ``dtype`` when the layer is quantized."""

    path: Path
    keys: tuple[str, ...]
    dtype: torch.dtype
    start: int = 0
    stop: int | None = None

    def rows(self, start: int, stop: int) -> WeightSource:
        """Rows ``start:stop`` of this weight (a q, k or v slice of timm's fused qkv)."""
        return replace(self, start=self.start + start, stop=self.start + stop)

    def read(self) -> torch.Tensor:
        """Only these rows leave the file: one layer's weight at a time."""
        from safetensors import safe_open

        parts, offset = [], 0
        with safe_open(str(self.path), "pt") as f:
            for key in self.keys:
                tensor = f.get_slice(key)
                rows = tensor.get_shape()[0]
                low, high = max(self.start - offset, 0), min(rows if self.stop is None else self.stop - offset, rows)
                if low < high:
                    parts.append(tensor[low:high])
                offset += rows
        return (torch.cat(parts) if len(parts) > 1 else parts[0]).to(self.dtype)


@dataclass(frozen=True)
class Placeholder:
    """A Linear's weight that a saved quantized state will replace (``export.load_quantized``): read as
    random values of its shape, one layer at a time, so that the layer can be quantized and then
    overwritten as a base built in full would be (what it held was random too)."""

    shape: tuple[int, int]
    dtype: torch.dtype

    def rows(self, start: int, stop: int) -> Placeholder:
        return replace(self, shape=(stop - start, self.shape[1]))

    def read(self) -> torch.Tensor:
        return torch.empty(self.shape, dtype=self.dtype).normal_(std=0.02, generator=torch.Generator().manual_seed(0))


def in_file(module: nn.Module) -> bool:
    """True when ``module``'s weight still lies in its file (peftlab.quant.load)."""
    return getattr(module, "weight_source", None) is not None and module.weight.is_meta


def materialized(linear: nn.Module) -> nn.Module:
    """``linear`` with its weight read from its file when it still lies there (its weight on the meta
    device with a ``weight_source``); any other module as it is."""
    if not in_file(linear):
        return linear
    linear.weight = nn.Parameter(linear.weight_source.read(), requires_grad=linear.weight.requires_grad)
    del linear.weight_source
    return linear


def load_pending(model: nn.Module) -> None:
    """Read every weight still in its file: a tuner that quantized no Linear leaves them in full precision."""
    pending = [m for m in model.modules() if getattr(m, "weight_source", None) is not None]
    for module in pending:
        materialized(module)


def quantize_base(model: nn.Module, quant: QuantConfig, device: torch.device) -> list[str]:
    """Replace every quantizable Linear by its bitsandbytes copy, one at a time; the names replaced.

    Sets ``is_loaded_in_8bit`` / ``is_loaded_in_4bit`` on ``model``: PEFT reads them to wrap
    the bnb layers as its bnb LoRA layers (without them it treats them as plain Linears and
    merging breaks).
    """
    if quant.mode == "none":
        return []
    names = quantizable_linears(model, quant)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        read = in_file(getattr(parent, child))  # read here, one layer at a time (peftlab.quant.load)
        linear = materialized(getattr(parent, child))
        setattr(parent, child, quantized_linear(linear, quant, device))
        mapped = None if read else linear.weight
        del linear
        let_go(mapped)
    model.is_loaded_in_8bit = quant.mode == "int8"
    model.is_loaded_in_4bit = quant.mode in ("nf4", "fp4")
    release_freed_memory()
    return names


def is_repacked(layer: nn.Module) -> bool:
    """True when bitsandbytes has repacked this 4-bit layer's weight for its AVX512-BF16 CPU kernel."""
    return bool(getattr(getattr(getattr(layer, "weight", None), "quant_state", None), "packing_format_for_cpu", False))


def restore_layout(model: nn.Module) -> None:
    """Put every repacked 4-bit weight of ``model`` back into bitsandbytes' standard layout, in place.

    The codes come back exactly; the absmax statistics keep the bf16 rounding the repacking gave
    them (what the bf16 kernel computed with), nested again when they were (bitsandbytes'
    re-quantization, as its own state-dict save does). A model that was never repacked is untouched.
    """
    repacked = [m for m in model.modules() if is_bnb_linear(m) and is_repacked(m)]  # not PEFT's wrappers of them
    if not repacked:
        return
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    for layer in repacked:
        state = layer.weight.quant_state
        nested = state.original_nested
        data, state = _convert_weight_packed_for_cpu_inverse(layer.weight.data, state)
        if not nested:  # bitsandbytes leaves it (in/blocksize, out) in bf16: back to one value per block, in order
            state.absmax = state.absmax.T.reshape(-1).to(state.dtype).contiguous()
        layer.weight.data, layer.weight.quant_state = data, state


def restore_layout_before_saving(layer: nn.Module, prefix: str, keep_vars: bool) -> None:
    """A state-dict pre-hook: bitsandbytes' ``_save_to_state_dict`` would undo a repacking itself
    and leave a non-nested absmax transposed in bf16 (checkpoints, exports, adapter files, byte
    counts all call ``state_dict``)."""
    restore_layout(layer)


@contextlib.contextmanager
def weight_only_arithmetic(model: nn.Module):
    """Quantized layers compute with their dequantized weight (an fp32 matmul) inside this block.

    bitsandbytes' ``Linear8bitLt`` quantizes the activations too (LLM.int8): on CPU in eval mode,
    on CUDA always; its 4-bit kernel for AVX512-BF16 CPUs computes in bf16 (``quant.cpu_kernel:
    bnb``). That rounding is the kernel's, not the merge's; the merge check compares merged and
    unmerged models with the weights the adapter trained on and exact activations. (With the
    reference kernel a 4-bit layer computes exactly this already.)
    """
    layers = [m for m in model.modules() if is_bnb_linear(m)]

    def dequantized_forward(layer):
        def forward(x):
            bias = None if layer.bias is None else layer.bias.to(x.dtype)
            return F.linear(x, dequantized_weight(layer).to(x.dtype), bias)

        return forward

    for module in layers:
        module.forward = dequantized_forward(module)
    try:
        yield model
    finally:
        for module in layers:
            del module.forward


def dequantized_weight(layer: nn.Module) -> torch.Tensor:
    """The fp32 weight a bitsandbytes layer computes with (out x in), whatever layout it is in."""
    from peft.utils.integrations import dequantize_bnb_weight

    restore_layout(layer)
    state = getattr(layer, "state", None)  # int8: MatmulLtState (SCB); 4-bit reads weight.quant_state
    return dequantize_bnb_weight(layer.weight, state=state).float()


def dequantized_linear(layer: nn.Module, delta: torch.Tensor | None = None) -> nn.Linear:
    """A float Linear holding dequant(W) (+ delta): what the quantized layer (and its adapter) computes."""
    weight = dequantized_weight(layer)
    if delta is not None:
        weight = weight + delta.to(weight)
    linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=False)
    if layer.bias is not None:
        linear.bias = nn.Parameter(layer.bias.detach().float().clone(), requires_grad=False)
    return linear


def base_weight_bytes(model: nn.Module, trainable: set[int]) -> dict[str, int]:
    """Bytes of the frozen base weights as stored, and what the same weights take in fp32.

    A bitsandbytes layer counts its state dict (quantized data, absmax, nested statistics,
    code book, bias), a group-wise layer its packed codes, scales, zeros / offsets, code book and
    bias (not the fp32 copy a quantization schedule keeps while training); other modules their frozen
    parameters and buffers. ``trainable`` holds the ``id`` of every trainable parameter (not counted:
    they are the method's own).
    """
    stored = fp32 = 0
    restore_layout(model)  # count the standard layout, not the bf16 kernel's
    for module in model.modules():
        if is_quantized_linear(module):
            stored += sum(t.numel() * t.element_size() for t in module.state_dict().values())
            fp32 += 4 * (
                module.in_features * module.out_features + (module.out_features if module.bias is not None else 0)
            )
            continue
        for param in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if id(param) in trainable:
                continue
            stored += param.numel() * param.element_size()
            fp32 += param.numel() * 4
    return {"base_weights_bytes": stored, "base_weights_fp32_bytes": fp32}


def load_quantized_state(model: nn.Module, state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Load a state dict saved from a quantized model into ``model`` (quantized the same way).

    4-bit weights are rebuilt from their packed codes and statistics
    (``Params4bit.from_prequantized``); int8 weights and everything else load as usual.
    """
    bnb = require_bitsandbytes("export")
    rest = dict(state)
    loaded = []
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit) and f"{name}.weight" in rest:
            prefix = f"{name}.weight."
            stats = {k[len(prefix) :]: rest.pop(k) for k in list(rest) if k.startswith(prefix)}
            module.weight = bnb.nn.Params4bit.from_prequantized(
                rest.pop(f"{name}.weight"), stats, device=device, module=module
            )
            loaded.append(f"{name}.weight")
    result = model.load_state_dict(rest, strict=False)
    missing = [k for k in result.missing_keys if k not in loaded]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"quantized weights do not match the model: missing {missing[:3]}, "
            f"unexpected {list(result.unexpected_keys)[:3]}"
        )
