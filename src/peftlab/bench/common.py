"""What every figure times with: the dtypes, a median with its spread, configs and ``Trainer``."""

from __future__ import annotations

import dataclasses
import statistics

import torch
import torch.nn.functional as F

from peftlab.config.schema import RunConfig, load_config
from peftlab.models.backbones import enable_grad_checkpointing
from peftlab.quant.load import build_base
from peftlab.training.runtime import autocast, before_compile, fused_adamw
from peftlab.training.step import NonFinite, Optimization, training_step, warmup_cosine
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.utils import cpu

# timm's whole fused qkv (Swin's in its stages), as a hand-written PEFT loop adapts it
QKV = r"(?:layers\.\d+\.)?blocks\.\d+\.attn\.qkv"

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def ratios(times: dict[str, list[float]], a: str, b: str) -> dict:
    """The spread of ``a``'s times over ``b``'s, repetition by repetition (timed in alternation)."""
    return spread([x / y for x, y in zip(times[a], times[b])])


def make_cfg(
    model: str | dict,
    img_size: int | None,
    method: str,
    targets="standard",
    r: int = 8,
    quant: dict | None = None,
    **options,
) -> RunConfig:
    """A 10-class run config of ``model`` (a timm name, or a model section such as the tests' tiny ViT)."""
    method_cfg = (
        {"name": method, "r": r, "target_modules": targets} if method in ("lora", "qalora") else {"name": method}
    )
    method_cfg.update(options)
    model_section = {"name": model} if isinstance(model, str) else dict(model)
    overrides = {"model": {**model_section, "num_classes": 10}, "method": method_cfg, "quant": quant or {}}
    if img_size:
        overrides["model"]["img_size"] = img_size
    return load_config(overrides=overrides)


class Trainer:
    """One model, its optimizer and schedule, and a fixed batch: ``step()`` is one training step."""

    def __init__(
        self,
        cfg: RunConfig,
        images,
        labels,
        precision: str,
        hand_written: bool = False,
        device: torch.device = torch.device("cpu"),
        compiled: bool = False,
        clip_grad: float | None = 1.0,  # the bench's; a study's own step (bench.plan) keeps its run's
        reproducible: bool | None = None,  # the AdamW a reproducible run takes; None: where this process is pinned
    ):
        torch.manual_seed(0)
        pinned = cpu.applies() and cpu.arithmetic_pinned()
        model = build_base(
            cfg.model, cfg.quant, cfg.method, 10
        )  # a quantized base from a weights file is quantized while loading
        if cfg.train.grad_checkpointing:
            enable_grad_checkpointing(model)
        self.precision, self.images, self.labels = precision, images.to(device), labels.to(device)
        self.device = device
        self.steps_taken = 0
        self.cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, precision=precision, clip_grad=clip_grad)
        )
        if hand_written:
            # the minimal loop a user writes: PEFT on timm's fused qkv, AdamW (fused on a GPU), backward, step
            from peft import LoraConfig, get_peft_model

            self.model = get_peft_model(
                model.to(device),
                LoraConfig(
                    r=cfg.method.r,
                    lora_alpha=cfg.method.lora_alpha,
                    target_modules=QKV,
                    modules_to_save=["head"],
                ),
            )
            self.params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(self.params, lr=1e-4, fused=(device.type == "cuda") or None)
            self.step = self.hand_step
        else:
            self.tuner = apply_tuner(model, cfg.method, TunerContext(10**6, device, cfg.quant))
            self.model = self.tuner.model.to(device)
            self.params = list(self.tuner.trainable_parameters().values())
            self.optimizer = torch.optim.AdamW(
                self.tuner.param_groups(1e-4, 0.01, 1e-4, 0.01),
                fused=fused_adamw(None, device, reproducible=pinned if reproducible is None else reproducible) or None,
            )  # pinned (the bench run under train.reproducible's switches): the AdamW a reproducible run takes
            self.tuner.attach_optimizer(self.optimizer)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(10**6, 0.0))
            self.scaler = torch.amp.GradScaler(device.type, enabled=False)
            self.nonfinite = NonFinite(device, precision)
            self.optimization = Optimization(
                self.optimizer,
                self.scheduler,
                self.scaler,
                self.params,
                self.cfg.train.precision,
                self.cfg.train.clip_grad,
                device,
            )
            self.step = self.recipe_step
        self.model.train()
        if compiled:  # what train.compile does; the first step compiles
            before_compile(self.model)
            self.model.compile()

    def recipe_step(self) -> None:
        """The recipe's own training step (training.step.training_step); the step count advances, so
        rank controllers reallocate as they would in a run; ``loss`` is its loss (on the device)."""
        self.loss, _, _ = training_step(
            self.model,
            self.tuner,
            [(self.images, self.labels)],
            self.optimization,
            step=self.steps_taken,
            n_micro=1,
            nonfinite=self.nonfinite,
        )
        self.steps_taken += 1

    def hand_step(self) -> None:
        with autocast(self.precision, self.device):
            loss = F.cross_entropy(self.model(self.images).float(), self.labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def machine(report: dict) -> str:
    """The CPU a bench ran on, with its family, model and stepping where recorded: a model name such as "AMD EPYC"
    can stand for two generations that run the same instructions at different speeds."""
    hardware = report["hardware"]
    return ", ".join(filter(None, (hardware["cpu"], hardware.get("cpu_generation"))))
