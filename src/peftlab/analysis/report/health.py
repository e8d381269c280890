"""Training health of a study, from its run files (pandas and matplotlib only; never torch).

Reads what the monitors wrote: result.json's ``health``, ``convergence``, ``frozen_base``
and ``monitors`` sections, and each run's ``monitors.jsonl`` (gradient norms over training).

- ``load_health``: one row per finished run: verdict, flag counts, convergence, frozen base.
- ``load_rank_use``: one row per (run, adapted layer): effective rank / r and friends, at
  the end of training.
- ``load_gradient_flow``: per (run, step, layer) gradient norm, one seed per configuration.
- ``report_section``: the report's "Training health" section, figures included (drawn by
  health_figures.py: ``plot_rank_utilisation``, ``plot_gradient_flow``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from peftlab.analysis.figures.health import plot_gradient_flow, plot_rank_utilisation
from peftlab.analysis.results.escape import markdown_code, markdown_text
from peftlab.analysis.results.load import read_spec, run_dirs
from peftlab.training.run_result import read_result, status_of
from peftlab.utils.files import read_lines

HEALTH_COLUMNS = [
    "run_id",
    "variant",
    "method",
    "seed",
    "status",
    "verdict",
    "exploding",
    "vanishing",
    "first_exploding",
    "first_vanishing",
    "flagged_groups",
    "converged",
    "gain_last_window",
    "convergence_reason",
    "steps_to_95",
    "final_step",
    "frozen_equal",
    "frozen_rebuilt_equal",
    "monitor_share",
    "merge_ok",
    "merge_max_abs_diff",
    "merge_tolerance",
]


def _runs(study_dir: Path):
    """(run_dir, spec, result) of every run with a result.json."""
    for run_dir in run_dirs(Path(study_dir)):
        spec, result = read_spec(run_dir), read_result(run_dir)
        if result:
            yield run_dir, spec, result


def load_health(study_dir: str | Path) -> pd.DataFrame:
    rows = []
    for _, spec, result in _runs(Path(study_dir)):
        health = result.get("health") or {}
        conv = result.get("convergence") or {}
        frozen = result.get("frozen_base") or {}
        merge = result.get("merge") if isinstance(result.get("merge"), dict) else {}
        counts, first = health.get("counts") or {}, health.get("first_step") or {}
        groups = health.get("groups") or {}
        rows.append(
            {
                "run_id": spec["run_id"],
                "variant": spec["variant"],
                "method": spec["method"],
                "seed": spec["seed"],
                "status": status_of(result),
                "verdict": health.get("verdict"),
                "exploding": counts.get("exploding"),
                "vanishing": counts.get("vanishing"),
                "first_exploding": first.get("exploding"),
                "first_vanishing": first.get("vanishing"),
                "flagged_groups": ", ".join(sorted({g for flag in groups.values() for g in flag})),
                # no verdict without a validation curve: result files written before the monitor said None
                # there recorded false beside a reason that says there was nothing to judge
                "converged": conv.get("converged") if conv.get("gain_last_window") is not None else None,
                "gain_last_window": conv.get("gain_last_window"),
                "convergence_reason": conv.get("reason"),
                "steps_to_95": (conv.get("steps_to") or {}).get("95"),
                "final_step": result.get("step"),
                "frozen_equal": frozen.get("equal"),
                "frozen_rebuilt_equal": frozen.get("rebuilt_equal"),
                "monitor_share": (result.get("monitors") or {}).get("share_of_train_seconds"),
                "merge_ok": merge.get("ok") if merge.get("requantized_ok") is not False else False,
                "merge_max_abs_diff": merge.get("max_abs_diff"),
                "merge_tolerance": merge.get("tolerance"),
            }
        )
    return pd.DataFrame(rows, columns=HEALTH_COLUMNS)


def load_rank_use(study_dir: str | Path) -> pd.DataFrame:
    rows = []
    for _, spec, result in _runs(Path(study_dir)):
        if status_of(result) != "completed":
            continue
        final = (result.get("ranks") or {}).get("final") or {}  # a rank controller's allocation
        for layer, stats in ((result.get("monitors") or {}).get("adapters") or {}).items():
            r = stats.get("r_allocated", final.get(layer, stats["r"]))  # ranks in use, else the built rank
            rows.append(
                {
                    "run_id": spec["run_id"],
                    "variant": spec["variant"],
                    "method": spec["method"],
                    "seed": spec["seed"],
                    "layer": layer,
                    "r": r,
                    "effective_rank": stats["effective_rank"],
                    "rank_ratio": stats["effective_rank"] / r if r else 0.0,
                    "rank90": stats["rank90"],
                    "stable_rank": stats["stable_rank"],
                    "norm_update": stats["norm_update"],
                }
            )
    columns = [
        "run_id",
        "variant",
        "method",
        "seed",
        "layer",
        "r",
        "effective_rank",
        "rank_ratio",
        "rank90",
        "stable_rank",
        "norm_update",
    ]
    return pd.DataFrame(rows, columns=columns)


def block_label(group: str) -> str:
    """The layer a gradient group belongs to: ``blocks.3``, or ``head``, ``patch_embed``, ..."""
    match = re.search(r"(?:^|\.)((?:blocks|layers|layer)\.\d+)(?=\.|$)", group)
    return match.group(1) if match else group.split(".")[0]


def load_gradient_flow(study_dir: str | Path, one_seed: bool = True) -> pd.DataFrame:
    """Gradient norm per (run, step, layer): the groups of one layer combined as sqrt(sum of
    squares). ``one_seed``: only the lowest seed of each configuration."""
    runs = [(d, s, r) for d, s, r in _runs(Path(study_dir)) if status_of(r) == "completed"]
    if one_seed:
        lowest: dict[str, int] = {}
        for _, spec, _ in runs:
            lowest[spec["variant"]] = min(lowest.get(spec["variant"], spec["seed"]), spec["seed"])
        runs = [(d, s, r) for d, s, r in runs if s["seed"] == lowest[s["variant"]]]
    rows, damaged = [], {}
    for run_dir, spec, _ in runs:
        for number, line in enumerate(read_lines(run_dir / "monitors.jsonl", "run directory entry") or [], 1):
            record = monitor_record(line)
            if record is None:  # not a monitor record of this shape: counted, and said where the figure is
                damaged.setdefault(spec["run_id"], []).append(number)
                continue
            if record.get("kind") != "monitors":
                continue
            squares: dict[str, float] = {}
            for group, norm in record["grad"].items():
                layer = block_label(group)
                squares[layer] = squares.get(layer, 0.0) + norm * norm
            rows += [
                {
                    "run_id": spec["run_id"],
                    "variant": spec["variant"],
                    "method": spec["method"],
                    "seed": spec["seed"],
                    "step": record["step"],
                    "layer": layer,
                    "grad_norm": math.sqrt(sq),
                }
                for layer, sq in squares.items()
            ]
    flow = pd.DataFrame(rows, columns=["run_id", "variant", "method", "seed", "step", "layer", "grad_norm"])
    flow.attrs["damaged_lines"] = damaged  # run id -> the line numbers of monitors.jsonl left out
    return flow


def monitor_record(line: str) -> dict | None:
    """A line of monitors.jsonl as a record: a JSON object; a ``monitors`` record with an integer ``step`` and a
    ``grad`` of finite non-negative numbers by group. None for a damaged line (cut short, of another shape)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if record.get("kind") != "monitors":
        return record
    step, grad = record.get("step"), record.get("grad")
    if not isinstance(step, int) or isinstance(step, bool) or not isinstance(grad, dict):
        return None
    sound = all(
        isinstance(norm, int | float) and not isinstance(norm, bool) and math.isfinite(norm) and norm >= 0
        for norm in grad.values()
    )
    return record if sound else None


