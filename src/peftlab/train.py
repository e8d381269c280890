"""The training recipe every method uses, read top to bottom.

``train(cfg, run_dir)`` builds the data and the model, applies the tuner (which quantizes the
base when ``quant.mode`` asks), runs the loop (``training_step``: forward, loss + the tuner's
regularization, backward, the tuner's hooks, clip, step; then log, evaluate, checkpoint),
evaluates on test, checks the merge and writes ``result.json``.
Running it again on the same directory resumes from ``checkpoint/``, or returns the
finished result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np
import psutil
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from peftlab import checkpoint as ckpt
from peftlab import locks, metrics, provenance, tracking
from peftlab.backbones import base_sha256, build_backbone, enable_grad_checkpointing, input_spec_for
from peftlab.config import RunConfig, config_hash, dump_config, load_config, to_dict
from peftlab.errors import CheckpointError, ConfigError, UserError
from peftlab.export import write_peft_adapter
from peftlab.files import kill_point, one_line, read_json, remove_temporaries, write_atomic, write_json_atomic
from peftlab.monitors.health import health
from peftlab.monitors.run import Monitors, summarize
from peftlab.params import check_model_size
from peftlab.progress import TextProgress
from peftlab.quant import weight_only_arithmetic
from peftlab.tuners import apply_tuner
from peftlab.tuners.base import TunerContext


class Diverged(Exception):
    """A non-finite loss or gradient."""


# ---------------------------------------------------------------------------------------
# set-up helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_threads() -> int:
    """Intra-op threads of a run whose config leaves ``train.threads`` null: this machine's
    physical cores (those this process may use), the same whatever else runs beside it.

    The thread count changes floating-point reduction order, so a run's numbers depend on it;
    it must never depend on how many runs share the machine (``peftlab study --workers``).
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(psutil.cpu_count(logical=False) or usable, usable))


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} is invalid: no CUDA device is available here; use auto or cpu")
    return torch.device(name)


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision='fp16' is invalid on CPU: expected fp32 or bf16")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def warmup_cosine(total_steps: int, warmup_ratio: float):
    """Multiplier of the base lr: linear warm-up, then cosine decay to zero."""
    warmup = int(round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """The shuffled index batches of one epoch, a pure function of (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator)
    return list(order.split(batch_size))


def fetch(dataset, indices: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch on the device: (float B x C x H x W, int64 B)."""
    if hasattr(dataset, "get_batch"):  # in-memory splits: one indexing for the whole batch
        images, labels = dataset.get_batch(indices)
    else:
        samples = [dataset[i] for i in indices.tolist()]
        images = torch.stack([s[0] for s in samples])
        labels = torch.as_tensor([int(s[1]) for s in samples], dtype=torch.long)
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model, dataset, batch_size: int, device: torch.device, precision: str, desc: str) -> dict:
    """Loss, top-1 and top-5 accuracy and images/s over a whole split (top-5 None with <= 5 classes,
    where it would be 100% by construction)."""
    was_training = model.training
    model.eval()
    n = len(dataset)
    loss_sum, correct, classes = 0.0, {1: 0, 5: 0}, None
    start = time.perf_counter()
    for indices in tqdm(torch.arange(n).split(batch_size), desc=desc, leave=False, disable=None):
        images, labels = fetch(dataset, indices, device)
        with autocast(precision, device):
            logits = model(images)
        loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        classes = logits.shape[-1]
        for k, c in metrics.topk_correct(logits.float(), labels).items():
            correct[k] += c
    metrics.synchronize(device)
    seconds = time.perf_counter() - start
    model.train(was_training)
    top5 = correct[5] / max(n, 1) if classes is None or classes > 5 else None
    return {"loss": loss_sum / max(n, 1), "top1": correct[1] / max(n, 1), "top5": top5,
            "images_per_second": n / seconds if seconds > 0 else None, "seconds": seconds}


MERGE_TOLERANCE = 1e-4  # max |logit difference| of an exact merge, relative to max |logit| (fp32 rounding)


