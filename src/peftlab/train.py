"""The training recipe every method uses, read top to bottom.

``train(cfg, run_dir)`` builds the data and the model, applies the tuner (which quantizes the
base when ``quant.mode`` asks), runs the loop (``training_step``: forward, loss + the tuner's
regularization, backward, the tuner's hooks, clip, step; then log, evaluate, checkpoint),
evaluates on test, checks the merge and writes ``result.json``. The host waits for the device
only at log, eval and checkpoint points (``NonFinite`` keeps a diverged step on the device until then).
Running it again on the same directory resumes from ``checkpoint/``, or returns the
finished result.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from peftlab import checkpoint as ckpt
from peftlab import distributed, locks, metrics, preflight, provenance, tracking
from peftlab.backbones import base_sha256, build_backbone, enable_grad_checkpointing, input_spec_for
from peftlab.config import RunConfig, config_hash, dump_config, load_config, to_dict
from peftlab.data.loading import BatchLoader
from peftlab.errors import CheckpointError, ConfigError, UserError
from peftlab.export import write_peft_adapter
from peftlab.cpu import arithmetic_record, pin_arithmetic
from peftlab.libraries import LIBRARY_LOG, logged_to
from peftlab.files import kill_point, one_line, read_json, remove_temporaries, write_atomic, write_json_atomic
from peftlab.monitors.health import health
from peftlab.monitors.run import Monitors, summarize
from peftlab.params import check_model_size
from peftlab.progress import TextProgress
from peftlab.tuners import apply_tuner
from peftlab.tuners.base import TunerContext
from peftlab.training.evaluate import check_merge, evaluate, merge_warnings
from peftlab.training.runtime import (autocast, compile_model, default_threads, fused_adamw, out_of_memory,
                                      resolve_precision, seed_everything, select_device, set_tf32)
from peftlab.training.step import (Diverged, NonFinite, Optimization, epoch_batches, micro_pieces, piece_weights,
                                   training_step, warmup_cosine)


# ---------------------------------------------------------------------------------------
# set-up helpers


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
    if not path.exists() or existing is None or existing != cfg:  # the sinks or train.reproducible changed
        write_atomic(path, lambda tmp: Path(tmp).write_text(dump_config(cfg)))


# ---------------------------------------------------------------------------------------
# the recipe


def train(cfg: RunConfig, run_dir: str | Path, *, progress: bool = True, position: int = 0) -> dict:
    """Train one run in ``run_dir``; returns the result dict (also written to result.json).

    The run directory is locked while it trains: a second trainer of the same directory gets a
    one-line error naming the first (``locks.DirectoryInUse``) and writes nothing.
    """
    run_dir = Path(run_dir)
    if cfg.train.reproducible:
        pin_arithmetic()  # refuses (one line) when torch already runs with the CPU's own arithmetic
    ranks = distributed.from_environment()  # torchrun: one of several processes training this run
    try:
        if not ranks.main:  # only rank 0 writes in the run directory; the others write in a scratch one
            return _train_replica(cfg, run_dir, ranks)
        with locks.hold(run_dir, "run directory", "peftlab train"), logged_to(run_dir / LIBRARY_LOG):
            return _train_in(cfg, run_dir, progress, position, ranks)
    finally:
        distributed.stop(ranks)


def _train_replica(cfg: RunConfig, run_dir: Path, ranks: distributed.Group) -> dict:
    """A rank other than 0: the same training on its shard of every batch, resumed from rank 0's
    checkpoint, its own logs and checkpoints thrown away."""
    done = read_json(run_dir / "result.json")
    if done is not None and done.get("status") == "completed":
        return done
    with tempfile.TemporaryDirectory(prefix=f"peftlab-rank{ranks.rank}-") as scratch:
        state = {"step": None, "train_seconds": 0.0, "val_seconds": 0.0, "started": time.perf_counter(),
                 "resume_dir": run_dir / "checkpoint"}
        try:
            return _train(cfg, Path(scratch), state, False, 0, ranks)
        finally:
            tracking.finish_log(state.get("log"), None)


def _train_in(cfg: RunConfig, run_dir: Path, progress: bool, position: int,
              ranks: distributed.Group = distributed.SINGLE) -> dict:
    prepare_run_dir(cfg, run_dir)
    for directory in (run_dir, run_dir / "checkpoint"):  # what a killed atomic write left behind
        remove_temporaries(directory)
    done = read_json(run_dir / "result.json")
    if done is not None and done.get("status") == "completed":
        return done
    state: dict = {"step": None, "train_seconds": 0.0, "val_seconds": 0.0, "started": time.perf_counter()}
    try:
        result = _train_splitting(cfg, run_dir, state, progress, position, ranks)
    except Diverged as err:
        if err.step is not None:  # found at a later check point: the step it happened at
            state["step"] = err.step
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


def _train_splitting(cfg: RunConfig, run_dir: Path, state: dict, progress: bool, position: int,
                     ranks: distributed.Group) -> dict:
    """``_train``; with ``train.auto_batch``, an out-of-memory error halves the micro-batch that is
    computed at once (each configured micro-batch is split in 2, 4, ... pieces whose gradients
    accumulate: the same effective batch and the same steps) and the run goes on from its last
    checkpoint. Each halving is recorded (result.json ``auto_batch``)."""
    state["split"], state["auto_batch"] = 1, None
    while True:
        try:
            return _train(cfg, run_dir, state, progress, position, ranks)
        except Exception as err:  # noqa: BLE001 - only an out-of-memory error is handled here
            micro = math.ceil(cfg.train.batch_size / state["split"])
            if not (cfg.train.auto_batch and out_of_memory(err) and micro > 1 and not ranks.active):
                if out_of_memory(err) and not cfg.train.auto_batch:
                    raise type(err)(f"{one_line(err)[:200]} (train.auto_batch=true halves the micro-batch "
                                    "and goes on from the last checkpoint)") from err
                raise
            error = one_line(err)[:200]
        tracking.finish_log(state.pop("log", None), None)  # reopened, and cut back to the checkpoint
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        state["split"] *= 2
        events = (state["auto_batch"] or {}).get("events", [])
        state["auto_batch"] = {"micro_batch": math.ceil(cfg.train.batch_size / state["split"]),
                               "pieces_per_micro_batch": state["split"],
                               "events": events + [{"step": state.get("step"), "micro_batch": micro,
                                                    "error": error}]}
        print(f"peftlab: out of memory at micro-batch {micro}; train.auto_batch goes on from the last checkpoint "
              f"at micro-batch {state['auto_batch']['micro_batch']}", file=sys.stderr, flush=True)


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


def _train(cfg: RunConfig, run_dir: Path, state: dict, progress: bool, position: int,
           ranks: distributed.Group = distributed.SINGLE) -> dict:
    tc = cfg.train
    torch.set_num_threads(tc.threads or default_threads())  # recorded in provenance.threads
    device = distributed.start(ranks, select_device(tc.device))  # under torchrun: joins the process group
    tc = dataclasses.replace(tc, precision=resolve_precision(tc.precision, device))  # 'auto' made concrete
    autocast(tc.precision, device)  # validates precision for the device
    set_tf32(tc.tf32, device)
    log = state["log"] = tracking.open_log(cfg, run_dir)  # metrics.jsonl, monitors.jsonl and cfg.track's sinks
    seed_everything(cfg.seed)

    # --- data and model --------------------------------------------------------------
    from peftlab.data import build_data

    spec = input_spec_for(cfg.model)
    data = build_data(cfg.data, img_size=spec.img_size, in_chans=spec.in_chans, mean=spec.mean, std=spec.std,
                      device=device)
    train_loader = BatchLoader(data.train, device, cfg.data.num_workers, persistent=True)
    val_loader = BatchLoader(data.val, device, cfg.data.num_workers, persistent=True)
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
    shape = (spec.in_chans, spec.img_size, spec.img_size)
    # refused here, before any step, when its training memory cannot fit (peftlab.preflight)
    micro_batch = math.ceil(tc.batch_size / ranks.world_size / state.get("split", 1))  # computed at once
    estimate = state["memory_estimate"] = preflight.estimate(model, list(tuner.trainable_parameters().values()), shape,
                                                             micro_batch, tc.precision, device)
    preflight.check_fits(estimate, preflight.available_bytes(device), micro_batch, tc.grad_accum,
                         cfg.method.quantizable and cfg.quant.mode == "none")
    state["compile"] = None
    if tc.compile:
        state["compile"] = compile_model(model, (min(tc.batch_size, len(data.train)), *shape),
                                         (min(tc.eval_batch_size, len(data.val)), *shape), device, tc.precision)
    rss.reset_peak()  # from here on: the training peak (model, activations, optimizer state)
    counts = tuner.parameter_counts()
    state["params"] = {**counts, "trainable_ratio": counts["trainable"] / counts["total"]}
    git_sha, git_dirty = provenance.git_state()
    state["provenance"] = {
        "git_sha": git_sha, "git_dirty": git_dirty, "versions": provenance.package_versions(),
        "hardware": provenance.hardware(device), "arithmetic": arithmetic_record(tc.reproducible),
        "threads": torch.get_num_threads(), "dtype": tc.precision,
        "tf32": tc.tf32 and device.type == "cuda", "fused_adamw": fused_adamw(tc.fused_adamw, device),
        "compile": state["compile"], "world_size": ranks.world_size,
        "seed": cfg.seed, "data_sha256": data.info.sha256, "data": asdict(data.info),
        "base_sha256": base_sha256(cfg.model),  # the local weights file the base was loaded from (else None)
    }

    # --- optimizer, schedule, resume ---------------------------------------------------
    head_lr = tc.head_lr if tc.head_lr is not None else tc.lr
    head_wd = tc.head_weight_decay if tc.head_weight_decay is not None else tc.weight_decay
    optimizer = torch.optim.AdamW(tuner.param_groups(tc.lr, tc.weight_decay, head_lr, head_wd),
                                  fused=fused_adamw(tc.fused_adamw, device) or None)
    tuner.attach_optimizer(optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, tc.warmup_ratio))
    scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")
    trainable = list(tuner.trainable_parameters().values())
    opt = Optimization(optimizer, scheduler, scaler, trainable, tc.precision, tc.clip_grad, device)
    ckpt_dir = run_dir / "checkpoint"

    step, epoch, next_batch = 0, 0, 0
    best_val, bad_epochs, images_seen = -1.0, 0, 0
    saved = ckpt.load_checkpoint(state.get("resume_dir", ckpt_dir))  # checked: one line if unusable
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
        if not ranks.main:  # rank 0's checkpoint is every rank's
            return
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

    nonfinite = NonFinite(device, tc.precision, ranks)  # the host reads it only at log, eval and checkpoint points
    # torchrun: DistributedDataParallel averages the gradients of the ranks' shards (peftlab.distributed)
    stepped = distributed.data_parallel(model, ranks, device)
    logged_loss = None
    while epochs_left():
        batches = epoch_batches(len(data.train), tc.batch_size, cfg.seed, epoch)
        pieces = micro_pieces(batches, state.get("split", 1), ranks)  # shards (torchrun), halves (auto_batch)
        loaded = train_loader([p for parts in pieces[next_batch:] for p in parts])  # decoded ahead, in order
        last = window_start = time.perf_counter()
        window_images = 0
        while next_batch < len(batches) and step < total_steps:
            group = batches[next_batch:next_batch + tc.grad_accum]  # this step's micro-batches
            parts = pieces[next_batch:next_batch + len(group)]
            n_pieces = sum(len(p) for p in parts)
            loss, grad_norm, observed = training_step(stepped, tuner, (next(loaded) for _ in range(n_pieces)), opt,
                                                      step=step, n_micro=n_pieces, monitor=monitor, nonfinite=nonfinite,
                                                      weights=piece_weights(group, parts, ranks))
            if observed:  # gradient flow and adapter statistics, taken inside the step
                log(observed)
            step, next_batch, state["step"] = step + 1, next_batch + len(group), step + 1
            step_images = sum(len(b) for b in group)
            images_seen, window_images = images_seen + step_images, window_images + step_images
            log_point = step % tc.log_every == 0 or step == total_steps
            eval_point = (bool(tc.eval_every) and step % tc.eval_every == 0 and step < total_steps
                          and next_batch < len(batches))
            if log_point or eval_point or step % tc.ckpt_every == 0:
                nonfinite.check()  # waits for the device: the times below are the device's too
            now = time.perf_counter()
            state["train_seconds"] += now - last
            last = now
            bar.update(1)
            lines.update(step, f"loss {logged_loss:.3f}" if logged_loss is not None else "")
            if log_point:
                logged_loss, logged_norm = distributed.mean_over_ranks(
                    torch.stack([loss.float(), grad_norm.float()]), ranks).tolist()  # the norm is the same on all
                log({
                    "kind": "step", "step": step, "epoch": epoch, "loss": logged_loss,
                    "lr": scheduler.get_last_lr()[0], "grad_norm": logged_norm,
                    "images_per_second": window_images / (now - window_start)})
                bar.set_postfix(loss=f"{logged_loss:.3f}")
                window_start, window_images = now, 0
            if eval_point:
                val = evaluate(model, val_loader, tc.eval_batch_size, device, tc.precision, "val")
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
        nonfinite.check()  # before the epoch's evaluation and checkpoint
        val = last_val = evaluate(model, val_loader, tc.eval_batch_size, device, tc.precision, "val")
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
    val = last_val or evaluate(model, val_loader, tc.eval_batch_size, device, tc.precision, "val")
    test = evaluate(model, data.test, tc.eval_batch_size, device, tc.precision, "test", cfg.data.num_workers)
    for split, numbers in (("val", val), ("test", test)):
        if not math.isfinite(numbers["loss"]):
            raise Diverged(f"non-finite {split} loss ({numbers['loss']}) of the final weights (step {step})")
    merged_test = None
    if tuner.is_adapter:  # the deployable model: merged (re-quantized on a quantized base)
        deployable = tuner.merged_model(quantized=tuner.quantized).to(device)
        merged_test = evaluate(deployable, data.test, tc.eval_batch_size, device, tc.precision, "merged test",
                               cfg.data.num_workers)
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
                   "trainable_state_bytes": metrics.trainable_state_bytes(trainable, optimizer),
                   "estimate": state["memory_estimate"]},  # peftlab.preflight, before the first step
        "timing": {"train_seconds": state["train_seconds"],
                   "train_images_per_second": images_seen / state["train_seconds"] if state["train_seconds"] else None,
                   "eval_images_per_second": test["images_per_second"],
                   "val_seconds": state["val_seconds"],
                   "wall_seconds": time.perf_counter() - state["started"]},
        "warnings": merge_warnings(merge) + slow_validation(state["val_seconds"], state["train_seconds"], len(data.val)),
        "auto_batch": state.get("auto_batch"),  # train.auto_batch: the halvings after out-of-memory errors
        "merge": merge,
        "quantization": tuner.quantization_report(),  # QA-LoRA: format, groups, error per layer
        "provenance": state["provenance"],
        **summarize(monitor, log.records(), train_seconds=state["train_seconds"]),  # health, monitors, convergence, frozen_base
    }
    return result