def damaged_lines_note(damaged: dict[str, list[int]]) -> str:
    """The damaged lines of monitors.jsonl the gradient-flow figure left out, counted and placed."""
    if not damaged:
        return ""
    total = sum(len(numbers) for numbers in damaged.values())
    shown = "; ".join(
        f"{markdown_code(run_id)} line{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers[:5]))}"
        + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")
        for run_id, numbers in list(damaged.items())[:MAX_LISTED]
    )
    more = f"; and {len(damaged) - MAX_LISTED} more runs" if len(damaged) > MAX_LISTED else ""
    return (
        f"{total} damaged line{'s' if total > 1 else ''} of monitors.jsonl (not a monitor record: cut short, or "
        f"of another shape) left out of the gradient flow: {shown}{more}."
    )


MAX_LISTED = 8  # runs named one by one in the report's lists; more are counted per configuration


def under_training_note(table: pd.DataFrame) -> str:
    """How many runs had not converged, and when most had not, what that means for the numbers.

    Said in the health section and under the convergence figure, where a reader looks at the curves.
    """
    not_converged = int((table["converged"] == False).sum())  # noqa: E712 - None (unknown) is not False
    known = int(table["converged"].notna().sum())
    if not not_converged:
        return ""
    text = f"**{not_converged} of {known} runs did not converge** (val top-1 still rose >= 0.5 pts in their last 25%)"
    if not_converged >= known / 2:
        text += (
            ": the study is under-trained, more steps would still raise accuracy, so its numbers compare "
            "methods at this training budget, not at convergence."
        )
    return text + ("" if text.endswith(".") else ".")


