"""Whether this machine reproduced a study file's header: its "Expected result" rows (``#   name  74.73%
[73.10, 75.85] ...``, a configuration's mean test top-1 over its seeds and their range) against the means of
the study's ``report/results.csv``, in one line. ``make study`` (scripts/default-study.sh) ends with it:

    python -m peftlab.analysis.results.reproduced configs/studies/default.yaml runs/default

The header may name the machine class its numbers came from (``# Machine class: AMD CPU, arithmetic pinned
(MKL AVX2), 1 thread a run, torch 2.14.1``, ``machine_class_text``): the same bits are promised only within
it. The line names this machine's class (read from the runs' result.json) and, where rows moved, says by the
rule for another class whether each moved mean still lies within the header's range over its seeds.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from peftlab.analysis.results.load import read_result, run_dirs
from peftlab.analysis.results.record import machine_class, machine_class_text
from peftlab.utils.errors import UserError

# "#   lora (r=8)        70.19% [69.60, 71.05]  2.12%": the name (a parenthesis after it is a note), mean, range
HEADER_ROW = re.compile(r"^#\s+(?P<name>\S.*?)\s+(?P<mean>\d+\.\d+)% \[(?P<low>\d+\.\d+), (?P<high>\d+\.\d+)\]")
NOTE = re.compile(r"\s+\([^)]*\)$")
CLASS_LINE = re.compile(r"^#\s*Machine class:\s*(?P<text>.+?)\.?\s*$")


def header_lines(study_file: Path) -> list[str]:
    """The comment block the study file starts with."""
    lines = []
    for line in study_file.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def header_rows(study_file: Path) -> dict[str, tuple[float, float, float]]:
    """The header's rows: configuration -> (mean, lowest, highest seed) of test top-1 in percent, in order."""
    rows = {}
    for line in header_lines(study_file):
        found = HEADER_ROW.match(line)
        if found:
            rows[NOTE.sub("", found["name"])] = (float(found["mean"]), float(found["low"]), float(found["high"]))
    return rows


def header_means(study_file: Path) -> dict[str, float]:
    """The header's rows: configuration -> mean test top-1 in percent, in the header's order."""
    return {name: row[0] for name, row in header_rows(study_file).items()}


def header_class(study_file: Path) -> str | None:
    """The machine class the header says its numbers came from, or None where it names none."""
    for line in header_lines(study_file):
        found = CLASS_LINE.match(line)
        if found:
            return found["text"]
    return None


def measured_means(results_csv: Path) -> dict[str, float]:
    """The completed runs' mean test top-1 per configuration, in percent, as the report rounds it."""
    df = pd.read_csv(results_csv)
    done = df[df["status"] == "completed"] if "status" in df else df.iloc[0:0]
    if "metrics.test_top1" not in done:
        return {}
    return {
        str(k): round(100 * v, 2) for k, v in done.groupby("variant", sort=False)["metrics.test_top1"].mean().items()
    }


def runs_classes(study_dir: Path) -> list[str]:
    """The machine classes (in words) of the study's runs that recorded one, each once, in run order."""
    if not (study_dir / "runs").is_dir():
        return []
    found = []
    for run_dir in run_dirs(study_dir):
        result = read_result(run_dir)
        if result.get("provenance"):
            text = machine_class_text(machine_class(result))
            found += [text] if text not in found else []
    return found


def class_words(study_file: Path, study_dir: Path) -> tuple[str, bool]:
    """(" (this machine's class)", with the header's where it differs; whether the classes differ)."""
    mine, theirs = runs_classes(study_dir), header_class(study_file)
    if not mine:
        return "", False
    if theirs is None or mine == [theirs]:
        return f" ({'; '.join(mine)})", False
    return f" ({'; '.join(mine)}, not the header's class: {theirs}; the same bits are promised only within it)", True


def reproduced_line(study_file: str | Path, study_dir: str | Path) -> str:
    """One line: reproduced (every header row's mean equal to two decimals), or which rows moved, by how much
    and whether within the header's range over seeds, and which the study did not complete. On another
    machine class, rows that all moved within their range are said to agree by that rule, not to reproduce."""
    study_file, study_dir = Path(study_file), Path(study_dir)
    results = study_dir / "report" / "results.csv"
    expected = header_rows(study_file)
    if not expected:
        raise UserError(f"{study_file}: its header holds no expected rows ('#   name  74.73% [min, max]')")
    if not results.is_file():
        raise UserError(f"{results} is missing: expected the study's report (peftlab report {study_dir})")
    measured = measured_means(results)
    here, other_class = class_words(study_file, study_dir)
    moved = {name: row for name, row in expected.items() if name in measured and abs(measured[name] - row[0]) >= 0.005}
    missing = [name for name in expected if name not in measured]
    if not moved and not missing:
        rows = f"all {len(expected)} rows of {study_file}'s header"
        return f"Reproduced: the mean test top-1 of {rows} came out the same on this machine{here}."
    shifts = "; ".join(
        f"{name} {row[0]:.2f} -> {measured[name]:.2f} ({measured[name] - row[0]:+.2f})" for name, row in moved.items()
    )
    outside = [name for name, (_, low, high) in moved.items() if not low <= measured[name] <= high]
    parts = [f"{len(moved)} of {len(expected)} rows moved (header -> here, points): {shifts}"] if moved else []
    if moved:
        within = "every moved mean lies within the header's range over its seeds"
        parts.append(f"outside the header's range over its seeds: {', '.join(outside)}" if outside else within)
    if missing:
        parts.append("not completed here: " + ", ".join(missing))
    agrees = other_class and not outside and not missing
    verdict = "Agrees by the seeds' range, not bit for bit" if agrees else "Not reproduced"
    return f"{verdict}: {study_file}'s header against this machine{here}: " + "; ".join(parts) + "."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_file")
    parser.add_argument("study_dir")
    args = parser.parse_args(argv)
    try:
        print(reproduced_line(args.study_file, args.study_dir))
    except UserError as err:
        print(f"peftlab: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
