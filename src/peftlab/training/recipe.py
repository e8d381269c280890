"""The training recipe every method uses, read top to bottom.

``run`` is the recipe in one screen: ``start`` (threads, device, precision, the logs, the seed),
``load_data``, ``build`` (the backbone and the tuner, which quantizes the base when ``quant.mode``
asks; refused before its first step when its training cannot fit), ``optimization``, ``restore``
(from the checkpoint, when there is one), ``fit`` (the loop: ``training_step``, then log, evaluate,
checkpoint) and ``finish`` (test, merge check, the adapter files, the result). The host waits for
the device only at log, eval and checkpoint points (``NonFinite`` keeps a diverged step on the
device until then). ``peftlab.training.run.train`` owns the run directory and calls ``run``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from peftlab import metrics, provenance, tracking
from peftlab.backbones import InputSpec, base_provenance, enable_grad_checkpointing, input_spec_for
from peftlab.config import RunConfig, to_dict
from peftlab.config_sections import TrainConfig
from peftlab.cpu import arithmetic_record
from peftlab.data import DataBundle, build_data
from peftlab.data.loading import BatchLoader
from peftlab.errors import ConfigError
from peftlab.export import write_peft_adapter
from peftlab.files import kill_point, write_atomic
from peftlab.monitors.run import Monitors, summarize
from peftlab.params import check_model_size
from peftlab.progress import TextProgress
from peftlab.protocol import protocol_card
from peftlab.quant_load import build_base
from peftlab.run_result import Memory, Metrics, RunResult, Timing
from peftlab.training import checkpoint, distributed, preflight
from peftlab.training.checkpoint import Position
from peftlab.training.evaluate import check_merge, evaluate, merge_warnings
from peftlab.training.runtime import (
    autocast,
    compile_model,
    default_threads,
    fused_adamw,
    resolve_precision,
    seed_everything,
    select_device,
    set_tf32,
)
from peftlab.training.step import (
    Diverged,
    NonFinite,
    Optimization,
    epoch_batches,
    micro_pieces,
    piece_weights,
    training_step,
    warmup_cosine,
)
from peftlab.tuners.base import TunerContext, apply_tuner, is_head_param


@dataclass
class RunState:
    """What ``train`` keeps across the recipe's attempts (``train.auto_batch`` retries), and what a
    failed run's result reports."""

    started: float = field(default_factory=time.perf_counter)
    resume_dir: Path | None = None  # a torchrun replica resumes from rank 0's checkpoint
    split: int = 1  # the pieces each micro-batch is computed in (train.auto_batch)
    auto_batch: dict | None = None  # train.auto_batch: the halvings after out-of-memory errors
    log: tracking.RunLog | None = None
    step: int | None = None  # the last step trained in this process
    params: dict | None = None
    provenance: dict | None = None


@dataclass
class Setting:
    """Where and how the run computes (``start``)."""

    cfg: RunConfig
    tc: TrainConfig  # cfg.train, its precision made concrete ('auto' resolved)
    run_dir: Path
    device: torch.device
    ranks: distributed.Group
    log: tracking.RunLog  # metrics.jsonl, monitors.jsonl and cfg.track's sinks
    progress: bool
    row: int  # the progress bar's line (a study draws several)


@dataclass
class Data:
    """The splits, their loaders and the steps they make (``load_data``)."""

    splits: DataBundle  # train, val, test and their info
    train_loader: BatchLoader
    val_loader: BatchLoader
    spec: InputSpec  # the image size, channels and normalization the backbone expects
    num_classes: int
    total_steps: int
    batches_per_epoch: int


@dataclass
class Built:
    """The model and its tuner (``build``), with what the result reports of their making."""

    model: torch.nn.Module
    tuner: object
    counts: dict  # parameter counts before training
    rss: metrics.PeakRSS
    rss_build: int  # peak RSS of building the model, above the baseline
    memory_estimate: dict  # peftlab.training.preflight, before the first step


