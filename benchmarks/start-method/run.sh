#!/usr/bin/env bash
# The local runner's wall time with --start-method forkserver and spawn, one after the other in the
# order forkserver, spawn, spawn, forkserver (so a load that rises or falls meanwhile weighs on both),
# on the stand-in of the default study (study.yaml: six runs, two at a time; its base cached first by
# `make study` or `peftlab pretrain configs/pretrain.yaml`). Prints each study's wall time and the
# sum of its runs' train_seconds (the same work: a load control), then the ratio of the totals.
set -euo pipefail
python=${1:-.venv/bin/python}
out=$(mktemp -d)
for method in forkserver spawn spawn forkserver; do
  dir="$out/$method-$RANDOM"
  start=$(date +%s.%N)
  PYTHONPATH=src "$python" -m peftlab.cli study benchmarks/start-method/study.yaml --study-dir "$dir" \
    --workers 2 --quiet --start-method "$method" > /dev/null
  wall=$(echo "$(date +%s.%N) - $start" | bc)
  train=$("$python" -c "import json, pathlib, sys
print(round(sum(json.loads(p.read_text())['timing']['train_seconds'] for p in pathlib.Path(sys.argv[1]).glob('runs/*/result.json')), 1))" "$dir")
  echo "$method $wall $train $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$out/times"
done
awk '{wall[$1] += $2; train[$1] += $3}
     END {printf "wall: forkserver %.1f s, spawn %.1f s, spawn / forkserver %.3f\n", wall["forkserver"], wall["spawn"], wall["spawn"] / wall["forkserver"];
          printf "runs'"'"' train seconds: forkserver %.1f, spawn %.1f\n", train["forkserver"], train["spawn"]}' "$out/times"
rm -rf "$out"
