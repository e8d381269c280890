#!/usr/bin/env bash
# The tuned study.yaml with its searches side by side and one after another, in the order side,
# sequential, sequential, side (a load that rises or falls meanwhile weighs on both), each a fresh study
# directory; prints each call's phases (phases.jsonl) and the load average at its start.
set -euo pipefail
python=${1:-.venv/bin/python}
out=$(mktemp -d)
for mode in side sequential sequential side; do
  echo "load $(cut -d' ' -f1 /proc/loadavg)"
  PYTHONPATH=src "$python" benchmarks/side-by-side/run_one.py "$mode" "$out/$mode-$RANDOM"
done
rm -rf "$out"