def run(
    cfg: RunConfig,
    run_dir: Path,
    state: RunState,
    *,
    progress: bool = True,
    row: int = 0,
    ranks: distributed.Group = distributed.SINGLE,
) -> RunResult:
    """One attempt at training ``cfg`` in ``run_dir``; its record."""
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
    torch.set_num_threads(tc.threads or default_threads())  # recorded in provenance.threads
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
    spec = input_spec_for(cfg.model)
    splits = build_data(
        cfg.data, img_size=spec.img_size, in_chans=spec.in_chans, mean=spec.mean, std=spec.std, device=s.device
    )
    train_loader = BatchLoader(splits.train, s.device, cfg.data.num_workers, persistent=True)
    val_loader = BatchLoader(splits.val, s.device, cfg.data.num_workers, persistent=True)
    num_classes = cfg.model.num_classes or splits.info.num_classes
    if num_classes < splits.info.num_classes:
        raise ConfigError(f"model.num_classes={num_classes} is invalid: the data has {splits.info.num_classes} classes")
    batches_per_epoch = math.ceil(len(splits.train) / tc.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / tc.grad_accum)
    total_steps = min(steps_per_epoch * tc.epochs, tc.max_steps or math.inf)
    return Data(splits, train_loader, val_loader, spec, num_classes, total_steps, batches_per_epoch)


def build(s: Setting, data: Data, state: RunState) -> Built:
    """The backbone with the tuner applied, on the device; refused here, before any step, when its
    training memory cannot fit (peftlab.training.preflight); compiled when train.compile asks."""
    tc = s.tc
    check_model_size(s.cfg, data.num_classes)  # on the meta device, before anything is allocated
    rss = metrics.PeakRSS()  # what the model and its training add above imports and data
    seed_everything(s.cfg.seed)
    model = build_base(s.cfg, data.num_classes)  # a quantized base is quantized while loading
    base = base_provenance(s.cfg.model, model)  # the weights file it was loaded from, before a tuner wraps it
    if tc.grad_checkpointing:
        enable_grad_checkpointing(model)
    tuner = apply_tuner(model, s.cfg, TunerContext(total_steps=data.total_steps, device=s.device, quant=s.cfg.quant))
    model = tuner.model.to(s.device).train()
    rss_build = rss.peak_above_baseline()
    shape = (data.spec.in_chans, data.spec.img_size, data.spec.img_size)
    micro_batch = math.ceil(tc.batch_size / s.ranks.world_size / state.split)  # computed at once
    # a model of many patches is probed small (a forward pass at full size took minutes before a refusal)
    probed = (
        preflight.probed_for_config(s.cfg, data.num_classes, tc.precision)
        if s.device.type == "cpu" and not tc.grad_checkpointing
        else None
    )
    estimate = preflight.estimate(
        model, list(tuner.trainable_parameters().values()), shape, micro_batch, tc.precision, s.device, probed
    )
    preflight.check_fits(
        estimate,
        preflight.available_bytes(s.device),
        micro_batch,
        tc.grad_accum,
        s.cfg.method.quantizable and s.cfg.quant.mode == "none",
    )
    compiled = None
    if tc.compile:
        compiled = compile_model(
            model,
            (min(tc.batch_size, len(data.splits.train)), *shape),
            (min(tc.eval_batch_size, len(data.splits.val)), *shape),
            s.device,
            tc.precision,
        )
    rss.reset_peak()  # from here on: the training peak (model, activations, optimizer state)
    counts = tuner.parameter_counts()
    state.params = {**counts, "trainable_ratio": counts["trainable"] / counts["total"]}
    state.provenance = provenance_record(s, data, compiled, base)
    return Built(model, tuner, counts, rss, rss_build, estimate)


def provenance_record(s: Setting, data: Data, compiled: dict | None, base: dict) -> dict:
    git_sha, git_dirty = provenance.git_state()
    return {
        "git_sha": git_sha,
        "git_dirty": git_dirty,
        "versions": provenance.package_versions(),
        "hardware": provenance.hardware(s.device),
        "arithmetic": arithmetic_record(
            s.tc.reproducible, s.cfg.quant.cpu_kernel if s.cfg.quant.mode in ("nf4", "fp4") else None
        ),
        "threads": torch.get_num_threads(),
        "dtype": s.tc.precision,
        "tf32": s.tc.tf32 and s.device.type == "cuda",
        "fused_adamw": fused_adamw(s.tc.fused_adamw, s.device),
        "compile": compiled,
        "world_size": s.ranks.world_size,
        "seed": s.cfg.seed,
        "data_sha256": data.splits.info.sha256,
        "data": asdict(data.splits.info),
        **base,  # base_sha256 of the weights file the base was loaded from; base_hub_repo, base_hub_revision
    }


