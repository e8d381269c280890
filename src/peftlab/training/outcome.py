"""The end of a run (the recipe's ``finish``): the final weights checked finite, tested (and merged, where the
merge rounds: ``tests_merged``), the merge checked; the adapter files written (``write_adapter``); result.json's
record of the completed run (``result_record``, its keys: ``peftlab.training.run_result``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from peftlab.config.protocol import protocol_card
from peftlab.config.schema import to_dict
from peftlab.models.weights import write_safetensors
from peftlab.training import metrics
from peftlab.training.checkpoint import Position
from peftlab.training.evaluate import (
    check_merge,
    evaluate,
    generations,
    merge_warnings,
    not_evaluated,
    write_generations,
    writes_generations,
)
from peftlab.training.export import peft_header, write_peft_adapter
from peftlab.training.monitors.run import Monitors, summarize
from peftlab.training.recipe_state import Built, Data, RunState, Setting
from peftlab.training.run_result import (
    LOSS_FIELDS,
    PREDICTION_FIELDS,
    VAL_LOSSES,
    VAL_PREDICTIONS,
    Memory,
    Metrics,
    RunResult,
    Timing,
)
from peftlab.training.runtime import full_fp32
from peftlab.training.step import Diverged, Optimization
from peftlab.tuners.base import is_head_param
from peftlab.utils.files import kill_point, write_atomic


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
    """The final weights: checked finite, tested, the merge checked (and the merged model tested where
    ``tests_merged`` says), the adapter files written; the result."""
    tc, tuner, test_split = s.tc, built.tuner, data.splits.test
    rss_train = built.rss.peak_above_baseline()  # before the merged copies made for testing
    bad = [name for name, p in tuner.trainable_parameters().items() if not bool(torch.isfinite(p).all())]
    if bad:  # the last update made them non-finite: no loss saw it
        raise Diverged(
            f"non-finite trainable weights after step {pos.step} ({bad[0]}{' and others' if bad[1:] else ''})"
        )
    val = last_val or evaluate(
        built.model, data.val_loader, tc.eval_batch_size, s.device, tc.precision, "val", progress=s.progress
    )
    if tc.test:
        test = evaluate(
            built.model,
            test_split,
            tc.eval_batch_size,
            s.device,
            tc.precision,
            "test",
            s.cfg.data.num_workers,
            s.progress,
        )
    else:  # a tuning trial: chosen on validation, the test split stays unseen (merge checked on val)
        test_split, test = data.splits.val, not_evaluated()
    for split, numbers in (("val", val), ("test", test)):
        if numbers["loss"] is not None and not math.isfinite(numbers["loss"]):  # None: no val split
            raise Diverged(f"non-finite {split} loss ({numbers['loss']}) of the final weights (step {pos.step})")
    base = base_perplexity(s, data) if tc.test and test.get("perplexity") is not None else None
    merged_test = merge = None
    # the deployable model: merged (re-quantized on a quantized base); None where the method's modules
    # cannot fold into the base weights (adapters, prompts): nothing to test merged, no merge to check. Merged at
    # full fp32, as the merge check merges (TF32 off), so that the check compares this very model: one merge a run
    with full_fp32():
        deployable = tuner.merged_model(quantized=tuner.quantized) if tuner.is_adapter else None
    if deployable is not None:  # a trial's merge is checked on val, not timed (nothing reads a trial's time)
        repeats = MERGE_TIMING_REPEATS if tc.test and not in_study(state) else 0
        merge = check_merge(tuner, test_split, s.device, repeats=repeats, deployable=deployable)
        if tc.test and tests_merged(tc.merged_test, tuner, deployable, merge):
            merged_test = evaluate(
                deployable.to(s.device),
                test_split,
                tc.eval_batch_size,
                s.device,
                tc.precision,
                "merged test",
                s.cfg.data.num_workers,
                s.progress,
            )
        del deployable
    if merge is not None and not math.isfinite(merge["max_abs_diff"]):
        raise Diverged(f"non-finite merge check (max |diff| {merge['max_abs_diff']}) of the final weights")
    write_adapter(tuner, s.run_dir, peft_header(s.cfg, data.spec, data.num_classes, data.splits.info.class_names))
    if writes_generations(s.cfg):  # a causal LM's greedy replies to the first validation prompts
        replies = generations(built.model, data.splits.val, data.spec.tokenizer, s.cfg.data.max_length, s.device)
        write_generations(s.run_dir, replies)
    if not tc.test and val["predictions"] is not None:  # a tuning trial: how sure its search's choice is
        write_predictions(s.run_dir / VAL_PREDICTIONS, val["predictions"])
    if not tc.test and val.get("losses") is not None:  # a causal LM's trial: its sequences' NLL and tokens
        write_losses(s.run_dir / VAL_LOSSES, *val["losses"])
    kill_point("adapter")
    evaluations = {"val": val, "test": test, "merged_test": merged_test, "merge": merge, "base": base}
    return result_record(s, data, built, opt, pos, monitor, state, evaluations, rss_train)


def tests_merged(option: str, tuner, deployable: torch.nn.Module, merge: dict) -> bool:
    """Whether the merged model gets its own test pass (``train.merged_test``): always, or (auto) where the merge
    rounds its weights (a quantized base re-quantized, QLoRA's; weights stored narrower than fp32) or the merge
    check found it off. An exact merge (fp32 weights, QA-LoRA's zeros) that the check found within its tolerance
    scores the unmerged model's test top-1 up to near-ties: another pass over the test split would say so again."""
    if option == "always" or not merge["ok"] or merge.get("requantized_ok") is False:
        return True
    if tuner.quantized and not tuner.exact_quantized_merge:
        return True
    return any(p.is_floating_point() and p.element_size() < 4 for p in deployable.parameters())


MERGE_TIMING_REPEATS = 5  # the merged and the adapter forward, interleaved, of a run trained alone


def in_study(state: RunState) -> bool:
    """Whether a study's executor trains the run: its runs share the machine, so their merge is checked, not timed
    (a forward timed against another beside it measures the other; ``peftlab bench`` times merged inference, P4)."""
    return bool((state.execution or {}).get("executor"))


def base_perplexity(s: Setting, data: Data) -> dict:
    """A causal LM's test perplexity of its base alone (model.path's float weights, no adapter, no step), on the
    run's own test tokens: the report's base row, beside which each configuration's gain is read. One more pass
    over the test split (its numbers: ``perplexity`` and ``seconds``, counted in the run's test passes)."""
    from peftlab.models.backbones import build_backbone

    base = build_backbone(s.cfg.model, data.num_classes).to(s.device)
    tc = s.tc
    try:
        return evaluate(
            base, data.splits.test, tc.eval_batch_size, s.device, tc.precision, "base test", s.cfg.data.num_workers
        )
    finally:
        del base


def write_adapter(tuner, run_dir: Path, header: dict[str, str] | None = None) -> None:
    """adapter.safetensors, PEFT's adapter_config.json + adapter_model.safetensors (``header``: the head's
    ``class_names``, the base and its preprocessing: ``export.peft_header``), and the rank reallocations of
    adaptive-rank methods (importance.jsonl)."""
    adapter = tuner.adapter_state_dict()
    write_safetensors(run_dir / "adapter.safetensors", adapter)
    write_peft_adapter(tuner, run_dir, header)  # PEFT loads them
    records = tuner.importance_records()
    if records:
        write_atomic(
            run_dir / "importance.jsonl",
            lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in records)),
        )