def check_merge(tuner, dataset, device: torch.device, batch_size: int = 64, repeats: int = 5) -> dict:
    """Merged and adapter outputs on one test batch: max |diff| and latency ratio (interleaved).

    ``max_abs_diff`` compares the exact merge (on a quantized base: dequant(W) + ΔW in fp32)
    with the adapter computing in the arithmetic it trained with (``weight_only_arithmetic``);
    ``ok`` says it is within ``MERGE_TOLERANCE`` of the largest logit. On a quantized base the
    re-quantized merge (the deployable model) is compared with the adapter in eval mode too:
    that difference is quantization error, not a bug, and is reported, not checked. A method whose
    quantized merge is exact (QA-LoRA: the update folds into the zeros) checks it too
    (``requantized_ok``) and reports its own facts (``codes_unchanged``).
    """
    merged = tuner.merged_model().to(device).eval()
    model = tuner.model
    was_training = model.training
    model.eval()
    images, _ = fetch(dataset, torch.arange(min(batch_size, len(dataset))), device)
    with torch.no_grad():
        with weight_only_arithmetic(model):
            reference = model(images)
        diff = float((merged(images) - reference).abs().max())
        times = metrics.time_interleaved({"merged": lambda: merged(images), "adapter": lambda: model(images)},
                                         repeats, device)
        scale = float(reference.abs().max())
        check = {"max_abs_diff": diff, "tolerance": MERGE_TOLERANCE * max(scale, 1.0),
                 "ok": diff <= MERGE_TOLERANCE * max(scale, 1.0),
                 "merged_vs_adapter_latency_ratio": metrics.median(times["merged"]) / metrics.median(times["adapter"])}
        if tuner.quantized:
            requantized = tuner.merged_model(quantized=True).to(device).eval()
            check["requantized_max_abs_diff"] = float((requantized(images) - model(images)).abs().max())
            if tuner.exact_quantized_merge:  # QA-LoRA: the merge stays quantized and must be exact
                check["requantized_ok"] = check["requantized_max_abs_diff"] <= check["tolerance"]
                check.update(tuner.quantized_merge_facts(requantized))
    model.train(was_training)
    return check


def compute_loss(model, images, labels, precision: str, device) -> torch.Tensor:
    """Cross-entropy of one micro-batch, the forward pass under the configured autocast."""
    with autocast(precision, device):
        logits = model(images)
    return F.cross_entropy(logits.float(), labels)


def backward(loss: torch.Tensor, scaler, grad_accum: int, step: int) -> float:
    """Backward of one micro-batch's (scaled) loss; a non-finite loss stops the run."""
    value = loss.item()
    if not math.isfinite(value):
        raise Diverged(f"non-finite loss ({value}) at step {step}")
    scaler.scale(loss / grad_accum).backward()
    return value


