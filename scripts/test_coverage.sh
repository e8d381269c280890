#!/usr/bin/env bash
# Line coverage of src/peftlab by the whole suite (issue 88: a cut of the suite must not lower it). Runs
# `make test`'s pytest under coverage.py, every Python process it starts measured too (coverage's
# `patch = subprocess`: the xdist workers, the `peftlab` commands, a study's forkserver), then combines the
# data and writes OUT/report.txt (per module), OUT/coverage.json (the lines of each file) and OUT/total.txt.
#
#   bash scripts/test_coverage.sh [OUT] [PYTEST ARGS ...]     (OUT: runs/test-coverage)
#   python scripts/test_coverage.py OLD/coverage.json NEW/coverage.json   # lines covered before, not after
#
# coverage.py is installed into .venv (pinned below), which then differs from requirements.lock: use a clone of
# its own for this (as the closing notes' figures were made), not the checkout whose tests you trust.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/test-coverage}
[ $# -gt 0 ] && shift
PY=.venv/bin/python
$PY -m pip install --quiet --disable-pip-version-check coverage==7.12.0 || exit 1
mkdir -p "$OUT/data"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/data/.coverage*
cat > "$OUT/coveragerc" <<EOF
[run]
source_pkgs = peftlab
parallel = true
patch = subprocess
data_file = $OUT/data/.coverage
[report]
precision = 2
EOF
export COVERAGE_RCFILE="$OUT/coveragerc"
start=$(date +%s)
$PY -m coverage run -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
rc=$?
echo "pytest exit $rc in $(( $(date +%s) - start )) s" | tee "$OUT/pytest.txt"
$PY -m coverage combine --quiet "$OUT/data"
$PY -m coverage report > "$OUT/report.txt"
$PY -m coverage json --quiet -o "$OUT/coverage.json"
tail -1 "$OUT/report.txt" | tee "$OUT/total.txt"
exit $rc