def write_predictions(path: Path, predictions: torch.Tensor) -> None:
    """Each example's label and predicted class ((2, N) int64), as a numpy structured array with no objects
    (``np.load(allow_pickle=False)`` reads it)."""
    record = np.empty(predictions.shape[1], dtype=PREDICTION_FIELDS)
    record["label"], record["predicted"] = predictions.numpy()
    write_record(path, record)


def write_losses(path: Path, nll: torch.Tensor, tokens: torch.Tensor) -> None:
    """Each sequence's summed token NLL (float64) and scored tokens (int64), as a numpy structured array with no
    objects (``np.load(allow_pickle=False)`` reads it): exp(sum of nll / sum of tokens) is the split's perplexity."""
    record = np.empty(len(nll), dtype=LOSS_FIELDS)
    record["nll"], record["tokens"] = nll.numpy(), tokens.numpy()
    write_record(path, record)


def write_record(path: Path, record: np.ndarray) -> None:
    """``record`` as a .npy file at ``path``, written atomically, without pickle."""

    def save(tmp: str) -> None:
        with open(tmp, "wb") as file:  # np.save given a name would append ".npy" to the temporary one
            np.save(file, record, allow_pickle=False)

    write_atomic(path, save)


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
    """result.json of a completed run (its keys: peftlab.training.run_result)."""
    tuner, val, test, merged_test = built.tuner, evaluations["val"], evaluations["test"], evaluations["merged_test"]
    final = tuner.parameter_counts()
    scores = metrics_record(val, test, merged_test, pos.best_val)
    base = evaluations.get("base")
    if base is not None:  # a causal LM's base alone on the test tokens
        scores["base_test_perplexity"] = base["perplexity"]
    return RunResult(
        status="completed",
        error=None,
        step=pos.step,
        config=to_dict(s.cfg),
        metrics=scores,
        per_class=test["per_class"],  # None: a causal LM, or a tuning trial's unseen test split
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
        timing=timing(
            pos,
            test,
            sum(passed["seconds"] for passed in (test, merged_test, base) if passed),
            state.started,
            state.earlier_wall_seconds,
            text=getattr(data.spec, "img_size", None) is None,
        ),
        warnings=tuner.warnings()
        + merge_warnings(evaluations["merge"])
        + slow_validation(
            pos.val_seconds, pos.train_seconds, len(data.splits.val), text=getattr(data.spec, "img_size", None) is None
        ),
        auto_batch=state.auto_batch,
        merge=evaluations["merge"],
        quantization=tuner.quantization_report(),  # QA-LoRA: format, groups, error per layer
        protocol=protocol_card(
            s.cfg,
            data.splits.info.split_sources,
            getattr(data.spec, "img_size", None),  # a text model's spec has tokens, not pixels
            getattr(data.spec, "mean", None),
            getattr(data.spec, "std", None),
            {**final, "head": head_count(tuner)},
            steps=pos.step,
            epochs_bound=epochs_bound(s.tc, data.batches_per_epoch),
            pair_join=data.splits.info.pair_join,
        ),
        provenance=state.provenance,
        execution=state.execution,
        **summarize(
            monitor, s.log.records(), train_seconds=pos.train_seconds
        ),  # health, monitors, convergence, frozen_base
    )


