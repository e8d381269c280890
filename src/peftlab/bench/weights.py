"""Figures of a built model: stored bytes of a quantized base (P3a), and inference latency of the
merged and unmerged adapter (P4) and of a QA-LoRA model kept quantized (P4q)."""

from __future__ import annotations

import copy
import dataclasses

import torch

from peftlab.bench.common import spread
from peftlab.config.schema import RunConfig
from peftlab.models.backbones import build_backbone
from peftlab.training import metrics
from peftlab.training.runtime import autocast
from peftlab.tuners.base import TunerContext, apply_tuner

QUANT_MODES = {
    "int8": {"mode": "int8"},
    "nf4": {"mode": "nf4"},
    "nf4_double_quant": {"mode": "nf4", "double_quant": True},
    "fp4": {"mode": "fp4"},
}


def inference(model, images, precision: str, device):
    """A call that runs ``model`` on ``images`` without gradients, as a timed step."""

    def call():
        with torch.no_grad(), autocast(precision, device):
            model(images)

    return call


def quantized_bytes(cfg: RunConfig) -> dict:
    """Stored bytes of the quantized block Linears relative to the same Linears in fp32, per mode."""
    from peftlab.quant.bases import is_quantized_linear, quantize_base

    torch.manual_seed(0)
    base = build_backbone(cfg.model, 10)
    out = {}
    for name, quant in QUANT_MODES.items():
        model = copy.deepcopy(base)
        quantize_base(model, dataclasses.replace(cfg.quant, **quant), torch.device("cpu"))
        layers = [m for n, m in model.named_modules() if is_quantized_linear(m) and ".blocks." in f".{n}"]
        stored = sum(t.numel() * t.element_size() for m in layers for t in m.state_dict().values())
        fp32 = sum(4 * (m.in_features * m.out_features + m.out_features) for m in layers)
        out[name] = {"ratio": stored / fp32, "stored_bytes": stored, "fp32_bytes": fp32, "layers": len(layers)}
    return out


def inference_latency(
    cfg: RunConfig, images, precision: str, repeats: int, device: torch.device = torch.device("cpu")
) -> dict:
    torch.manual_seed(0)
    base = build_backbone(cfg.model, 10).to(device).eval()
    tuner = apply_tuner(copy.deepcopy(base), cfg.method, TunerContext.for_checks(cfg))
    with torch.no_grad():
        for name, param in tuner.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)  # a trained-looking adapter: the merge is not a no-op
    adapter = tuner.model.eval()
    merged = tuner.merged_model().eval()

    times = metrics.time_interleaved(
        {
            name: inference(model, images, precision, device)
            for name, model in (("base", base), ("merged", merged), ("adapter", adapter))
        },
        repeats,
        device,
        warmup=2,
    )
    ratios = {
        "merged_vs_base": [m / b for m, b in zip(times["merged"], times["base"])],
        "adapter_vs_base": [a / b for a, b in zip(times["adapter"], times["base"])],
    }
    return {"seconds": {k: spread(v) for k, v in times.items()}, "ratios": {k: spread(v) for k, v in ratios.items()}}


def qalora_latency(
    cfg: RunConfig, images, precision: str, repeats: int, device: torch.device = torch.device("cpu")
) -> dict:
    """QA-LoRA: merged (quantized) / quantized base without adapters, and quantized / fp32 merged."""
    torch.manual_seed(0)
    tuner = apply_tuner(build_backbone(cfg.model, 10), cfg.method, TunerContext(None, device, cfg.quant))
    tuner.model.to(device)
    plain = tuner.merged_model(quantized=True).eval()  # B = 0: the quantized base, no adapters
    with torch.no_grad():
        for name, param in tuner.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    merged = tuner.merged_model(quantized=True).eval()
    fp32 = tuner.merged_model().eval()
    images = images.to(device)

    times = metrics.time_interleaved(
        {
            name: inference(model, images, precision, device)
            for name, model in (("quantized_base", plain), ("merged", merged), ("fp32_merged", fp32))
        },
        repeats,
        device,
        warmup=2,
    )
    ratios = {
        "merged_vs_quantized_base": [m / b for m, b in zip(times["merged"], times["quantized_base"])],
        "quantized_vs_fp32": [m / f for m, f in zip(times["merged"], times["fp32_merged"])],
    }
    return {
        "format": cfg.method.format,
        "group_size": cfg.method.group_size,
        "seconds": {k: spread(v) for k, v in times.items()},
        "ratios": {k: spread(v) for k, v in ratios.items()},
    }
