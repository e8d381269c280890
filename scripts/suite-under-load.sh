#!/usr/bin/env bash
# The whole suite beside an artificial load (issue 50: "0 failures in two consecutive whole runs under an
# artificial load of two busy loops"): two shell loops that keep two cores busy run for as long as pytest
# does, as `make test` runs it (same workers, same order); the loops end with it, whatever its result.
#
#     bash scripts/suite-under-load.sh [RUNS] [LOG_DIR]     # default: 2 runs, logs in runs/suite-under-load
#
# Each run's log is LOG_DIR/run-N.log, with the load average and the CPU seconds of pytest and its children
# (user, system) and its wall seconds on its last line; it stops at the first run that fails. Run `make test`
# once first: this script installs nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-2}
logs=${2:-runs/suite-under-load}
mkdir -p "$logs"
loops=()
stop_loops() { [ ${#loops[@]} -eq 0 ] || kill "${loops[@]}" 2>/dev/null; }
trap stop_loops EXIT
for _ in 1 2; do
    bash -c 'while :; do :; done' &
    loops+=($!)
done
for n in $(seq 1 "$runs"); do
    log="$logs/run-$n.log"
    echo "suite-under-load: run $n of $runs, from $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$log"
    /usr/bin/time -f "cpu user %U s, system %S s, wall %e s" .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" \
        --dist loadfile --no-loadscope-reorder -q -p no:cacheprovider --durations=40 >>"$log" 2>&1
    rc=$?
    echo "suite-under-load: run $n ended with $rc at $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log"
    tail -n 4 "$log" | head -n 3
    [ "$rc" -eq 0 ] || exit "$rc"
done
