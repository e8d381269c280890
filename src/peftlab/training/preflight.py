"""How much memory a run's training will take, estimated before its first step.

The estimate adds what is known exactly to what a probe measures:

- weights: the model's parameters and buffers as built (a quantized base at its stored size);
- gradients: one per trainable weight, same size;
- optimizer state: AdamW's two moments per trainable weight (fp32);
- activations: the bytes autograd saves for the backward pass, counted by a forward pass at
  micro-batches of 1 and 2 images (``torch.autograd.graph.saved_tensors_hooks``, each storage
  once, the weights' own storages left out). The difference is the cost per image, the rest a
  fixed part (the tuner's own saved tensors, for example).

The training peak is about weights + gradients + optimizer state + activations at the
micro-batch (``train.batch_size``). What it leaves out: the backward pass's transient
gradients of activations (about one block's worth), allocator slack, and evaluation at
``train.eval_batch_size`` (no graph is kept there). ``peftlab validate --show`` prints the
estimate; a run whose estimate does not fit the memory available is refused before it trains.
"""

from __future__ import annotations

import math

import psutil
import torch
from torch import nn

from peftlab.backbones import build_backbone, input_spec_for
from peftlab.errors import UserError
from peftlab.metrics import weights_bytes
from peftlab.training.runtime import autocast, resolve_precision
from peftlab.tuners import apply_tuner
from peftlab.tuners.base import TunerContext

GIB = 2 ** 30


def saved_activation_bytes(model: nn.Module, images: torch.Tensor, precision: str) -> int:
    """Bytes of the tensors one forward pass saves for backward (each storage once, weights excluded)."""
    weights = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights and storage.device.type != "meta":
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast(precision, images.device):
        out = model(images)
    del out  # the graph and what it saved are freed here
    return sum(storages.values())


def estimate(model: nn.Module, trainable: list[torch.Tensor], image_shape: tuple[int, int, int],
             batch_size: int, precision: str, device: torch.device) -> dict:
    """The training memory of ``model`` (on ``device``, in train mode) at micro-batch ``batch_size``."""
    was_training = model.training
    model.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the run's random state untouched
        one, two = (saved_activation_bytes(model, torch.randn(n, *image_shape, device=device), precision)
                    for n in (1, 2))
    model.train(was_training)
    per_image = max(0, two - one)
    trainable_bytes = sum(p.numel() * p.element_size() for p in trainable)
    parts = {
        "weights_bytes": weights_bytes(model),
        "gradients_bytes": trainable_bytes,
        "optimizer_state_bytes": 2 * sum(p.numel() * 4 for p in trainable),  # AdamW: exp_avg, exp_avg_sq in fp32
        "activations_bytes": (one - per_image) + per_image * batch_size,
    }
    return {**parts, "total_bytes": sum(parts.values()), "activations_per_image_bytes": per_image,
            "activations_fixed_bytes": one - per_image, "batch_size": batch_size,
            "training_bytes": parts["gradients_bytes"] + parts["optimizer_state_bytes"] + parts["activations_bytes"]}


def available_bytes(device: torch.device) -> int:
    """Memory a run may still take: free GPU memory on CUDA, the host's available RAM otherwise."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def check_fits(est: dict, available: int, batch_size: int, grad_accum: int, quantizable: bool) -> None:
    """A one-line UserError when the training memory beyond the built weights exceeds ``available``,
    with a micro-batch (and the gradient accumulation that keeps the effective batch) that fits."""
    if est["training_bytes"] <= available:
        return
    fixed = est["gradients_bytes"] + est["optimizer_state_bytes"] + est["activations_fixed_bytes"]
    room = int(0.9 * available) - fixed
    fits = 2 ** int(math.log2(room // est["activations_per_image_bytes"])) if est["activations_per_image_bytes"] \
        and room >= est["activations_per_image_bytes"] else 0
    fits = min(fits, batch_size)
    advice = []
    if fits >= 1:
        advice.append(f"train.batch_size={fits} with train.grad_accum={math.ceil(batch_size * grad_accum / fits)} "
                      "(the same effective batch)")
    advice.append("train.grad_checkpointing=true")
    if quantizable:
        advice.append("a quantized base (quant.mode=nf4)")
    raise UserError(f"this run needs about {est['training_bytes'] / GIB:.2f} GiB for training beyond its weights "
                    f"(activations {est['activations_bytes'] / GIB:.2f} GiB at train.batch_size={batch_size}) but "
                    f"{available / GIB:.2f} GiB are available: try " + ", or ".join(advice))


def format_estimate(est: dict) -> list[str]:
    mib = 2 ** 20
    return [f"# memory estimate for training at micro-batch {est['batch_size']}: "
            f"{est['total_bytes'] / mib:,.0f} MiB",
            f"#   weights {est['weights_bytes'] / mib:,.1f} MiB, gradients {est['gradients_bytes'] / mib:,.1f} MiB, "
            f"AdamW state {est['optimizer_state_bytes'] / mib:,.1f} MiB",
            f"#   activations {est['activations_bytes'] / mib:,.1f} MiB "
            f"({est['activations_per_image_bytes'] / mib:,.2f} MiB per image + "
            f"{est['activations_fixed_bytes'] / mib:,.2f} MiB fixed)"]


def estimate_for_config(cfg) -> dict:
    """The estimate for a run config, on this machine's CPU (``peftlab validate --show``): the model
    is built with random weights (same sizes), adapted, quantized as configured, and probed."""
    cpu = torch.device("cpu")
    num_classes = cfg.model.num_classes or (len(cfg.data.classes) if cfg.data.classes else 10)
    spec = input_spec_for(cfg.model)
    with torch.random.fork_rng():
        tuner = apply_tuner(build_backbone(cfg.model, num_classes, weights=False), cfg,
                            TunerContext(total_steps=10 ** 6, device=cpu, quant=cfg.quant))
    return estimate(tuner.model, list(tuner.trainable_parameters().values()),
                    (spec.in_chans, spec.img_size, spec.img_size), cfg.train.batch_size,
                    resolve_precision(cfg.train.precision, cpu), cpu)
