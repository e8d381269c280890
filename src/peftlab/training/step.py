"""One optimizer step, and the batches it is made of.

``training_step``: forward, loss + the tuner's regularization, backward, the tuner's hooks,
clip, step. ``NonFinite`` keeps a diverged step on the device until the host waits anyway.
``epoch_batches``, ``micro_pieces`` and ``piece_weights`` say which images each step sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from peftlab.training import distributed
from peftlab.training.runtime import autocast
from peftlab.utils.errors import ConfigError


class Diverged(Exception):
    """A non-finite loss or gradient; ``step`` is the step it happened at, where known."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


@dataclass
class Optimization:
    """What steps the trainable weights: AdamW, its lr schedule, the fp16 loss scaler, the weights
    (clipped together to ``clip_grad``) and the arithmetic the forward pass runs in."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    trainable: list[torch.Tensor]
    precision: str
    clip_grad: float | None
    device: torch.device
    label_smoothing: float = 0.0  # of the training loss only


def warmup_cosine(total_steps: int, warmup_ratio: float):
    """Multiplier of the base lr: linear warm-up, then cosine decay to zero."""
    warmup = int(round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def compute_loss(model, images, labels, precision: str, device, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of one micro-batch, the forward pass under the configured autocast."""
    with autocast(precision, device):
        logits = model(images)
    if logits.dim() == 3:
        # a causal LM's (B, vocabulary, L - 1): a transposed view of (B, L - 1, vocabulary) logits. Read with the
        # vocabulary last, as evaluate does: softmax over the class dim of the view costs a strided transposing
        # copy each way, which made a GPT-2 step 5-10% slower than transformers' own loss (peftlab bench --only text)
        logits, labels = logits.transpose(1, 2).flatten(0, 1), labels.flatten()
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