def unscaled_grad_norm(scaler, optimizer, trainable, precision: str, step: int) -> tuple[torch.Tensor, bool]:
    """Unscale the gradients; their total norm and whether the fp16 scaler will skip this step.

    A non-finite norm stops the run, except in fp16, where the scaler skips the step.
    """
    scaler.unscale_(optimizer)
    grads = [p.grad for p in trainable if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    skip = not bool(torch.isfinite(norm))
    if skip and precision != "fp16":
        raise Diverged(f"non-finite gradient norm ({float(norm)}) at step {step}")
    return norm, skip


def training_step(model, tuner, micro_batches, n_micro: int, optimizer, scheduler, scaler, trainable,
                  tc, device: torch.device, step: int, monitor=None) -> tuple[float, float, dict | None]:
    """One optimizer step over ``n_micro`` micro-batches of (images, labels).

    Returns (mean loss, gradient norm before clipping, the monitors' record or None). The
    tuner's hooks are called here, in order: ``regularization`` on every micro-batch,
    ``after_backward`` on the raw gradients, ``after_step`` before the gradients are cleared;
    the monitors observe the raw gradients at their log and eval points.
    """
    loss_sum = 0.0
    for images, labels in micro_batches:
        loss = compute_loss(model, images, labels, tc.precision, device)
        loss = loss + tuner.regularization()
        loss_sum += backward(loss, scaler, n_micro, step)
    grad_norm, skip = unscaled_grad_norm(scaler, optimizer, trainable, tc.precision, step)
    tuner.after_backward(step, skip)
    observed = monitor.observe(step + 1, float(grad_norm)) if monitor is not None and monitor.due(step + 1) else None
    if tc.clip_grad:
        torch.nn.utils.clip_grads_with_norm_(trainable, tc.clip_grad, grad_norm)
    scaler.step(optimizer)
    scaler.update()
    tuner.after_step(step)
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum / n_micro, float(grad_norm), observed


# what one attempt of a run writes in its directory (a failed attempt's move aside together)
ATTEMPT_FILES = ("config.yaml", "result.json", "metrics.jsonl", "monitors.jsonl", "importance.jsonl", "checkpoint",
                 "adapter.safetensors", "adapter_config.json", "adapter_model.safetensors", "tensorboard", "wandb")


def prepare_run_dir(cfg: RunConfig, run_dir: Path) -> None:
    """Write config.yaml. A directory that holds another config is refused, not overwritten, unless
    its run failed or diverged: then that attempt's files move aside into ``failed-<time>/``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    if path.exists():
        # paths are absolute in config.yaml; those of earlier versions were relative to the current directory
        existing = load_config(path, base_dir=Path.cwd())
        if config_hash(existing, 64) != config_hash(cfg, 64):  # the sinks (track) may change between calls
            if (read_json(run_dir / "result.json") or {}).get("status") not in ("failed", "diverged"):
                raise ConfigError(f"run directory {run_dir} holds a different config.yaml (of a run that completed "
                                  "or can resume); use another --run-dir")
            stamp = time.strftime("failed-%Y%m%d-%H%M%S")
            aside, n = run_dir / stamp, 1
            while aside.exists():
                aside, n = run_dir / f"{stamp}-{n}", n + 1
            aside.mkdir()
            for name in ATTEMPT_FILES:
                if (run_dir / name).exists():
                    (run_dir / name).rename(aside / name)
            existing = None
    if not path.exists() or existing is None or existing.track != cfg.track:
        write_atomic(path, lambda tmp: Path(tmp).write_text(dump_config(cfg)))


# ---------------------------------------------------------------------------------------
# the recipe


def train(cfg: RunConfig, run_dir: str | Path, *, progress: bool = True, position: int = 0) -> dict:
    """Train one run in ``run_dir``; returns the result dict (also written to result.json).

    The run directory is locked while it trains: a second trainer of the same directory gets a
    one-line error naming the first (``locks.DirectoryInUse``) and writes nothing.
    """
    run_dir = Path(run_dir)
    with locks.hold(run_dir, "run directory", "peftlab train"):
        return _train_in(cfg, run_dir, progress, position)


def _train_in(cfg: RunConfig, run_dir: Path, progress: bool, position: int) -> dict:
    prepare_run_dir(cfg, run_dir)
    for directory in (run_dir, run_dir / "checkpoint"):  # what a killed atomic write left behind
        remove_temporaries(directory)
    done = read_json(run_dir / "result.json")
    if done is not None and done.get("status") == "completed":
        return done
    state: dict = {"step": None, "train_seconds": 0.0, "val_seconds": 0.0, "started": time.perf_counter()}
    try:
        result = _train(cfg, run_dir, state, progress, position)
    except Diverged as err:
        result = failed_result(cfg, "diverged", str(err), state)
        result["health"] = health(state["log"].records(), diverged=True) if state.get("log") else None
    except UserError as err:
        result = failed_result(cfg, "failed", str(err), state)
        result["checkpoint_unusable"] = isinstance(err, CheckpointError)  # --retry-failed then starts over
        write_json_atomic(run_dir / "result.json", result)
        tracking.finish_log(state.get("log"), result)
        raise
    except Exception as err:  # record any crash, then let it propagate
        result = failed_result(cfg, "failed", f"{type(err).__name__}: {err}", state)
        result["traceback"] = traceback.format_exc()
        write_json_atomic(run_dir / "result.json", result)
        tracking.finish_log(state.get("log"), result)
        raise
    except BaseException:  # killed or interrupted: the sinks keep what they hold; the next call resumes
        tracking.finish_log(state.get("log"), None)
        raise
    write_json_atomic(run_dir / "result.json", result)
    tracking.finish_log(state.get("log"), result)
    return result


def slow_validation(val_seconds: float, train_seconds: float, val_images: int) -> list[str]:
    """A warning when validation took longer than training (a small train_subset with the full
    10% validation split, say): ``data.val_subset`` or fewer evaluations make the run faster."""
    if val_seconds <= train_seconds:
        return []
    return [f"validation took {val_seconds:.1f} s, longer than training ({train_seconds:.1f} s): set data.val_subset "
            f"(now {val_images} images) or evaluate less often (train.eval_every)"]


def failed_result(cfg: RunConfig, status: str, error: str, state: dict) -> dict:
    return {"status": status, "error": error, "step": state.get("step"), "config": to_dict(cfg),
            "metrics": {}, "params": state.get("params"),
            "provenance": state.get("provenance")}


def _train(cfg: RunConfig, run_dir: Path, state: dict, progress: bool, position: int) -> dict:
    tc = cfg.train
    torch.set_num_threads(tc.threads or default_threads())  # recorded in provenance.threads
    device = select_device(tc.device)
    autocast(tc.precision, device)  # validates precision for the device
    log = state["log"] = tracking.open_log(cfg, run_dir)  # metrics.jsonl, monitors.jsonl and cfg.track's sinks
    seed_everything(cfg.seed)

    # --- data and model --------------------------------------------------------------
    from peftlab.data import build_data

    spec = input_spec_for(cfg.model)
    data = build_data(cfg.data, img_size=spec.img_size, in_chans=spec.in_chans, mean=spec.mean, std=spec.std)
    num_classes = cfg.model.num_classes or data.info.num_classes
    if num_classes < data.info.num_classes:
        raise ConfigError(f"model.num_classes={num_classes} is invalid: the data has {data.info.num_classes} classes")
    batches_per_epoch = math.ceil(len(data.train) / tc.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / tc.grad_accum)
    total_steps = min(steps_per_epoch * tc.epochs, tc.max_steps or math.inf)
    check_model_size(cfg, num_classes)  # on the meta device, before anything is allocated
    rss = metrics.PeakRSS()  # what the model and its training add above imports and data
    seed_everything(cfg.seed)
    model = build_backbone(cfg.model, num_classes)
    if tc.grad_checkpointing:
        enable_grad_checkpointing(model)
    tuner = apply_tuner(model, cfg, TunerContext(total_steps=total_steps, device=device, quant=cfg.quant))
    model = tuner.model.to(device).train()
    rss_build = rss.peak_above_baseline()
    rss.reset_peak()  # from here on: the training peak (model, activations, optimizer state)
    counts = tuner.parameter_counts()
    state["params"] = {**counts, "trainable_ratio": counts["trainable"] / counts["total"]}
    git_sha, git_dirty = provenance.git_state()
    state["provenance"] = {
        "git_sha": git_sha, "git_dirty": git_dirty, "versions": provenance.package_versions(),
        "hardware": provenance.hardware(device), "threads": torch.get_num_threads(), "dtype": tc.precision,
        "seed": cfg.seed, "data_sha256": data.info.sha256, "data": asdict(data.info),
        "base_sha256": base_sha256(cfg.model),  # the local weights file the base was loaded from (else None)
    }

    # --- optimizer, schedule, resume ---------------------------------------------------
    head_lr = tc.head_lr if tc.head_lr is not None else tc.lr
    head_wd = tc.head_weight_decay if tc.head_weight_decay is not None else tc.weight_decay
    optimizer = torch.optim.AdamW(tuner.param_groups(tc.lr, tc.weight_decay, head_lr, head_wd))
    tuner.attach_optimizer(optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, tc.warmup_ratio))
    scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")
    trainable = list(tuner.trainable_parameters().values())
    ckpt_dir = run_dir / "checkpoint"

    step, epoch, next_batch = 0, 0, 0
    best_val, bad_epochs, images_seen = -1.0, 0, 0
    saved = ckpt.load_checkpoint(ckpt_dir)  # checked: a one-line CheckpointError if unusable
    if saved is not None:
        try:
            tuner.load_trainable_state_dict(saved["trainable"])
            tuner.load_state_dict(ckpt.to_device(saved["tuner"], device))
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            ckpt.set_rng_state(saved["rng"])
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:  # another run's, or damaged
            raise CheckpointError(ckpt_dir / ckpt.CHECKPOINT_NAME, f"it does not fit this run ({one_line(err)[:300]})") \
                from None
        step, epoch, next_batch = saved["step"], saved["epoch"], saved["next_batch"]
        best_val, bad_epochs, images_seen = saved["best_val"], saved["bad_epochs"], saved["images_seen"]
        state["train_seconds"] = saved["train_seconds"]
        state["val_seconds"] = saved.get("val_seconds", 0.0)  # absent in checkpoints from before it was kept
    # the files keep the records the checkpoint covers (none without one); sinks skip steps they hold
    log.truncate(step, saved.get("log_lines") if saved is not None else {})
    monitor = Monitors(model, tuner.trainable_parameters(), log_every=tc.log_every, eval_every=tc.eval_every,
                       total_steps=total_steps, clip_grad=None, history=log.records())  # observes unclipped gradients

    def save() -> None:
        ckpt.save_checkpoint(ckpt_dir, {
            "trainable": tuner.trainable_state_dict(), "tuner": tuner.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step,
            "epoch": epoch, "next_batch": next_batch, "best_val": best_val, "bad_epochs": bad_epochs,
            "images_seen": images_seen, "train_seconds": state["train_seconds"], "val_seconds": state["val_seconds"],
            "rng": ckpt.rng_state(),
            "log_lines": dict(log.lines)})

    # --- the loop ---------------------------------------------------------------------
    bar = tqdm(total=total_steps, initial=step, desc=f"train {cfg.name}",
               position=position, leave=position == 0, disable=not progress or None)
    lines = TextProgress(bar, progress, f"train {cfg.name}", "step", every=max(1, total_steps // 10))
    last_val = None  # the val metrics of the final weights

    def epochs_left() -> bool:
        """An epoch to train or to finish: a checkpoint taken at the last step (next_batch > 0)
        still owes its epoch's evaluation and record."""
        patience_spent = tc.early_stop_patience and bad_epochs >= tc.early_stop_patience
        return epoch < tc.epochs and (step < total_steps or next_batch > 0) and not patience_spent

    while epochs_left():
        batches = epoch_batches(len(data.train), tc.batch_size, cfg.seed, epoch)
        last = window_start = time.perf_counter()
        window_images = 0
        while next_batch < len(batches) and step < total_steps:
            group = batches[next_batch:next_batch + tc.grad_accum]  # this step's micro-batches
            loss, grad_norm, observed = training_step(model, tuner, (fetch(data.train, b, device) for b in group),
                                                      len(group), optimizer, scheduler, scaler, trainable, tc, device,
                                                      step, monitor)
            if observed:  # gradient flow and adapter statistics, taken inside the step
                log(observed)
            step, next_batch, state["step"] = step + 1, next_batch + len(group), step + 1
            step_images = sum(len(b) for b in group)
            images_seen, window_images = images_seen + step_images, window_images + step_images
            metrics.synchronize(device)
            now = time.perf_counter()
            state["train_seconds"] += now - last
            last = now
            bar.update(1)
            lines.update(step, f"loss {loss:.3f}")
            if step % tc.log_every == 0 or step == total_steps:
                log({
                    "kind": "step", "step": step, "epoch": epoch, "loss": loss,
                    "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                    "images_per_second": window_images / (now - window_start)})
                bar.set_postfix(loss=f"{loss:.3f}")
                window_start, window_images = now, 0
            if tc.eval_every and step % tc.eval_every == 0 and step < total_steps and next_batch < len(batches):
                val = evaluate(model, data.val, tc.eval_batch_size, device, tc.precision, "val")
                state["val_seconds"] += val["seconds"]
                log({"kind": "eval", "step": step, "epoch": epoch, "val_loss": val["loss"],
                     "val_top1": val["top1"], "val_top5": val["top5"]})
                last = window_start = time.perf_counter()  # evaluation is not training time
                window_images = 0
            kill_point("step", step)
            if step % tc.ckpt_every == 0:
                save()
                kill_point("checkpoint", step)
                last = time.perf_counter()
        val = last_val = evaluate(model, data.val, tc.eval_batch_size, device, tc.precision, "val")
        state["val_seconds"] += val["seconds"]
        improved = val["top1"] > best_val
        best_val, bad_epochs = max(best_val, val["top1"]), 0 if improved else bad_epochs + 1
        log({"kind": "epoch", "step": step, "epoch": epoch, "val_loss": val["loss"],
             "val_top1": val["top1"], "val_top5": val["top5"]})
        kill_point("epoch-record", step)
        epoch, next_batch = epoch + 1, 0
        save()
        kill_point("epoch-checkpoint", step)
    bar.close()
    rss_train = rss.peak_above_baseline()  # before the merged copies made for testing
    bad = [name for name, p in tuner.trainable_parameters().items() if not bool(torch.isfinite(p).all())]
    if bad:  # the last update made them non-finite: no loss saw it
        raise Diverged(f"non-finite trainable weights after step {step} ({bad[0]}{' and others' if bad[1:] else ''})")

    # --- test, merge check, result ----------------------------------------------------
    val = last_val or evaluate(model, data.val, tc.eval_batch_size, device, tc.precision, "val")
    test = evaluate(model, data.test, tc.eval_batch_size, device, tc.precision, "test")
    for split, numbers in (("val", val), ("test", test)):
        if not math.isfinite(numbers["loss"]):
            raise Diverged(f"non-finite {split} loss ({numbers['loss']}) of the final weights (step {step})")
    merged_test = None
    if tuner.is_adapter:  # the deployable model: merged (re-quantized on a quantized base)
        deployable = tuner.merged_model(quantized=tuner.quantized).to(device)
        merged_test = evaluate(deployable, data.test, tc.eval_batch_size, device, tc.precision, "merged test")
        del deployable
    merge = check_merge(tuner, data.test, device) if tuner.is_adapter else None
    if merge is not None and not math.isfinite(merge["max_abs_diff"]):
        raise Diverged(f"non-finite merge check (max |diff| {merge['max_abs_diff']}) of the final weights")
    adapter = tuner.adapter_state_dict()
    write_atomic(run_dir / "adapter.safetensors", lambda tmp: save_file(adapter, tmp))
    write_peft_adapter(tuner, run_dir)  # adapter_config.json + adapter_model.safetensors: PEFT loads them
    records = tuner.importance_records()  # rank reallocations (adaptive-rank methods)
    if records:
        write_atomic(run_dir / "importance.jsonl",
                     lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in records)))
    kill_point("adapter")
    final = tuner.parameter_counts()
    result = {
        "status": "completed", "error": None, "step": step, "config": to_dict(cfg),
        "metrics": {"test_top1": test["top1"], "test_top5": test["top5"], "val_top1": val["top1"],
                    "best_val_top1": max(best_val, val["top1"]), "test_loss": test["loss"],
                    "merged_test_top1": merged_test["top1"] if merged_test else None},
        "params": {**final, "trainable_ratio": final["trainable"] / final["total"], "initial": counts},
        "ranks": tuner.ranks(),
        "memory": {"peak_rss_bytes": metrics.peak_rss_bytes(),
                   "peak_rss_above_baseline_bytes": max(rss_train, rss_build),
                   "peak_rss_model_build_bytes": rss_build, "peak_rss_training_bytes": rss_train,
                   "rss_baseline_bytes": rss.baseline,
                   "cuda_max_allocated_bytes": metrics.cuda_max_allocated_bytes(device),
                   "weights_bytes": metrics.weights_bytes(model),
                   **tuner.base_weight_bytes(),
                   "trainable_state_bytes": metrics.trainable_state_bytes(trainable, optimizer)},
        "timing": {"train_seconds": state["train_seconds"],
                   "train_images_per_second": images_seen / state["train_seconds"] if state["train_seconds"] else None,
                   "eval_images_per_second": test["images_per_second"],
                   "val_seconds": state["val_seconds"],
                   "wall_seconds": time.perf_counter() - state["started"]},
        "warnings": slow_validation(state["val_seconds"], state["train_seconds"], len(data.val)),
        "merge": merge,
        "quantization": tuner.quantization_report(),  # QA-LoRA: format, groups, error per layer
        "provenance": state["provenance"],
        **summarize(monitor, log.records(), train_seconds=state["train_seconds"]),  # health, monitors, convergence, frozen_base
    }
    return result