def optimization(s: Setting, tuner, total_steps: int) -> Optimization:
    """AdamW over the tuner's parameter groups (the head's lr and weight decay apart), warm-up and
    cosine decay, and the loss scaler (fp16 only)."""
    tc = s.tc
    head_lr = tc.head_lr if tc.head_lr is not None else tc.lr
    head_wd = tc.head_weight_decay if tc.head_weight_decay is not None else tc.weight_decay
    optimizer = torch.optim.AdamW(
        tuner.param_groups(tc.lr, tc.weight_decay, head_lr, head_wd),
        fused=fused_adamw(tc.fused_adamw, s.device) or None,
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
    meter = Meter(s, data.total_steps, pos.step)
    nonfinite = NonFinite(s.device, tc.precision, s.ranks)  # the host reads it only at log, eval and checkpoint points
    # torchrun: DistributedDataParallel averages the gradients of the ranks' shards (peftlab.training.distributed)
    stepped = distributed.data_parallel(built.model, s.ranks, s.device)
    last_val = None
    while epochs_left(pos, tc, data.total_steps):
        batches = epoch_batches(len(data.splits.train), tc.batch_size, s.cfg.seed, pos.epoch)
        pieces = micro_pieces(batches, state.split, s.ranks)  # shards (torchrun), halves (auto_batch)
        loaded = data.train_loader([p for parts in pieces[pos.next_batch :] for p in parts])  # decoded ahead, in order
        meter.restart()
        while pos.next_batch < len(batches) and pos.step < data.total_steps:
            group = batches[pos.next_batch : pos.next_batch + tc.grad_accum]  # this step's micro-batches
            parts = pieces[pos.next_batch : pos.next_batch + len(group)]
            n_pieces = sum(len(p) for p in parts)
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
            pos.images_seen += sum(len(b) for b in group)
            meter.window_images += sum(len(b) for b in group)
            log_and_evaluate(
                s, data, built, opt, pos, meter, nonfinite, loss, grad_norm, epoch_goes_on=pos.next_batch < len(batches)
            )
            kill_point("step", pos.step)
            if pos.step % tc.ckpt_every == 0:
                save(s, built, opt, pos)
                kill_point("checkpoint", pos.step)
                meter.last = time.perf_counter()
        nonfinite.check()  # before the epoch's evaluation and checkpoint
        last_val = end_epoch(s, data, built, opt, pos)
    meter.bar.close()
    return last_val


def epochs_left(pos: Position, tc: TrainConfig, total_steps: int) -> bool:
    """An epoch to train or to finish: a checkpoint taken at the last step (next_batch > 0)
    still owes its epoch's evaluation and record."""
    patience_spent = tc.early_stop_patience and pos.bad_epochs >= tc.early_stop_patience
    return pos.epoch < tc.epochs and (pos.step < total_steps or pos.next_batch > 0) and not patience_spent


class Meter:
    """The loop's progress bar and clocks: training time (evaluations left out) and the images per
    second between log points."""

    def __init__(self, s: Setting, total_steps: int, step: int):
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
        self.window_images = 0


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
                "images_per_second": meter.window_images / (now - meter.window_start),
            }
        )
        meter.bar.set_postfix(loss=f"{meter.loss:.3f}")
        meter.window_start, meter.window_images = now, 0
    if eval_point:
        val = evaluate(built.model, data.val_loader, tc.eval_batch_size, s.device, tc.precision, "val")
        pos.val_seconds += val["seconds"]
        s.log(
            {
                "kind": "eval",
                "step": pos.step,
                "epoch": pos.epoch,
                "val_loss": val["loss"],
                "val_top1": val["top1"],
                "val_top5": val["top5"],
            }
        )
        meter.restart()  # evaluation is not training time


