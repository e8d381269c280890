"""A QA-LoRA model's export (``peftlab export RUN --quantized OUT``, format ``peftlab-groupwise``): the header
fields that describe its group-wise layers, and the model rebuilt from the file and those fields
(``training.export.load_quantized`` reads either kind of quantized export)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import yaml

from peftlab.config.schema import load_config
from peftlab.config.sections import architecture_only
from peftlab.models.backbones import build_backbone
from peftlab.models.weights import read_safetensors
from peftlab.tuners.modules import replace_modules, split_qkv
from peftlab.tuners.qalora.layer import GroupQuantLinear
from peftlab.utils.errors import WeightsError


def groupwise_metadata(model: torch.nn.Module) -> dict[str, str] | None:
    """Header fields of a QA-LoRA export: format, group size and the quantized layers' shapes; None for others."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, GroupQuantLinear)}
    if not layers:
        return None
    first = next(iter(layers.values()))
    return {
        "format": "peftlab-groupwise",
        "quant_format": first.format,
        "group_size": str(first.group_size),
        "architecture": type(model).__name__,
        "layers": json.dumps({n: [m.out_features, m.in_features] for n, m in layers.items()}),
    }


def load_groupwise(path: Path, metadata: dict[str, str], device: str) -> torch.nn.Module:
    """A QA-LoRA export rebuilt: the backbone, q/k/v split where the file has slices, group-wise layers."""
    state = read_safetensors(path)
    cfg = load_config(overrides=yaml.safe_load(metadata["peftlab_config"]))
    model = build_backbone(architecture_only(cfg.model), int(metadata["num_classes"]))
    split = sorted({m.group(1) for k in state if (m := re.match(r"(.*\.qkv)\.[qkv]\.codes$", k))})
    replace_modules(model, split, split_qkv)
    fmt, group_size = metadata["quant_format"], int(metadata["group_size"])
    for name, (out_features, in_features) in json.loads(metadata["layers"]).items():
        linear = model.get_submodule(name)
        if (linear.out_features, linear.in_features) != (out_features, in_features):
            raise WeightsError(
                f"{path}: layer {name} is {out_features} x {in_features} in the file but "
                f"{linear.out_features} x {linear.in_features} in the model"
            )
        layer = GroupQuantLinear(in_features, out_features, linear.bias is not None, fmt, group_size)
        replace_modules(model, [name], lambda _, layer=layer: layer)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"quantized weights do not match the model: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    return model.to(device)
