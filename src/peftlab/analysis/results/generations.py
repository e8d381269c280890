"""The report's "Generations" section: each configuration's greedy replies to the same validation prompts, as its
runs wrote them (generations.jsonl: ``peftlab.training.evaluate.generations``; causal LMs on instruction data only).

One run per configuration, its lowest seed's: greedy decoding is deterministic, so another seed's replies differ
only by its weights. A prompt is shown once, with the reference reply of the data, then each configuration's reply
and why it stopped where it did not end with the end-of-sequence token. Text leaves through ``markdown_text``.
"""

from __future__ import annotations

import json
from pathlib import Path

from peftlab.analysis.results.escape import markdown_text
from peftlab.analysis.results.load import read_spec, run_dirs
from peftlab.analysis.results.units import display_name
from peftlab.training.run_result import GENERATIONS, read_result, status_of
from peftlab.utils.files import read_lines

ROW_KEYS = {"index": int, "prompt": str, "reference": str, "reply": str, "new_tokens": int, "stopped": str}
STOPPED = {"max_new_tokens": "stopped at its token limit", "max_length": "stopped at data.max_length"}


def read_generations(run_dir: Path) -> list[dict] | None:
    """A run's generations.jsonl rows; None where it wrote none or a line is not such a row (a damaged file is
    left out, not half shown)."""
    lines = read_lines(run_dir / GENERATIONS, "run directory entry")
    if not lines:
        return None
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not isinstance(row, dict) or not all(type(row.get(k)) is kind for k, kind in ROW_KEYS.items()):
            return None
        rows.append(row)
    return rows


def first_seed_generations(study_dir: Path) -> dict[str, tuple[int, list[dict]]]:
    """Configuration (variant) -> (seed, rows) of its completed run of the lowest seed that wrote generations."""
    found: dict[str, tuple[int, list[dict]]] = {}
    for run_dir in run_dirs(Path(study_dir)):
        spec, result = read_spec(run_dir), read_result(run_dir)
        if not result or status_of(result) != "completed" or not isinstance(spec.get("seed"), int):
            continue
        variant, seed = str(spec.get("variant")), spec["seed"]
        if variant in found and found[variant][0] <= seed:
            continue
        rows = read_generations(run_dir)
        if rows:
            found[variant] = (seed, rows)
    return found


def report_section(study_dir: str | Path, labels: dict | None = None) -> list[str]:
    """The "Generations" section; [] where no run wrote generations."""
    found = first_seed_generations(Path(study_dir))
    if not found:
        return []
    seeds = sorted({seed for seed, _ in found.values()})
    prompts: dict[int, dict] = {}
    for _, rows in found.values():
        for row in rows:
            prompts.setdefault(row["index"], row)
    lines = [
        "## Generations",
        "",
        f"Greedy replies (no sampling) to the first {len(prompts)} validation prompts, from each configuration's run "
        f"of seed {', '.join(map(str, seeds))}, as the runs wrote them ({GENERATIONS}).",
        "",
    ]
    for index in sorted(prompts):
        lines += [
            f"**Prompt {index + 1}.** {markdown_text(prompts[index]['prompt'])}",
            "",
            f"- reference: {markdown_text(prompts[index]['reference'])}",
        ]
        for variant, (_, rows) in found.items():
            row = next((row for row in rows if row["index"] == index), None)
            if row is None:
                continue
            note = f" ({STOPPED[row['stopped']]})" if row["stopped"] in STOPPED else ""
            lines.append(f"- {markdown_text(display_name(variant, None, labels))}: {markdown_text(row['reply'])}{note}")
        lines.append("")
    return lines