def end_epoch(s: Setting, data: Data, built: Built, opt: Optimization, pos: Position) -> dict:
    """The epoch's evaluation on val (early stopping counts it), its record and its checkpoint."""
    val = evaluate(built.model, data.val_loader, s.tc.eval_batch_size, s.device, s.tc.precision, "val")
    pos.val_seconds += val["seconds"]
    if val["top1"] is not None:  # no validation split: nothing to improve on (early stopping needs one)
        improved = val["top1"] > pos.best_val
        pos.best_val, pos.bad_epochs = max(pos.best_val, val["top1"]), 0 if improved else pos.bad_epochs + 1
    s.log(
        {
            "kind": "epoch",
            "step": pos.step,
            "epoch": pos.epoch,
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
        }
    )
    kill_point("epoch-record", pos.step)
    pos.epoch, pos.next_batch = pos.epoch + 1, 0
    save(s, built, opt, pos)
    kill_point("epoch-checkpoint", pos.step)
    return val


def save(s: Setting, built: Built, opt: Optimization, pos: Position) -> None:
    if s.ranks.main:  # rank 0's checkpoint is every rank's
        checkpoint.save(s.run_dir / "checkpoint", pos, built.tuner, opt, s.log.lines)


def finish(
    s: Setting,
    data: Data,
    built: Built,
    opt: Optimization,
    pos: Position,
    monitor: Monitors,
    last_val: dict | None,
    state: RunState,
) -> RunResult:
    """The final weights: checked finite, tested (unmerged and merged), the merge checked, the
    adapter files written; the result."""
    tc, tuner, test_split = s.tc, built.tuner, data.splits.test
    rss_train = built.rss.peak_above_baseline()  # before the merged copies made for testing
    bad = [name for name, p in tuner.trainable_parameters().items() if not bool(torch.isfinite(p).all())]
    if bad:  # the last update made them non-finite: no loss saw it
        raise Diverged(
            f"non-finite trainable weights after step {pos.step} ({bad[0]}{' and others' if bad[1:] else ''})"
        )
    val = last_val or evaluate(built.model, data.val_loader, tc.eval_batch_size, s.device, tc.precision, "val")
    if tc.test:
        test = evaluate(
            built.model, test_split, tc.eval_batch_size, s.device, tc.precision, "test", s.cfg.data.num_workers
        )
    else:  # a tuning trial: chosen on validation, the test split stays unseen (merge checked on val)
        test_split, test = (
            data.splits.val,
            {"loss": None, "top1": None, "top5": None, "images_per_second": None, "seconds": 0.0},
        )
    for split, numbers in (("val", val), ("test", test)):
        if numbers["loss"] is not None and not math.isfinite(numbers["loss"]):  # None: no val split
            raise Diverged(f"non-finite {split} loss ({numbers['loss']}) of the final weights (step {pos.step})")
    merged_test = merge = None
    # the deployable model: merged (re-quantized on a quantized base); None where the method's modules
    # cannot fold into the base weights (adapters, prompts): nothing to test merged, no merge to check
    deployable = tuner.merged_model(quantized=tuner.quantized) if tuner.is_adapter else None
    if deployable is not None and not tc.test:
        del deployable
        merge = check_merge(tuner, test_split, s.device)
    elif deployable is not None:
        merged_test = evaluate(
            deployable.to(s.device),
            test_split,
            tc.eval_batch_size,
            s.device,
            tc.precision,
            "merged test",
            s.cfg.data.num_workers,
        )
        del deployable
        merge = check_merge(tuner, test_split, s.device)
    if merge is not None and not math.isfinite(merge["max_abs_diff"]):
        raise Diverged(f"non-finite merge check (max |diff| {merge['max_abs_diff']}) of the final weights")
    write_adapter(tuner, s.run_dir)
    kill_point("adapter")
    evaluations = {"val": val, "test": test, "merged_test": merged_test, "merge": merge}
    return result_record(s, data, built, opt, pos, monitor, state, evaluations, rss_train)