class NonFinite:
    """The first step whose loss or gradient norm was not finite, tracked on the device.

    ``record`` adds a few element-wise kernels per step and never waits for the device;
    ``check`` (at log, eval and checkpoint points, where the host waits anyway) raises
    ``Diverged`` naming that first step exactly. In fp16 a non-finite gradient norm is the
    scaler skipping a step, not a divergence: only the loss counts there.
    """

    def __init__(self, device: torch.device, precision: str, ranks: distributed.Group = distributed.SINGLE):
        self.ranks = ranks  # under torchrun the first bad step of any rank stops every rank
        self.first = torch.full((), -1, dtype=torch.long, device=device)  # -1: every step finite so far
        self.values = torch.zeros(2, device=device)  # loss and gradient norm of that step
        self.check_norm = precision != "fp16"

    def record(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        values = torch.stack([loss.detach().float(), grad_norm.detach().float()])
        bad = ~values.isfinite() if self.check_norm else ~values[:1].isfinite()
        new = bad.any() & (self.first < 0)
        self.first = torch.where(new, step, self.first)
        self.values = torch.where(new, values, self.values)

    def check(self) -> None:
        self.first = distributed.first_over_ranks(self.first, self.ranks)
        step, (loss, grad_norm) = int(self.first), self.values.tolist()  # the host waits for the device here
        if step >= 0:
            what = f"loss ({loss})" if not math.isfinite(loss) else f"gradient norm ({grad_norm})"
            raise Diverged(f"non-finite {what} at step {step}", step)


def unscaled_grad_norm(opt: Optimization) -> tuple[torch.Tensor, bool]:
    """Unscale the gradients; their total norm (on the device) and whether the fp16 scaler will skip
    this step (the one case where the host reads the norm: the scaler waits for the device anyway)."""
    opt.scaler.unscale_(opt.optimizer)
    grads = [p.grad for p in opt.trainable if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=opt.device)
    skip = opt.precision == "fp16" and not bool(torch.isfinite(norm))
    return norm, skip


def training_step(
    model,
    tuner,
    micro_batches,
    opt: Optimization,
    *,
    step: int,
    n_micro: int,
    monitor=None,
    nonfinite: NonFinite | None = None,
    weights: list[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
    """One optimizer step over ``n_micro`` micro-batches of (images, labels).

    Returns (mean loss, gradient norm before clipping, the monitors' record or None); loss and
    norm stay on the device, and ``nonfinite`` records them. The tuner's hooks are called here,
    in order: ``regularization`` on every micro-batch, ``after_backward`` on the raw gradients,
    ``after_step`` before the gradients are cleared; the monitors observe the raw gradients at
    their log and eval points, after ``nonfinite`` is checked. ``weights`` (under torchrun) scale
    each micro-batch's loss so that the ranks' average is the whole micro-batch's mean.
    """
    loss_sum = torch.zeros((), device=opt.device)
    for index, (images, labels) in enumerate(micro_batches):
        loss = compute_loss(model, images, labels, opt.precision, opt.device, opt.label_smoothing)
        if weights is not None:
            loss = loss * weights[index]
        loss = loss + tuner.regularization()
        opt.scaler.scale(loss / n_micro).backward()
        loss_sum = loss_sum + loss.detach()
    loss = loss_sum / n_micro
    if step == 0:
        check_reached(tuner)
    grad_norm, skip = unscaled_grad_norm(opt)
    if nonfinite is not None:
        nonfinite.record(step, loss, grad_norm)
    tuner.after_backward(step, skip)
    observed = None
    if monitor is not None and monitor.due(step + 1):
        if nonfinite is not None:
            nonfinite.check()  # the monitors never read non-finite gradients
        observed = monitor.observe(step + 1, float(grad_norm))
    if opt.clip_grad:
        torch.nn.utils.clip_grads_with_norm_(opt.trainable, opt.clip_grad, grad_norm)
    opt.scaler.step(opt.optimizer)  # optimizer.step(), skipped by the fp16 scaler on an overflow
    opt.scaler.update()
    tuner.after_step(step)
    opt.scheduler.step()
    opt.optimizer.zero_grad(set_to_none=True)
    return loss, grad_norm, observed


def check_reached(tuner) -> None:
    """A ConfigError when the first backward left a trainable parameter without a gradient: the
    model's forward never used it (an adapter on a module the model does not call), so the run
    would report it trained and change nothing. Full fine-tuning is exempt: a base parameter its
    forward does not use (HF DINOv2's mask token) simply does not train."""
    if tuner.name == "full":
        return
    unreached = [name for name, param in tuner.trainable_parameters().items() if param.grad is None]
    if unreached:
        raise ConfigError(
            f"method.name={tuner.name!r}: the model's forward never uses {len(unreached)} of its trainable "
            f"tensors (first: {unreached[0]}); the module it adapts is not called by this model"
        )


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, static: bool = False) -> list[torch.Tensor]:
    """The shuffled index batches of one epoch, a pure function of (seed, epoch); ``static`` (CUDA graphs:
    train.compile_mode reduce-overhead): every batch ``batch_size`` long, the last short one dropped."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator)
    return list(order.split(batch_size))[: batches_per_epoch(n, batch_size, static)]


def batches_per_epoch(n: int, batch_size: int, static: bool = False) -> int:
    """How many batches an epoch of ``n`` images has (``epoch_batches``); ``static``: full ones only (at
    least one: a split smaller than a batch is one batch, the same every epoch)."""
    return max(n // batch_size, 1) if static else math.ceil(n / batch_size)


def micro_pieces(batches: list[torch.Tensor], split: int, ranks: distributed.Group) -> list[list[torch.Tensor]]:
    """The index pieces each configured micro-batch is computed in: this rank's shard (torchrun),
    cut in ``split`` pieces (train.auto_batch); empty pieces dropped."""
    pieces = []
    for indices in batches:
        part = distributed.shard(indices, ranks)
        pieces.append([piece for piece in part.tensor_split(min(split, max(1, len(part)))) if len(piece)])
    return pieces


def piece_weights(group: list[torch.Tensor], pieces: list[list[torch.Tensor]], ranks: distributed.Group):
    """Loss weights of one step's pieces such that the gradient accumulated over them (and
    averaged over ranks) is that of the mean of the micro-batches' mean losses; None when every
    weight is 1 (one process, micro-batches computed whole)."""
    count = sum(len(p) for p in pieces)
    if count == len(group) and not ranks.active:
        return None
    return [
        ranks.world_size * count * len(piece) / (len(group) * len(indices))
        for indices, parts in zip(group, pieces)
        for piece in parts
    ]
