"""A whole default study's numbers, run by run, against another CPU's record of the same study: whether two
machines gave the same tuning trials and final runs (issue 87: a pin becomes the pin where two vendors' records
agree; the step probe compares three steps a configuration, this the whole study).

    python benchmarks/compare_study.py RECORD_DIR STUDY_DIR            # compare
    python benchmarks/compare_study.py RECORD_DIR STUDY_DIR --write    # record STUDY_DIR into RECORD_DIR

A record is two files: trials.json (each trial's validation top-1, by method and learning rate) and finals.csv
(each final run's test, validation and merged test top-1 by configuration and seed, with its times).
benchmarks/default-study-intel-xeon/candidate-onednn/ is the study under oneDNN's products over the former pin's base
(16f1f32b..., pretrained in MKL's COMPATIBLE branch), made before oneDNN's products became the pin: a tree from before
then (git checkout b4c4f19) reruns it on another CPU, the base cached first:

    .venv/bin/peftlab pretrain
    PEFTLAB_PIN_PRODUCTS=onednn .venv/bin/peftlab study configs/studies/default.yaml --study-dir runs/candidate \\
        --workers 2 --report
    .venv/bin/python benchmarks/compare_study.py benchmarks/default-study-intel-xeon/candidate-onednn runs/candidate

(Today's tree trains a base of the pin's own products, whose study the header of configs/studies/default.yaml
records.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

MERGED = "metrics.merged_test_top1"  # null where a run did not test its merged model (train.merged_test auto)
SCORES = ["metrics.test_top1", "metrics.val_top1", MERGED]
COLUMNS = ["variant", "seed", "run_id", *SCORES, "timing.train_seconds", "timing.val_seconds", "timing.wall_seconds"]


def trial_scores(study: Path) -> dict[str, float]:
    """Each tuning trial's validation top-1, keyed "method lr=..."."""
    scores = {}
    for path in sorted(study.glob("tune/*/runs/*/result.json")):
        result = json.loads(path.read_text())
        method = path.relative_to(study / "tune").parts[0]
        scores[f"{method} lr={result['config']['train']['lr']:.6g}"] = result["metrics"].get("val_top1")
    return dict(sorted(scores.items()))


def final_scores(study: Path) -> pd.DataFrame:
    """The final runs' scores and times, from the report's results.csv (``--report`` writes it)."""
    table = study / "report" / "results.csv"
    if not table.is_file():
        sys.exit(f"compare_study: {table} is missing: run the study with --report")
    return pd.read_csv(table)[COLUMNS].sort_values(["variant", "seed"]).reset_index(drop=True)


def compare(record: Path, study: Path) -> int:
    """Prints the trials and final runs that differ from the record, and a line for each; 0 when all are equal."""
    missing = [name for name in ("trials.json", "finals.csv") if not (record / name).is_file()]
    if missing:
        sys.exit(f"compare_study: {record} holds no record ({' and '.join(missing)} missing): name a folder with both")
    theirs, mine = json.loads((record / "trials.json").read_text()), trial_scores(study)
    trials = [key for key in theirs if mine.get(key) != theirs[key]] + [key for key in mine if key not in theirs]
    for key in trials:
        print(f"trial {key}: {mine.get(key)} here, {theirs.get(key)} recorded")
    recorded, here = pd.read_csv(record / "finals.csv"), final_scores(study)
    joined = recorded.merge(here, on=["variant", "seed"], how="outer", suffixes=(" recorded", " here"))
    finals = untested = 0
    for _, row in joined.iterrows():
        one_side = pd.isna(row[f"{MERGED} recorded"]) != pd.isna(row[f"{MERGED} here"])
        untested += bool(one_side)  # train.merged_test auto: an exact merge no longer tested merged on one side
        differ = [
            s for s in SCORES if not _same(row[f"{s} recorded"], row[f"{s} here"]) and not (s == MERGED and one_side)
        ]
        if differ:
            finals += 1
            values = ", ".join(f"{s}: {row[f'{s} here']} here, {row[f'{s} recorded']} recorded" for s in differ)
            print(f"final {row['variant']} seed {row['seed']}: {values}")
    print(
        f"trials: {len(theirs) - len(trials)} of {len(theirs)} equal; final runs: {len(joined) - finals} of "
        f"{len(joined)} equal ({record} against {study})"
        + (f"; {untested} tested merged on one side only, their merged top-1 not compared" if untested else "")
    )
    return 1 if trials or finals else 0


def _same(a, b) -> bool:
    return (pd.isna(a) and pd.isna(b)) or a == b


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", type=Path)
    parser.add_argument("study", type=Path)
    parser.add_argument("--write", action="store_true", help="record the study into RECORD_DIR instead")
    args = parser.parse_args()
    if args.write:
        args.record.mkdir(parents=True, exist_ok=True)
        (args.record / "trials.json").write_text(json.dumps(trial_scores(args.study), indent=0) + "\n")
        final_scores(args.study).to_csv(args.record / "finals.csv", index=False)
        return 0
    return compare(args.record, args.study)


if __name__ == "__main__":
    sys.exit(main())
