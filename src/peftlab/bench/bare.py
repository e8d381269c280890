"""The ``bare`` figure: each of peftlab's training steps beside the same step of a bare loop, timed in one
round-robin (issue 74). The bare loop is what a user writes without peftlab: timm's model, PEFT's LoRA or
AdaLoRA on timm's fused ``qkv`` (bitsandbytes' nf4 Linears under it for QLoRA), AdamW (fused on a GPU),
autocast, backward, clipping, step; AdaLoRA calls PEFT's ``update_and_allocate`` as PEFT's docs do.

Each peftlab / bare ratio has the target 1.05. Each ratio between methods (QLoRA / LoRA, AdaLoRA / LoRA,
LoRA / full, compiled / eager) is given for peftlab and for the bare loop side by side; where peftlab's
is within 1.05 of the bare loop's, the cost is the libraries' own (PEFT's, bitsandbytes', torch's), and the
figure says so, else peftlab's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from peftlab.bench.common import QKV, Trainer, ratios, spread
from peftlab.config.schema import RunConfig
from peftlab.models.backbones import build_backbone
from peftlab.training import metrics

TARGET = 1.05  # peftlab's step / the bare loop's, and peftlab's ratio / the bare loop's
EAGER = ("lora", "full", "adalora", "qlora_nf4")
COMPILED = ("lora", "full")
# ratios between methods, peftlab's and the bare loop's side by side: (name, numerator, denominator)
METHOD_RATIOS = (
    ("qlora_nf4_vs_lora", "qlora_nf4", "lora"),
    ("adalora_vs_lora", "adalora", "lora"),
    ("lora_vs_full", "lora", "full"),
    ("lora_vs_full_compiled", "lora_compiled", "full_compiled"),
    ("compiled_vs_eager_lora", "lora_compiled", "lora"),
    ("compiled_vs_eager_full", "full_compiled", "full"),
)
ADALORA = {"init_r": 8, "target_r": 4, "tinit": 0, "deltaT": 1}  # every step reallocates: the worst case


class BareLoop:
    """A bare timm + PEFT (+ bitsandbytes) training loop for ``kind`` (lora, full, adalora, qlora_nf4) on the
    model of ``cfg`` (its timm name and sizes only); ``step()`` is one training step. No peftlab code runs
    in its step."""

    def __init__(
        self, kind: str, cfg: RunConfig, images, labels, precision: str, device: torch.device, compiled: bool = False
    ):
        torch.manual_seed(0)
        model = build_backbone(cfg.model, 10)  # timm.create_model with the config's sizes, random weights
        self.kind, self.precision, self.device = kind, precision, device
        self.images, self.labels = images.to(device), labels.to(device)
        self.steps_taken = 0
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if kind == "qlora_nf4":
            model = nf4_linears(model, dtype)
        if kind in ("lora", "qlora_nf4"):
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=QKV, modules_to_save=["head"]))
        elif kind == "adalora":
            from peft import AdaLoraConfig, get_peft_model

            model = get_peft_model(
                model,
                AdaLoraConfig(**ADALORA, lora_alpha=16, total_step=10**6, target_modules=QKV, modules_to_save=["head"]),
            )
        self.model = model.to(device).train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4, fused=(device.type == "cuda") or None)
        if compiled:
            self.model.compile()

    def step(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            loss = F.cross_entropy(self.model(self.images).float(), self.labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        if self.kind == "adalora":
            self.model.base_model.update_and_allocate(self.steps_taken)
        self.optimizer.zero_grad(set_to_none=True)
        self.steps_taken += 1


def nf4_linears(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Every ``nn.Linear`` but the head as bitsandbytes' ``Linear4bit`` (nf4), quantized when moved to a device."""
    import bitsandbytes as bnb

    for name, module in list(model.named_modules()):
        if type(module) is not nn.Linear or name == "head":
            continue
        layer = bnb.nn.Linear4bit(
            module.in_features, module.out_features, bias=module.bias is not None, compute_dtype=dtype, quant_type="nf4"
        )
        layer.weight = bnb.nn.Params4bit(module.weight.data.clone(), requires_grad=False, quant_type="nf4")
        if module.bias is not None:
            layer.bias = nn.Parameter(module.bias.data.clone(), requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer)
    return model