def convergence_caption(study_dir: str | Path) -> str:
    """The under-training note for the convergence figure's caption ("" when runs converged)."""
    table = load_health(study_dir)
    return under_training_note(table[table["converged"].notna()]) if not table.empty else ""


def merge_lines(table: pd.DataFrame) -> list[str]:
    """The merge check of every adapter run: a failure is named, never averaged away."""
    checked = table[table["merge_ok"].notna()]
    if checked.empty:
        return []
    failed = checked[checked["merge_ok"] == False]  # noqa: E712 - element-wise: None (unchecked) is not False
    if failed.empty:
        return [
            f"Merge check: the merged model equals the adapter within tolerance in all {len(checked)} adapter runs.",
            "",
        ]
    lines = [
        f"**Merge check failed in {len(failed)} of {len(checked)} adapter runs**: their merged models are not "
        "the models that were evaluated (`peftlab export --merged` refuses them without --force).",
        "",
    ]
    for row in failed.head(MAX_LISTED).itertuples():
        lines.append(
            f"- {run_named(row)}: max |diff| {row.merge_max_abs_diff:.3g} (tolerance {row.merge_tolerance:.3g})"
        )
    return lines + [""]


def report_section(study_dir: str | Path, figures_dir: Path, labels=None, palette=None) -> list[str]:
    """Markdown lines: health per configuration, runs with warnings, convergence, merge check, frozen base, figures."""
    table = load_health(study_dir)
    merges = merge_lines(table)
    table = table[table["verdict"].notna() | table["converged"].notna()]
    lines = ["## Training health", ""]
    if table.empty:
        return lines + merges + ["No run recorded monitor results (runs from before the monitors existed).", ""]
    lines += [
        "Gradient flow is checked at every log point: a layer's gradient norm (before clipping) above "
        "10x its running median is *exploding*; an exactly-zero gradient, or one below 1e-8 of the "
        "weight's norm, is *vanishing*. A run is *converged* when its val top-1 rose less than 0.5 pts in "
        "the last 25% of its steps.",
        "",
        "| configuration | runs | stable / warnings / unstable | exploding flags | vanishing flags | "
        "converged | val top-1 gain, last 25% (pts) | frozen base unchanged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, group in table.groupby("variant", sort=False):
        verdicts = group["verdict"].value_counts()
        gain = group["gain_last_window"].dropna()
        gain_text = f"{100 * gain.mean():+.2f}" if len(gain) else "n/a"
        judged = int(group["converged"].notna().sum())  # runs without a validation curve have no verdict
        converged = f"{int((group['converged'] == True).sum())} of {judged}" if judged else "no verdict"  # noqa: E712
        name = markdown_text(variant)  # a recorded word: its "|" would split the row
        lines.append(
            f"| {name} | {len(group)} | {verdicts.get('stable', 0)} / {verdicts.get('warnings', 0)} / "
            f"{verdicts.get('unstable', 0)} | {int(group['exploding'].fillna(0).sum())} | "
            f"{int(group['vanishing'].fillna(0).sum())} | {converged} | "
            f"{gain_text} | {int((group['frozen_equal'] == True).sum())} of {len(group)} |"  # noqa: E712 - element-wise
        )
    lines.append("")

    lines += gradient_warning_lines(table) + convergence_lines(table)

    lines += merges
    equal = table["frozen_equal"] == True  # noqa: E712 - None (not recorded) is not True
    lines += [
        f"Frozen base: the SHA-256 of the frozen weights at the end equals the one at the start in "
        f"{int(equal.sum())} of {len(table)} runs"
        + ("." if equal.all() else f"; **changed in {', '.join(table.loc[~equal, 'run_id'])}**."),
        "",
    ]
    share = table["monitor_share"].dropna()
    if len(share):
        lines += [
            f"Monitor cost inside the runs: median {100 * share.median():.2f}% of training time "
            f"(max {100 * share.max():.2f}%).",
            "",
        ]

    lines += health_figure_lines(study_dir, figures_dir, labels, palette)
    return lines + [""]


def gradient_warning_lines(table) -> list[str]:
    """Markdown lines: each run with exploding or vanishing gradient flags, or none."""
    lines = []
    flagged = table[table["verdict"].isin(["warnings", "unstable"])]
    if flagged.empty:
        lines += ["Runs with gradient warnings: none.", ""]
    else:
        lines += ["Runs with gradient warnings:", ""]
        for row in flagged.itertuples():
            flags = [
                f"{flag} {int(count)} (first at step {int(first)})"
                for flag, count, first in (
                    ("exploding", row.exploding, row.first_exploding),
                    ("vanishing", row.vanishing, row.first_vanishing),
                )
                if count
            ]
            lines.append(
                f"- {row.variant} seed {row.seed} [{row.run_id}]: {row.verdict}; {', '.join(flags)}; "
                f"layers: {row.flagged_groups or 'n/a'}"
            )
        lines.append("")
    return lines


def convergence_lines(table) -> list[str]:
    """Markdown lines: whether every run converged, else the ones that did not."""
    lines = []
    not_converged = table[table["converged"] == False]  # noqa: E712 - None (unknown) is not False
    unjudged = table[table["converged"].isna()]
    known = len(table) - len(unjudged)
    if not known:
        lines += ["Convergence: no verdict for any run: " + unjudged_reasons(unjudged), ""]
        return lines
    if not_converged.empty:
        lines += [f"Convergence: all {known} runs with a validation curve converged by that rule.", ""]
    else:
        lines += [f"Convergence: {under_training_note(table)}", ""]
        if len(not_converged) <= MAX_LISTED:
            for row in not_converged.itertuples():
                lines.append(f"- {run_named(row)}: {markdown_text(row.convergence_reason)}")
        else:  # the table above counts them per configuration; the largest gains by name
            lines.append(f"The {MAX_LISTED} runs with the largest gain in their last 25%:")
            lines.append("")
            for row in not_converged.sort_values("gain_last_window", ascending=False).head(MAX_LISTED).itertuples():
                lines.append(f"- {run_named(row)}: {markdown_text(row.convergence_reason)}")
        lines.append("")
    if len(unjudged):
        lines += [f"No convergence verdict for {len(unjudged)} of {len(table)} runs: " + unjudged_reasons(unjudged), ""]
    return lines


def unjudged_reasons(unjudged: pd.DataFrame) -> str:
    """Why runs have no convergence verdict, each reason once with its count (no validation split, too few
    evaluations)."""
    reasons = unjudged["convergence_reason"].fillna("not recorded").value_counts()
    return "; ".join(f"{markdown_text(reason)} ({count} runs)" for reason, count in reasons.items()) + "."


def run_named(row) -> str:
    """A run in a list line: its configuration, seed and id, the recorded words as Markdown text."""
    return f"{markdown_text(row.variant)} seed {row.seed} [{markdown_text(row.run_id)}]"


def health_figure_lines(study_dir: str | Path, figures_dir: Path, labels=None, palette=None) -> list[str]:
    """Markdown lines: the rank-utilisation and gradient-flow figures, or why each is skipped."""
    lines = []
    flow = load_gradient_flow(study_dir)
    for title, paths, reason, caption in (
        (
            "Rank utilisation: effective rank / r per adapted layer",
            plot_rank_utilisation(load_rank_use(study_dir), figures_dir, labels=labels, palette=palette),
            "no LoRA-family run",
            "At the end of training, from the singular values of each layer's scaled update B·A; r is the rank in use "
            "(a rank controller's final allocation, else the configured rank), so a layer left one rank scores 1 by "
            "construction. 1: the update spreads evenly over its r directions; low: a few directions carry it. "
            "Markers: mean over seeds, bars: lowest to highest seed; with more than 6 configurations, a grid of the "
            "means.",
        ),
        (
            "Gradient flow: gradient norm per layer over training (one seed per configuration)",
            plot_gradient_flow(flow, figures_dir, labels=labels, palette=palette),
            "no monitor records",
            "Norm of the trainable gradients per layer before clipping, at every log point, log scale; blocks "
            "coloured by depth, other layers dashed or dotted in grey. The last point is the final log point, "
            "whose batch is the epoch's smaller last one.",
        ),
    ):
        if paths:
            png = next(p for p in paths if str(p).endswith(".png"))
            lines += [f"### {title}", "", f"![{title}](figures/{Path(png).name})", "", caption, ""]
        else:
            lines.append(f"- skipped: {title.split(':')[0].lower()}: {reason}")
    if note := damaged_lines_note(flow.attrs["damaged_lines"]):
        lines += [note, ""]
    return lines
