"""``peftlab summary RUN_DIR ...``: one line per run directory (status, accuracy, parameters, training time, the
merge check), or one JSON object per run with ``--json``; what ``peftlab train`` prints at a run's end."""

from __future__ import annotations

import json
from pathlib import Path

from peftlab.cli.terminal import printable


def summarize_result(result: dict, run_dir: Path) -> str:
    from peftlab.training.run_result import metric_damage, status_of

    if status_of(result) == "damaged":  # never shown as a result: the study trains it again
        return f"{run_dir}: damaged: result.json: {metric_damage(result)[0]} (the study trains it again)"
    if result["status"] != "completed":
        return f"{run_dir}: {result['status']}: {result['error']}"
    p = result["params"]
    text = (
        f"{run_dir}: completed  {accuracy(result['metrics'])}  "
        f"trainable {p['trainable']:,} / {p['total']:,} ({100 * p['trainable_ratio']:.2f}%)  "
        f"train {result['timing']['train_seconds']:.1f}s"
    )
    if result.get("merge"):
        text += f"  merge max|diff| {result['merge']['max_abs_diff']:.2e}"
    return text


def summary_record(result: dict | None, run_dir: Path) -> dict:
    """``summary --json``'s object for one run: its status (``damaged``/``unreadable`` as the lines say), error,
    metrics, trainable and total parameters, training seconds and the merge check's largest difference."""
    from peftlab.training.run_result import metric_damage, status_of

    if result is None:
        return {"run_dir": str(run_dir), "status": "unreadable", "error": "no readable result.json"}
    status = status_of(result)
    params, timing, merge = (
        result.get(k) if isinstance(result.get(k), dict) else {} for k in ("params", "timing", "merge")
    )
    return {
        "run_dir": str(run_dir),
        "status": status,
        "error": f"result.json: {metric_damage(result)[0]}" if status == "damaged" else result.get("error"),
        "metrics": result.get("metrics") if status == "completed" else None,
        "trainable": params.get("trainable"),
        "total": params.get("total"),
        "train_seconds": timing.get("train_seconds"),
        "merge_max_abs_diff": merge.get("max_abs_diff"),
    }


def accuracy(metrics: dict) -> str:
    """A tested run's test top-1 (and top-5, and a causal LM's perplexity); a tuning trial's validation
    top-1 (and perplexity): a trial runs with train.test=false, its test split unseen (chosen on validation only)."""
    if metrics["test_top1"] is not None:
        top5 = f"  top-5 {100 * metrics['test_top5']:.2f}%" if metrics.get("test_top5") is not None else ""
        return f"test top-1 {100 * metrics['test_top1']:.2f}%{top5}{_perplexity(metrics, 'test')}"
    val = metrics.get("val_top1")
    return (
        f"val top-1 {100 * val:.2f}%{_perplexity(metrics, 'val')}" if val is not None else "no val split"
    ) + ", not tested (a tuning trial: train.test=false)"


def _perplexity(metrics: dict, split: str) -> str:
    value = metrics.get(f"{split}_perplexity")  # a causal LM's, by which its study is judged
    return f"  perplexity {value:.1f}" if value is not None else ""


def add_summary(sub) -> None:
    p = sub.add_parser("summary", help="one line per run directory: status, accuracy, parameters")
    p.add_argument("run_dirs", nargs="+", help="run directories")
    p.add_argument("--json", action="store_true", help="print one JSON object per run (run_dir, status, metrics, ...)")
    p.set_defaults(func=cmd_summary)


def cmd_summary(args) -> int:
    from peftlab.training.run_result import read_result, status_of

    status = 0
    for run_dir in map(Path, args.run_dirs):
        result = read_result(run_dir)
        if args.json:  # what the lines say, as JSON (json.dumps escapes every control character)
            print(json.dumps(summary_record(result, run_dir)))
            status = status or int(result is None or status_of(result) != "completed")
            continue
        if result is None:
            print(printable(f"{run_dir}: no readable result.json"))
            status = 1
            continue
        try:
            print(printable(summarize_result(result, run_dir)))  # a received status or error: escapes shown
        except (KeyError, TypeError, ValueError):
            print(printable(f"{run_dir}: result.json is incomplete or corrupt"))
            status = 1
            continue
        status = status or int(status_of(result) != "completed")
    return status
