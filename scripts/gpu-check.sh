#!/usr/bin/env bash
# The GPU checks, on a machine with a CUDA GPU and a torch of its own (a cluster node, a lent GPU
# machine). peftlab runs from this checkout over that torch: nothing of the machine's is replaced.
# peftlab goes on PYTHONPATH, and the packages the machine lacks are installed from wheels carried in
# WHEELS (default .whl) with --no-deps into a folder of their own. docs/install.md, "A GPU machine",
# says how to carry them.
#
#   bash scripts/gpu-check.sh [OUT]        OUT: default $OUT, else ./gpu-check
#
# It writes into OUT:
#   device-check.json  python -m peftlab.training.device_check --device cuda: real runs of LoRA in fp32, under
#                      bf16 autocast, compiled and under torchrun, and of QLoRA on nf4 + double quant,
#                      fp4 and int8 bases, each with its merge check (bitsandbytes' CUDA kernels)
#   pytest-cuda.txt    the suite's CUDA cases: QA-LoRA's codes and exact merge on CUDA
#   bench_cuda.json    peftlab bench --device cuda: P1, P2, P4 and MFU, with the GPU's name and torch's version
# Each part runs even when one before it failed; the exit code is 1 when any failed, 2 when this
# machine cannot run them (no CUDA GPU, a package missing).
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-${OUT:-gpu-check}}")
py=${PYTHON:-python3}
wheels=${WHEELS:-.whl}
if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu-check: error: $py's torch sees no CUDA GPU, or there is no torch: run this on a GPU machine" >&2
  exit 2
fi
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
if compgen -G "$wheels/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl || exit 2
fi
export PYTHONPATH="$PWD/src:$site${PYTHONPATH:+:$PYTHONPATH}"
missing=$("$py" - <<'PY'
from importlib.util import find_spec

wanted = "timm peft transformers bitsandbytes safetensors optuna pandas scipy statsmodels matplotlib tqdm yaml jinja2 pytest"
print(" ".join(name for name in wanted.split() if find_spec(name) is None))
PY
)
if [ -n "$missing" ]; then
  echo "gpu-check: error: not on this machine: $missing; carry their wheels in $wheels (docs/install.md, \"A GPU machine\")" >&2
  exit 2
fi
mkdir -p "$out"
failed=0
echo "gpu-check: the device checks"
"$py" -m peftlab.training.device_check --device cuda "$out" || failed=1
echo "gpu-check: the suite's CUDA cases"
"$py" -m pytest -q -p no:cacheprovider -rs tests/tuners/test_qalora.py -k cuda 2>&1 | tee "$out/pytest-cuda.txt" || failed=1
echo "gpu-check: peftlab bench --device cuda"
"$py" -m peftlab.cli bench --device cuda --json "$out/bench_cuda.json" || failed=1
echo "gpu-check: $([ $failed = 0 ] && echo "every part passed" || echo "a part FAILED"); files in $out"
exit $failed