def write_adapter(tuner, run_dir: Path) -> None:
    """adapter.safetensors, PEFT's adapter_config.json + adapter_model.safetensors, and the rank
    reallocations of adaptive-rank methods (importance.jsonl)."""
    adapter = tuner.adapter_state_dict()
    write_atomic(run_dir / "adapter.safetensors", lambda tmp: save_file(adapter, tmp))
    write_peft_adapter(tuner, run_dir)  # PEFT loads them
    records = tuner.importance_records()
    if records:
        write_atomic(
            run_dir / "importance.jsonl",
            lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in records)),
        )


def result_record(
    s: Setting,
    data: Data,
    built: Built,
    opt: Optimization,
    pos: Position,
    monitor: Monitors,
    state: RunState,
    evaluations: dict,
    rss_train: int,
) -> RunResult:
    """result.json of a completed run (its keys: peftlab.run_result)."""
    tuner, val, test, merged_test = built.tuner, evaluations["val"], evaluations["test"], evaluations["merged_test"]
    final = tuner.parameter_counts()
    return RunResult(
        status="completed",
        error=None,
        step=pos.step,
        config=to_dict(s.cfg),
        metrics=Metrics(
            test_top1=test["top1"],
            test_top5=test["top5"],
            val_top1=val["top1"],
            best_val_top1=None if val["top1"] is None else max(pos.best_val, val["top1"]),
            test_loss=test["loss"],
            merged_test_top1=merged_test["top1"] if merged_test else None,
        ),
        params={**final, "trainable_ratio": final["trainable"] / final["total"], "initial": built.counts},
        ranks=tuner.ranks(),
        memory=Memory(
            peak_rss_bytes=metrics.peak_rss_bytes(),
            peak_rss_above_baseline_bytes=max(rss_train, built.rss_build),
            peak_rss_model_build_bytes=built.rss_build,
            peak_rss_training_bytes=rss_train,
            rss_baseline_bytes=built.rss.baseline,
            cuda_max_allocated_bytes=metrics.cuda_max_allocated_bytes(s.device),
            weights_bytes=metrics.weights_bytes(built.model),
            **tuner.base_weight_bytes(),
            trainable_state_bytes=metrics.trainable_state_bytes(opt.trainable, opt.optimizer),
            estimate=built.memory_estimate,
        ),  # peftlab.training.preflight, before the first step
        timing=Timing(
            train_seconds=pos.train_seconds,
            train_images_per_second=pos.images_seen / pos.train_seconds if pos.train_seconds else None,
            eval_images_per_second=test["images_per_second"],
            val_seconds=pos.val_seconds,
            wall_seconds=time.perf_counter() - state.started,
        ),
        warnings=merge_warnings(evaluations["merge"])
        + slow_validation(pos.val_seconds, pos.train_seconds, len(data.splits.val)),
        auto_batch=state.auto_batch,
        merge=evaluations["merge"],
        quantization=tuner.quantization_report(),  # QA-LoRA: format, groups, error per layer
        protocol=protocol_card(
            s.cfg,
            data.splits.info.split_sources,
            data.spec.img_size,
            data.spec.mean,
            data.spec.std,
            {**final, "head": head_count(tuner)},
        ),
        provenance=state.provenance,
        **summarize(
            monitor, s.log.records(), train_seconds=pos.train_seconds
        ),  # health, monitors, convergence, frozen_base
    )


def head_count(tuner) -> int:
    return sum(p.numel() for n, p in tuner.trainable_parameters().items() if is_head_param(n, tuner.head))


SLOW_VALIDATION_SECONDS = 30.0


def slow_validation(val_seconds: float, train_seconds: float, val_images: int) -> list[str]:
    """A warning when validation took longer than training (a small train_subset with the full
    10% validation split, say): ``data.val_subset`` or fewer evaluations make the run faster.
    Under ``SLOW_VALIDATION_SECONDS`` of validation it is not worth a line: a short run's two
    timings are noise, and the line would come and go with the machine's load."""
    if val_seconds <= max(train_seconds, SLOW_VALIDATION_SECONDS):
        return []
    return [
        f"validation took {val_seconds:.1f} s, longer than training ({train_seconds:.1f} s): set data.val_subset "
        f"(now {val_images} images) or evaluate less often (train.eval_every)"
    ]