def metrics_record(val: dict, test: dict, merged_test: dict | None, best_val: float) -> Metrics:
    """result.json's metrics of the final weights' evaluations (``peftlab.training.run_result.Metrics``)."""
    return Metrics(
        test_top1=test["top1"],
        test_top5=test["top5"],
        val_top1=val["top1"],
        best_val_top1=None if val["top1"] is None else max(best_val, val["top1"]),
        test_loss=test["loss"],
        merged_test_top1=merged_test["top1"] if merged_test else None,
        test_f1=test.get("f1"),
        test_matthews=test.get("matthews"),
        test_perplexity=test.get("perplexity"),
        val_f1=val.get("f1"),
        val_matthews=val.get("matthews"),
        val_perplexity=val.get("perplexity"),
    )


def timing(pos: Position, test: dict, test_seconds: float, started: float, earlier: float | None, text: bool) -> Timing:
    """The run's seconds and throughput: a text run's in tokens (padding left out), an image run's in images;
    ``test_seconds``: its test passes' (the merged model's and a causal LM's base alone too); ``earlier``: the wall
    seconds of its processes before this one (None: it resumed from no checkpoint)."""
    train = pos.tokens_seen if text else pos.images_seen
    per_second = train / pos.train_seconds if pos.train_seconds else None
    return Timing(
        train_seconds=pos.train_seconds,
        train_images_per_second=None if text else per_second,
        eval_images_per_second=None if text else test["examples_per_second"],
        train_tokens_per_second=per_second if text else None,
        eval_tokens_per_second=test["tokens_per_second"],
        val_seconds=pos.val_seconds,
        test_seconds=test_seconds,
        wall_seconds=time.perf_counter() - started,
        earlier_wall_seconds=round(earlier or 0.0, 3),
    )


def epochs_bound(tc, batches_per_epoch: int) -> bool:
    """Whether train.epochs bounded the run (``recipe.load_data``'s total steps), not train.max_steps."""
    return tc.max_steps is None or math.ceil(batches_per_epoch / tc.grad_accum) * tc.epochs <= tc.max_steps


def head_count(tuner) -> int:
    return sum(p.numel() for n, p in tuner.trainable_parameters().items() if is_head_param(n, tuner.head))


SLOW_VALIDATION_SECONDS = 30.0


def slow_validation(val_seconds: float, train_seconds: float, val_examples: int, text: bool = False) -> list[str]:
    """A warning when validation took longer than training (a small train_subset with the full
    10% validation split, say): ``data.val_subset`` or fewer evaluations make the run faster.
    Under ``SLOW_VALIDATION_SECONDS`` of validation it is not worth a line: a short run's two
    timings are noise, and the line would come and go with the machine's load."""
    if val_seconds <= max(train_seconds, SLOW_VALIDATION_SECONDS):
        return []
    return [
        f"validation took {val_seconds:.1f} s, longer than training ({train_seconds:.1f} s): set data.val_subset "
        f"(now {val_examples} {'examples' if text else 'images'}) or evaluate less often (train.eval_every)"
    ]
