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
micro-batch (``train.batch_size``). A tested causal-LM run then measures its base alone
(``outcome.base_perplexity``): the base's float weights (``base_pass_bytes``) beside the adapted
model and its AdamW state, which must fit too. What it leaves out: the backward pass's transient
gradients of activations (about one block's worth), allocator slack, and evaluation at
``train.eval_batch_size`` (no graph is kept there). ``peftlab validate --show`` prints the
estimate; a run whose estimate does not fit the memory available is refused before it trains.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import psutil
import torch
from torch import nn

from peftlab.config.sections import MethodConfig, ModelConfig, QuantConfig
from peftlab.models.backbones import HFLogits, build_backbone, build_hf, input_spec_for
from peftlab.models.meta import shapes_only
from peftlab.training.metrics import weights_bytes
from peftlab.training.runtime import autocast, example_inputs, resolve_precision
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.utils.memory_fit import at_batch, check_fits, format_estimate  # noqa: F401  (callers import them here)

PROBED_PATCHES = 1024  # a model of more patches is probed at SMALL_GRIDS (a 1024 px image of 2 px patches: 262,144)
SMALL_GRIDS = (4, 6, 8)  # patches per side
PROBED_PROMPTS = 64  # VPT: a model of more prompt tokens is probed at SMALL_PROMPTS
SMALL_PROMPTS = (1, 2, 3)


def saved_activation_bytes(model: nn.Module, images: torch.Tensor, precision: str) -> int:
    """Bytes of the tensors one forward pass saves for backward (each storage once, weights excluded).

    The weights are read after the forward: a forward may move them (the fused q/k/v step makes q, k
    and v views of one concatenated weight the first time it runs)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.device.type != "meta":
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast(precision, images.device):
        out = model(images)
        weights = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
        saved = sum(nbytes for pointer, nbytes in storages.items() if pointer not in weights)
    del out  # the graph and what it saved are freed here
    return saved


def probe(model: nn.Module, image_shape: tuple[int, int, int], precision: str, device: torch.device) -> tuple[int, int]:
    """The bytes one forward pass of ``model`` saves for backward at 1 image and at 2."""
    was_training = model.training
    model.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the run's random state untouched
        one, two = (saved_activation_bytes(model, example_inputs(image_shape, n, device), precision) for n in (1, 2))
    model.train(was_training)
    return one, two


def estimate(
    model: nn.Module,
    trainable: list[torch.Tensor],
    image_shape: tuple[int, int, int],
    batch_size: int,
    precision: str,
    device: torch.device,
    probed: tuple[int, int] | None = None,
    base_pass: int = 0,
) -> dict:
    """The training memory of ``model`` (on ``device``, in train mode) at micro-batch ``batch_size``;
    ``probed``: ``probe``'s bytes when they are known without a forward pass of this model; ``base_pass``:
    the float base a tested causal LM loads for its base row (``base_pass_bytes``)."""
    one, two = probed or probe(model, image_shape, precision, device)
    trainable_bytes = sum(p.numel() * p.element_size() for p in trainable)
    parts = {
        "weights_bytes": weights_bytes(model),
        "gradients_bytes": trainable_bytes,
        "optimizer_state_bytes": 2 * sum(p.numel() * 4 for p in trainable),  # AdamW: exp_avg, exp_avg_sq in fp32
        "activations_per_image_bytes": max(0, two - one),
        "activations_fixed_bytes": one - max(0, two - one),
        "base_pass_bytes": base_pass,
    }
    return at_batch(parts, batch_size)


def base_pass_bytes(model_cfg: ModelConfig, num_classes: int, tested: bool) -> int:
    """The bytes of the base a tested causal-LM run builds after training to measure it alone on the test split
    (``outcome.base_perplexity``: model.path's float weights, unquantized, no adapter), beside the adapted model;
    0 for other runs. Counted on the meta device, at the dtype its config.json names (transformers 5 builds both
    ways at it: ``from_config`` reads ``config.dtype``, ``from_pretrained``'s default ``dtype="auto"`` too)."""
    if not tested or model_cfg.task != "causal-lm":
        return 0
    with shapes_only():
        base = build_backbone(model_cfg, num_classes, weights=False)
    # parameters() and buffers() give a tied weight once (metrics.weights_bytes tells them apart by address,
    # which every meta tensor shares)
    return sum(t.numel() * t.element_size() for t in [*base.parameters(), *base.buffers()])


def available_bytes(device: torch.device) -> int:
    """Memory a run may still take: free GPU memory on CUDA, the host's available RAM otherwise; on MPS
    (memory shared with the host) also no more than Metal's recommended working set less what it holds."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    host = psutil.virtual_memory().available
    if device.type == "mps":
        return min(host, max(0, torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()))
    return host


def adapted(
    model_cfg: ModelConfig,
    method: MethodConfig,
    quant: QuantConfig,
    num_classes: int,
    grid: tuple[int, int] | None = None,
):
    """The tuner of ``method`` on a randomly initialised ``model_cfg`` model, on the CPU; with
    ``grid`` (patch size, patches per side), the same model at that grid."""
    with torch.random.fork_rng():
        model = (
            build_backbone(model_cfg, num_classes, weights=False)
            if grid is None
            else backbone_at_grid(model_cfg, num_classes, *grid)
        )
        return apply_tuner(model, method, TunerContext(total_steps=10**6, device=torch.device("cpu"), quant=quant))


def backbone_at_grid(model_cfg, num_classes: int, patch: int, side: int) -> nn.Module:
    """A randomly initialised ``model_cfg`` model of ``side`` x ``side`` patches of ``patch`` pixels."""
    if model_cfg.source == "hf":
        return build_hf(model_cfg, num_classes, weights=False, image_size=side * patch)
    return build_backbone(
        dataclasses.replace(model_cfg, img_size=side * patch, patch_size=patch), num_classes, weights=False
    )


def patch_grid(model_cfg: ModelConfig, num_classes: int) -> tuple[int, int] | None:
    """(patch size, patches per side) of a timm or HF model with square patches; None for other models."""
    with shapes_only():
        model = build_backbone(model_cfg, num_classes, weights=False)
    if isinstance(model, HFLogits):
        config = model.model.config
        sizes, image = getattr(config, "patch_size", None), getattr(config, "image_size", None)
        return (sizes, image // sizes) if isinstance(sizes, int) and isinstance(image, int) else None
    embed = getattr(model, "patch_embed", None)
    sizes = getattr(embed, "patch_size", None)
    grids = getattr(embed, "grid_size", None)
    if not sizes or not grids or len(set(sizes)) != 1 or len(set(grids)) != 1:
        return None
    return sizes[0], grids[0]


def probed_for_config(
    model_cfg: ModelConfig, method: MethodConfig, quant: QuantConfig, num_classes: int, precision: str
) -> tuple[int, int] | None:
    """``probe``'s bytes of the configured model without running it at full size (None: a model of at
    most ``PROBED_PATCHES`` patches and ``PROBED_PROMPTS`` prompt tokens, or not a ViT; probe it
    itself). What a transformer saves for backward grows with its tokens as a polynomial of degree 2
    at most (the attention weights), in its patches and in its prompts (VPT) alike, so the model
    probed at three small patch grids, each at three small prompt counts, gives it exactly
    (Lagrange, in fractions)."""
    grid = patch_grid(model_cfg, num_classes)
    prompts = getattr(method, "prompt_tokens", 0)
    if grid is None or (grid[1] ** 2 <= PROBED_PATCHES and prompts <= PROBED_PROMPTS):
        return None
    (patch, side), in_chans = grid, input_spec_for(model_cfg).in_chans
    by_grid = []
    for small in SMALL_GRIDS if side**2 > PROBED_PATCHES else (side,):
        by_prompts = [
            (
                n,
                probe(
                    adapted(model_cfg, with_prompts(method, n), quant, num_classes, (patch, small)).model,
                    (in_chans, small * patch, small * patch),
                    precision,
                    torch.device("cpu"),
                ),
            )
            for n in (SMALL_PROMPTS if prompts > PROBED_PROMPTS else (prompts,))
        ]
        by_grid.append((small**2, extrapolated(by_prompts, prompts)))
    return tuple(round(y) for y in extrapolated(by_grid, side**2))


def with_prompts(method: MethodConfig, n: int) -> MethodConfig:
    """``method`` with ``n`` prompt tokens (VPT); another method's config as it is."""
    if not hasattr(method, "prompt_tokens"):
        return method
    return dataclasses.replace(method, prompt_tokens=n)


def extrapolated(points: list[tuple[int, tuple]], x: int) -> tuple[Fraction, Fraction]:
    """The bytes at 1 image and at 2 of ``points`` (size, (bytes at 1, bytes at 2)) at size ``x``."""
    return tuple(lagrange([(xi, y[n]) for xi, y in points], x) for n in (0, 1))


def lagrange(points: list[tuple[int, int | Fraction]], x: int) -> Fraction:
    """The polynomial through ``points`` at ``x`` (one point: a constant)."""
    total = Fraction(0)
    for i, (xi, yi) in enumerate(points):
        term = Fraction(yi)
        for j, (xj, _) in enumerate(points):
            if j != i:
                term *= Fraction(x - xj, xi - xj)
        total += term
    return total


def estimate_for_config(cfg) -> dict:
    """The estimate for a run config, on this machine's CPU (``peftlab validate``): the model is
    built with random weights (same sizes), adapted, quantized as configured, and probed (a model of
    many patches at three small grids: ``probed_for_config``)."""
    cpu = torch.device("cpu")
    num_classes = cfg.model.num_classes or (len(cfg.data.classes) if cfg.data.classes else 10)
    spec = input_spec_for(cfg.model, cfg.data.max_length)
    precision = resolve_precision(cfg.train.precision, cpu)
    tuner = adapted(cfg.model, cfg.method, cfg.quant, num_classes)
    return estimate(
        tuner.model,
        list(tuner.trainable_parameters().values()),
        spec.shape,
        cfg.train.batch_size,
        precision,
        cpu,
        probed_for_config(cfg.model, cfg.method, cfg.quant, num_classes, precision),
        base_pass_bytes(cfg.model, num_classes, cfg.train.test),
    )


def check_config_fits(cfg) -> dict:
    """``check_fits`` of ``estimate_for_config`` on this machine, as train checks its run; the estimate."""
    est = estimate_for_config(cfg)
    check_fits(
        est,
        available_bytes(torch.device("cpu")),
        cfg.train.batch_size,
        cfg.train.grad_accum,
        cfg.method.quantizable and cfg.quant.mode == "none",
    )
    return est
