"""Whether this machine reproduced a study file's header: its "Expected result" rows (``#   name  74.73%
[73.10, 75.85] ...``, a configuration's mean test top-1 over its seeds) against the means of the study's
``report/results.csv``, in one line. ``make study`` (scripts/default-study.sh) ends with it:

    python -m peftlab.analysis.results.reproduced configs/studies/default.yaml runs/default
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from peftlab.utils.errors import UserError

# "#   lora (r=8)        70.19% [69.60, 71.05]  2.12%": the name (a parenthesis after it is a note), the mean
HEADER_ROW = re.compile(r"^#\s+(?P<name>\S.*?)\s+(?P<mean>\d+\.\d+)% \[\d+\.\d+, \d+\.\d+\]")
NOTE = re.compile(r"\s+\([^)]*\)$")


def header_means(study_file: Path) -> dict[str, float]:
    """The header's rows: configuration -> mean test top-1 in percent, in the header's order."""
    rows = {}
    for line in study_file.read_text().splitlines():
        if not line.startswith("#"):
            break  # the header is the comment block the file starts with
        found = HEADER_ROW.match(line)
        if found:
            rows[NOTE.sub("", found["name"])] = float(found["mean"])
    return rows


def measured_means(results_csv: Path) -> dict[str, float]:
    """The completed runs' mean test top-1 per configuration, in percent, as the report rounds it."""
    df = pd.read_csv(results_csv)
    done = df[df["status"] == "completed"] if "status" in df else df.iloc[0:0]
    if "metrics.test_top1" not in done:
        return {}
    return {
        str(k): round(100 * v, 2) for k, v in done.groupby("variant", sort=False)["metrics.test_top1"].mean().items()
    }


def reproduced_line(study_file: str | Path, study_dir: str | Path) -> str:
    """One line: reproduced (every header row's mean equal to two decimals), or which rows moved and by how
    much, and which the study did not complete."""
    study_file, results = Path(study_file), Path(study_dir) / "report" / "results.csv"
    expected = header_means(study_file)
    if not expected:
        raise UserError(f"{study_file}: its header holds no expected rows ('#   name  74.73% [min, max]')")
    if not results.is_file():
        raise UserError(f"{results} is missing: expected the study's report (peftlab report {study_dir})")
    measured = measured_means(results)
    moved = [
        f"{name} {mean:.2f} -> {measured[name]:.2f} ({measured[name] - mean:+.2f})"
        for name, mean in expected.items()
        if name in measured and abs(measured[name] - mean) >= 0.005
    ]
    missing = [name for name in expected if name not in measured]
    if not moved and not missing:
        return (
            f"Reproduced: the mean test top-1 of all {len(expected)} rows of {study_file}'s header came out the same "
            "on this machine."
        )
    parts = (
        [f"{len(moved)} of {len(expected)} rows moved (header -> here, points): " + "; ".join(moved)] if moved else []
    )
    if missing:
        parts.append("not completed here: " + ", ".join(missing))
    return f"Not reproduced: {study_file}'s header against this machine: " + "; ".join(parts) + "."


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
