"""The training recipe every method uses, read top to bottom.

``run`` is the recipe in one screen: ``start`` (threads, device, precision, the logs, the seed),
``load_data``, ``build`` (the backbone and the tuner, which quantizes the base when ``quant.mode``
asks; refused before its first step when its training cannot fit), ``optimization``, ``restore``
(from the checkpoint, when there is one), ``fit`` (the loop: ``training_step``, then log, evaluate,
checkpoint) and ``finish`` (``peftlab.training.outcome``: test, merge check, the adapter files, the
result). What the stages hand each other is in ``peftlab.training.recipe_state``. The host waits for
the device only at log, eval and checkpoint points (``NonFinite`` keeps a diverged step on the
device until then). ``peftlab.training.run.train`` owns the run directory and calls ``run``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from peftlab.config.schema import RunConfig
from peftlab.config.sections import TrainConfig
from peftlab.data.inputs import TextSpec, build_splits
from peftlab.data.loading import BatchLoader
from peftlab.data.text.tokens import tokens_in
from peftlab.models.backbones import model_inputs
from peftlab.models.products import pinned_run_products, products_record
from peftlab.quant import allocator
from peftlab.training import checkpoint, distributed, metrics, preflight, tracking
from peftlab.training.checkpoint import Position
from peftlab.training.evaluate import evaluate
from peftlab.training.monitors.run import Monitors
from peftlab.training.outcome import finish
from peftlab.training.recipe_state import Built, Data, RunState, Setting
from peftlab.training.run_result import RunResult
from peftlab.training.runtime import (
    autocast,
    compile_model,
    fused_adamw,
    resolve_precision,
    run_threads,
    select_device,
    set_tf32,
)
from peftlab.training.step import (
    NonFinite,
    Optimization,
    batches_per_epoch,
    epoch_batches,
    micro_pieces,
    piece_weights,
    training_step,
    warmup_cosine,
)
from peftlab.tuners.base import TunerContext
from peftlab.tuners.build import build_tuned
from peftlab.utils import provenance
from peftlab.utils.cpu import arithmetic_record
from peftlab.utils.errors import ConfigError, stop_at_epoch
from peftlab.utils.files import kill_point
from peftlab.utils.progress import TextProgress
from peftlab.utils.seed import seed_everything


def run(
    cfg: RunConfig,
    run_dir: Path,
    state: RunState,
    *,
    progress: bool = True,
    row: int = 0,
    ranks: distributed.Group = distributed.SINGLE,
) -> RunResult:
    """One attempt at training ``cfg`` in ``run_dir``; its record. A pinned run computes its products through
    oneDNN, or MKL's COMPATIBLE branch where its environment asks for the former pin
    (``models.products.pinned_run_products``)."""
    with pinned_run_products(cfg.train.reproducible):
        setting = start(cfg, run_dir, state, ranks, progress, row)
        data = load_data(setting)
        built = build(setting, data, state)
        opt = optimization(setting, built.tuner, data.total_steps)
        position, monitor = restore(setting, built, opt, data, state)
        last_val = fit(setting, data, built, opt, position, monitor, state)
        return finish(setting, data, built, opt, position, monitor, last_val, state)


def start(
    cfg: RunConfig, run_dir: Path, state: RunState, ranks: distributed.Group, progress: bool, row: int
) -> Setting:
    """Threads, device, precision and TF32; the logs opened; the seed set."""
    tc = cfg.train
    torch.set_num_threads(run_threads(tc.threads, tc.reproducible))  # recorded in provenance.threads
    allocator.configure(tc.malloc)  # before the model is built; recorded in provenance.malloc
    device = distributed.start(ranks, select_device(tc.device))  # under torchrun: joins the process group
    tc = dataclasses.replace(tc, precision=resolve_precision(tc.precision, device))  # 'auto' made concrete
    autocast(tc.precision, device)  # validates precision for the device
    set_tf32(tc.tf32, device)
    log = state.log = tracking.open_log(cfg, run_dir)
    seed_everything(cfg.seed)
    return Setting(cfg, tc, run_dir, device, ranks, log, progress, row)


def load_data(s: Setting) -> Data:
    """The splits as the backbone expects them, their loaders, and the number of steps."""
    cfg, tc = s.cfg, s.tc
    spec = model_inputs(cfg.model, cfg.data.max_length)  # image size and normalisation, or a text model's tokenizer
    # prompt and prefix tuning's virtual tokens take positions before the text
    splits = build_splits(cfg.data, spec, s.device, getattr(cfg.method, "num_virtual_tokens", 0))
    train_loader = BatchLoader(splits.train, s.device, cfg.data.num_workers, persistent=True)
    val_loader = BatchLoader(splits.val, s.device, cfg.data.num_workers, persistent=True)
    num_classes = cfg.model.num_classes or splits.info.num_classes
    if num_classes < splits.info.num_classes:
        raise ConfigError(f"model.num_classes={num_classes} is invalid: the data has {splits.info.num_classes} classes")
    per_epoch = batches_per_epoch(len(splits.train), tc.batch_size, static_shapes(tc))
    steps_per_epoch = math.ceil(per_epoch / tc.grad_accum)
    total_steps = min(steps_per_epoch * tc.epochs, tc.max_steps or math.inf)
    return Data(splits, train_loader, val_loader, spec, num_classes, total_steps, per_epoch)


def static_shapes(tc: TrainConfig) -> bool:
    """Whether every training batch has one shape: CUDA graphs replay a step of one shape (train.compile_mode)."""
    return tc.compile and tc.compile_mode == "reduce-overhead"


def build(s: Setting, data: Data, state: RunState) -> Built:
    """The backbone with the tuner applied, on the device; refused here, before any step, when its
    training memory cannot fit (peftlab.training.preflight); compiled when train.compile asks."""
    tc, cfg = s.tc, s.cfg
    if cfg.quant.mode != "none":  # imported before the baseline: the peak counts what the run builds, not imports
        importlib.import_module("bitsandbytes")
    rss = metrics.PeakRSS()  # what the model and its training add above imports and data
    tuner, base = build_tuned(
        cfg.model,
        cfg.method,
        data.num_classes,
        TunerContext(total_steps=data.total_steps, device=s.device, quant=cfg.quant),
        seed=cfg.seed,
        grad_checkpointing=tc.grad_checkpointing,
        after_check=rss.restart,  # the size check may import PEFT: an import, not the model
    )
    model = tuner.model.to(s.device).train()
    rss_build = rss.peak_above_baseline()
    shape = data.spec.shape
    micro_batch = math.ceil(tc.batch_size / s.ranks.world_size / state.split)  # computed at once
    # a model of many patches is probed small (a forward pass at full size took minutes before a refusal)
    probed = (
        preflight.probed_for_config(cfg.model, cfg.method, cfg.quant, data.num_classes, tc.precision)
        if s.device.type == "cpu" and not tc.grad_checkpointing
        else None
    )
    estimate = preflight.estimate(
        model,
        list(tuner.trainable_parameters().values()),
        shape,
        micro_batch,
        tc.precision,
        s.device,
        probed,
        preflight.base_pass_bytes(cfg.model, data.num_classes, tc.test),  # the base row's pass, after training
    )
    preflight.check_fits(
        estimate,
        preflight.available_bytes(s.device),
        micro_batch,
        tc.grad_accum,
        cfg.method.quantizable and cfg.quant.mode == "none",
    )
    compiled = None
    if tc.compile:
        compiled = compile_model(
            model,
            (min(tc.batch_size, len(data.splits.train)), *shape),
            (min(tc.eval_batch_size, len(data.splits.val) or len(data.splits.test)), *shape),  # no val: data.trainval
            s.device,
            tc.precision,
            tc.compile_mode,
        )
    rss.reset_peak()  # from here on: the training peak (model, activations, optimizer state)
    counts = tuner.parameter_counts()
    state.params = {**counts, "trainable_ratio": counts["trainable"] / counts["total"]}
    state.provenance = provenance_record(s, data, compiled, base)
    return Built(model, tuner, counts, rss, rss_build, estimate)


def provenance_record(s: Setting, data: Data, compiled: dict | None, base: dict) -> dict:
    from peftlab.config.methods import plugin_record

    git_sha, git_dirty = provenance.git_state()
    return {
        "git_sha": git_sha,
        "git_dirty": git_dirty,
        "versions": provenance.package_versions(),
        "hardware": provenance.hardware(s.device),
        "arithmetic": arithmetic_record(
            s.tc.reproducible,
            s.cfg.quant.cpu_kernel if s.cfg.quant.mode in ("nf4", "fp4") else None,
            provenance.mkl_branch(),
            torch.backends.cpu.get_cpu_capability(),
            products_record(),
        ),
        "malloc": allocator.record(s.tc.malloc),
        "threads": torch.get_num_threads(),
        "dtype": s.tc.precision,
        "tf32": s.tc.tf32 and s.device.type == "cuda",
        "fused_adamw": fused_adamw(s.tc.fused_adamw, s.device, s.tc.reproducible),
        "compile": compiled,
        "world_size": s.ranks.world_size,
        "seed": s.cfg.seed,
        "data_sha256": data.splits.info.sha256,
        "data": asdict(data.splits.info),
        **base,  # base_sha256 of the weights file the base was loaded from; base_hub_repo, base_hub_revision
        "plugin": plugin_record(s.cfg.method),
    }


def optimization(s: Setting, tuner, total_steps: int) -> Optimization:
    """AdamW over the tuner's parameter groups (the head's lr and weight decay apart), warm-up and
    cosine decay, and the loss scaler (fp16 only)."""
    tc = s.tc
    head_lr = tc.head_lr if tc.head_lr is not None else tc.lr
    head_wd = tc.head_weight_decay if tc.head_weight_decay is not None else tc.weight_decay
    optimizer = torch.optim.AdamW(
        tuner.param_groups(tc.lr, tc.weight_decay, head_lr, head_wd),
        fused=fused_adamw(tc.fused_adamw, s.device, tc.reproducible) or None,
    )
    tuner.attach_optimizer(optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, tc.warmup_ratio))
    scaler = torch.amp.GradScaler(s.device.type, enabled=tc.precision == "fp16")
    trainable = list(tuner.trainable_parameters().values())
    return Optimization(
        optimizer, scheduler, scaler, trainable, tc.precision, tc.clip_grad, s.device, tc.label_smoothing
    )


def restore(s: Setting, built: Built, opt: Optimization, data: Data, state: RunState) -> tuple[Position, Monitors]:
    """The run's position: its checkpoint's (a torchrun replica reads rank 0's), or the start. The log
    files keep the records the checkpoint covers (none without one); the sinks skip steps they hold."""
    tc = s.tc
    position, lines = checkpoint.restore(
        state.resume_dir or s.run_dir / "checkpoint",
        built.tuner,
        opt,
        s.device,
        total_steps=data.total_steps,
        epochs=tc.epochs,
        batches_per_epoch=data.batches_per_epoch,
        grad_accum=tc.grad_accum,
        batch_size=tc.batch_size,
    )
    s.log.truncate(position.step, lines)
    if state.earlier_wall_seconds is None:  # this process's first restore: the time of the processes before it
        state.earlier_wall_seconds = position.wall_seconds
    monitor = Monitors(
        built.model,
        built.tuner.trainable_parameters(),
        log_every=tc.log_every,
        eval_every=tc.eval_every,
        total_steps=data.total_steps,
        clip_grad=None,
        history=s.log.records(),
    )  # observes unclipped gradients
    return position, monitor


def fit(
    s: Setting, data: Data, built: Built, opt: Optimization, pos: Position, monitor: Monitors, state: RunState
) -> dict | None:
    """The loop: epochs of steps, logged, evaluated and checkpointed at their points. Returns the
    val metrics of the final weights (None when no epoch ended in this process)."""
    tc, tuner = s.tc, built.tuner
    meter = Meter(s, data.total_steps, pos.step, text=isinstance(data.spec, TextSpec))
    nonfinite = NonFinite(s.device, tc.precision, s.ranks)  # the host reads it only at log, eval and checkpoint points
    # torchrun: DistributedDataParallel averages the gradients of the ranks' shards (peftlab.training.distributed)
    stepped = distributed.data_parallel(built.model, s.ranks, s.device)
    last_val = None
    graphs = static_shapes(tc) and s.device.type == "cuda"  # CUDA graphs: reduce-overhead on a GPU
    while epochs_left(pos, tc, data.total_steps):
        stop_at_epoch(pos.epoch)  # a rung's run stops here, at its epoch's end, checkpoint written
        batches = epoch_batches(len(data.splits.train), tc.batch_size, s.cfg.seed, pos.epoch, static_shapes(tc))
        pieces = micro_pieces(batches, state.split, s.ranks)  # shards (torchrun), halves (auto_batch)
        loaded = data.train_loader([p for parts in pieces[pos.next_batch :] for p in parts])  # decoded ahead, in order
        meter.restart()
        while pos.next_batch < len(batches) and pos.step < data.total_steps:
            group = batches[pos.next_batch : pos.next_batch + tc.grad_accum]  # this step's micro-batches
            parts = pieces[pos.next_batch : pos.next_batch + len(group)]
            n_pieces = sum(len(p) for p in parts)
            if graphs:  # a new CUDA graph generation: the previous step's outputs may be overwritten
                torch.compiler.cudagraph_mark_step_begin()
            loss, grad_norm, observed = training_step(
                stepped,
                tuner,
                (next(loaded) for _ in range(n_pieces)),
                opt,
                step=pos.step,
                n_micro=n_pieces,
                monitor=monitor,
                nonfinite=nonfinite,
                weights=piece_weights(group, parts, s.ranks),
            )
            if observed:  # gradient flow and adapter statistics, taken inside the step
                s.log(observed)
            pos.step, pos.next_batch, state.step = pos.step + 1, pos.next_batch + len(group), pos.step + 1
            examples, tokens = sum(len(b) for b in group), tokens_in(data.splits.train, group)  # tokens: text's
            pos.images_seen, pos.tokens_seen = pos.images_seen + examples, pos.tokens_seen + tokens
            meter.window_examples, meter.window_tokens = meter.window_examples + examples, meter.window_tokens + tokens
            log_and_evaluate(
                s, data, built, opt, pos, meter, nonfinite, loss, grad_norm, epoch_goes_on=pos.next_batch < len(batches)
            )
            kill_point("step", pos.step)
            if pos.step % tc.ckpt_every == 0:
                save(s, built, opt, pos, state)
                kill_point("checkpoint", pos.step)
                meter.last = time.perf_counter()
        nonfinite.check()  # before the epoch's evaluation and checkpoint
        last_val = end_epoch(s, data, built, opt, pos, state)
    meter.bar.close()
    return last_val


def epochs_left(pos: Position, tc: TrainConfig, total_steps: int) -> bool:
    """An epoch to train or to finish: a checkpoint taken at the last step (next_batch > 0)
    still owes its epoch's evaluation and record."""
    patience_spent = tc.early_stop_patience and pos.bad_epochs >= tc.early_stop_patience
    return pos.epoch < tc.epochs and (pos.step < total_steps or pos.next_batch > 0) and not patience_spent


class Meter:
    """The loop's progress bar and clocks: training time (evaluations left out) and the examples per
    second between log points (``text``: examples and tokens, padding left out; else images)."""

    def __init__(self, s: Setting, total_steps: int, step: int, text: bool = False):
        self.text = text
        self.bar = tqdm(
            total=total_steps,
            initial=step,
            desc=f"train {s.cfg.name}",
            position=s.row,
            leave=s.row == 0,
            disable=not s.progress or None,
        )
        self.lines = TextProgress(self.bar, s.progress, f"train {s.cfg.name}", "step", every=max(1, total_steps // 10))
        self.loss = None  # the last logged loss
        self.restart()

    def restart(self) -> None:
        """At an epoch's start and after an evaluation: the clocks start again."""
        self.last = self.window_start = time.perf_counter()
        self.window_examples = self.window_tokens = 0

    def rates(self, now: float) -> dict:
        """The step record's throughput since the last log point: a text run's examples and tokens per
        second, an image run's images."""
        seconds = now - self.window_start
        if self.text:
            return {
                "examples_per_second": self.window_examples / seconds,
                "tokens_per_second": self.window_tokens / seconds,
            }
        return {"images_per_second": self.window_examples / seconds}


def log_and_evaluate(
    s: Setting,
    data: Data,
    built: Built,
    opt: Optimization,
    pos: Position,
    meter: Meter,
    nonfinite: NonFinite,
    loss: torch.Tensor,
    grad_norm: torch.Tensor,
    epoch_goes_on: bool,
) -> None:
    """After a step: its time, and at its points the step's record and an evaluation on val."""
    tc = s.tc
    log_point = pos.step % tc.log_every == 0 or pos.step == data.total_steps
    eval_point = bool(tc.eval_every) and pos.step % tc.eval_every == 0 and pos.step < data.total_steps and epoch_goes_on
    if log_point or eval_point or pos.step % tc.ckpt_every == 0:
        nonfinite.check()  # waits for the device: the times below are the device's too
    now = time.perf_counter()
    pos.train_seconds += now - meter.last
    meter.last = now
    meter.bar.update(1)
    meter.lines.update(pos.step, f"loss {meter.loss:.3f}" if meter.loss is not None else "")
    if log_point:
        meter.loss, norm = distributed.mean_over_ranks(
            torch.stack([loss.float(), grad_norm.float()]), s.ranks
        ).tolist()  # the norm is the same on all
        s.log(
            {
                "kind": "step",
                "step": pos.step,
                "epoch": pos.epoch,
                "loss": meter.loss,
                "lr": opt.scheduler.get_last_lr()[0],
                "grad_norm": norm,
                **meter.rates(now),
            }
        )
        meter.bar.set_postfix(loss=f"{meter.loss:.3f}")
        meter.window_start, meter.window_examples, meter.window_tokens = now, 0, 0
    if eval_point:
        val = evaluate(
            built.model, data.val_loader, tc.eval_batch_size, s.device, tc.precision, "val", progress=s.progress
        )
        pos.val_seconds += val["seconds"]
        s.log(val_record("eval", pos, val))
        meter.restart()  # evaluation is not training time


def end_epoch(s: Setting, data: Data, built: Built, opt: Optimization, pos: Position, state: RunState) -> dict:
    """The epoch's evaluation on val (early stopping counts it), its record and its checkpoint."""
    val = evaluate(
        built.model, data.val_loader, s.tc.eval_batch_size, s.device, s.tc.precision, "val", progress=s.progress
    )
    pos.val_seconds += val["seconds"]
    if val["top1"] is not None:  # no validation split: nothing to improve on (early stopping needs one)
        improved = val["top1"] > pos.best_val
        pos.best_val, pos.bad_epochs = max(pos.best_val, val["top1"]), 0 if improved else pos.bad_epochs + 1
    s.log(val_record("epoch", pos, val))
    kill_point("epoch-record", pos.step)
    pos.epoch, pos.next_batch = pos.epoch + 1, 0
    save(s, built, opt, pos, state)
    kill_point("epoch-checkpoint", pos.step)
    return val


def val_record(kind: str, pos: Position, val: dict) -> dict:
    """metrics.jsonl's record of an evaluation on val: loss, top-1, top-5, and the text scores the model
    produces (F1 of a two-class classifier, Matthews of a classifier, a causal LM's perplexity), which a
    halving search's pruner compares (``tune.metric``)."""
    record = {"kind": kind, "step": pos.step, "epoch": pos.epoch}
    record.update({f"val_{name}": val[name] for name in ("loss", "top1", "top5")})
    record.update({f"val_{name}": val[name] for name in ("f1", "matthews", "perplexity") if val[name] is not None})
    return record


def save(s: Setting, built: Built, opt: Optimization, pos: Position, state: RunState) -> None:
    """The checkpoint at ``pos``, with the run's whole time so far: its earlier processes' and this one's."""
    pos.wall_seconds = (state.earlier_wall_seconds or 0.0) + time.perf_counter() - state.started
    if s.ranks.main:  # rank 0's checkpoint is every rank's
        checkpoint.save(s.run_dir / "checkpoint", pos, built.tuner, opt, s.log.lines)