def peftlab_cfg(cfg: Callable[..., RunConfig], kind: str) -> RunConfig:
    return {
        "lora": lambda: cfg("lora"),
        "full": lambda: cfg("full"),
        "adalora": lambda: cfg("adalora", **ADALORA),
        "qlora_nf4": lambda: cfg("lora", quant={"mode": "nf4"}),
    }[kind]()


def bare_figure(
    cfg: Callable[..., RunConfig],
    images,
    labels,
    dtype: str,
    repeats: int,
    device: torch.device,
    compiled: bool = True,
    progress: Callable[[str], None] = lambda text: None,
) -> dict:
    """peftlab's LoRA (q, v), full, AdaLoRA and QLoRA nf4 steps and, with ``compiled``, its compiled LoRA and
    full steps, each beside the bare loop's, timed in one balanced round-robin after two warm-up steps each
    (the first compiles)."""
    steps = {}
    for kind in EAGER:
        steps[f"peftlab_{kind}"] = Trainer(peftlab_cfg(cfg, kind), images, labels, dtype, device=device).step
        steps[f"bare_{kind}"] = BareLoop(kind, cfg("full"), images, labels, dtype, device).step
    for kind in COMPILED if compiled else ():
        peftlab = Trainer(peftlab_cfg(cfg, kind), images, labels, dtype, device=device, compiled=True)
        steps[f"peftlab_{kind}_compiled"] = peftlab.step
        steps[f"bare_{kind}_compiled"] = BareLoop(kind, cfg("full"), images, labels, dtype, device, compiled=True).step
    progress(f"bare: {repeats} timed rounds of {len(steps)} steps")
    times = metrics.time_interleaved(steps, repeats, device, warmup=2)
    kinds = [*EAGER, *(f"{kind}_compiled" for kind in (COMPILED if compiled else ()))]
    pairs = {kind: {**ratios(times, f"peftlab_{kind}", f"bare_{kind}"), "target": TARGET} for kind in kinds}
    between = {}
    for name, top, bottom in METHOD_RATIOS:
        if top not in kinds or bottom not in kinds:
            continue
        ours, theirs = (
            ratios(times, f"peftlab_{top}", f"peftlab_{bottom}"),
            ratios(times, f"bare_{top}", f"bare_{bottom}"),
        )
        excess = ours["median"] / theirs["median"]
        between[name] = {
            "peftlab": ours,
            "bare": theirs,
            "peftlab_vs_bare": excess,
            "target": TARGET,
            # where peftlab's ratio is the bare loop's, what the ratio costs is the libraries' own
            "cost_is": "the libraries' own (the bare loop pays it too)" if excess <= TARGET else "peftlab's",
        }
    return {
        "step_seconds": {name: spread(values) for name, values in times.items()},
        "peftlab_vs_bare": pairs,
        "method_ratios": between,
        "setting": "peftlab: LoRA r=8 on q,v (the standard preset), full, AdaLoRA (init_r 8, target_r 4, tinit 0, "
        "deltaT 1: every step reallocates) with its orthogonal regularizer, QLoRA nf4 (LoRA on an nf4 base), "
        "the recipe's step (training.step). Bare: timm, PEFT's LoRA r=8 / AdaLoRA (same schedule; PEFT adds no "
        "regularizer to a logits model) on the fused qkv with the head trained, bitsandbytes' nf4 Linear4bit "
        "under every Linear but the head for QLoRA, AdamW (fused on a GPU), clip 1.0; compiled: "
        "nn.Module.compile (inductor) of each model. Two warm-up steps each, then every step once per "
        "repetition in a balanced order; each ratio is the median of the per-repetition ratios",
    }
