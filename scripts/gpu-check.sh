#!/usr/bin/env bash
# The GPU checks, on a machine with a CUDA GPU and a torch of its own (a cluster node, a lent GPU
# machine), in about 6 minutes on one H100. peftlab runs from this checkout over that torch: nothing of
# the machine's is replaced. peftlab goes on PYTHONPATH, and the packages the machine lacks are installed
# from wheels carried in WHEELS (default .whl) with --no-deps into a folder of their own. docs/install.md,
# "A GPU machine", says how to carry them.
#
#   bash scripts/gpu-check.sh [OUT]        OUT: default $OUT/gpu-check, else ./gpu-check
#
# It writes into OUT (one folder; `times.txt` gives each part's seconds):
#   device-check.json  (and .txt, what it printed) python -m peftlab.training.device_check --device cuda: real runs of LoRA in fp32, under
#                      bf16 autocast, compiled and under torchrun, and of QLoRA on nf4 + double quant,
#                      fp4 and int8 bases, each with its merge check (bitsandbytes' CUDA kernels); side by side
#   pytest-cuda.txt    the suite's CUDA cases: QA-LoRA's codes and exact merge on CUDA
#   steps_vitb16_bf16.json    peftlab bench --device cuda --only steps: ViT-B/16, batch 64, bf16: P1 (the
#                      recipe / a bare timm + PEFT loop), P2 (LoRA / full), QLoRA and the rank controllers
#                      / LoRA, FLOP/s over the peak matmul, with the GPU's name and torch's version
#   bare_vitb16_bf16.json     the same with --only bare: peftlab's LoRA, full, AdaLoRA and QLoRA nf4 steps, eager,
#                      and LoRA and full compiled, each / a bare timm + PEFT (+ bitsandbytes) loop's step, and each
#                      ratio between them (QLoRA / LoRA, compiled / eager, ...) beside the bare loop's (P1 compiled)
#   throughput/        gpu-check-throughput.sh: a small LoRA study's runs per hour with 1, 2 and 4 workers on one
#                      GPU (throughput.json), and `study --dry-run --time-steps`'s plan of it (plan.txt)
#   study/             a small real study (full fine-tuning and LoRA x 2 seeds on images it writes) through
#                      `peftlab study --report --workers 4`: its report.md, results.csv and figures
# Each part runs even when one before it failed; the exit code is 1 when any failed, 2 when this
# machine cannot run them (no CUDA GPU, a package missing).
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-${OUT:+$OUT/gpu-check}}")
out=${out:-$(realpath -m gpu-check)}
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
started=$SECONDS
part() {  # part NAME COMMAND...: run it, note its seconds in times.txt, remember a failure
  local name=$1 start=$SECONDS
  shift
  echo "gpu-check: $name"
  "$@" || { failed=1; echo "gpu-check: $name FAILED"; }
  echo "$name $((SECONDS - start)) s" | tee -a "$out/times.txt"
}
: >"$out/times.txt"
# the device checks and the CUDA tests side by side (correctness; nothing timed)
echo "gpu-check: the device checks and the CUDA tests, side by side"
start=$SECONDS
"$py" -m peftlab.training.device_check --device cuda "$out" >"$out/device-check.txt" 2>&1 &
checks=$!
"$py" -m pytest -q -p no:cacheprovider -rs tests/tuners/test_qalora.py -k cuda 2>&1 | tee "$out/pytest-cuda.txt" || failed=1
wait $checks || failed=1
cat "$out/device-check.txt"
echo "the device checks and the CUDA tests $((SECONDS - start)) s" | tee -a "$out/times.txt"
part "a small study: full and LoRA x 2 seeds, 4 workers, --report" bash scripts/gpu-check-study.sh "$out/study"
part "runs per hour with 1, 2 and 4 workers on one GPU" bash scripts/gpu-check-throughput.sh "$out/throughput"
vitb=(--model vit_base_patch16_224 --batch 64 --dtype bf16)
part "ViT-B/16 bf16 steps, eager" "$py" -m peftlab.cli bench --device cuda --only steps "${vitb[@]}" --repeats 8 \
  --json "$out/steps_vitb16_bf16.json"
# compiled / eager is in the bare figure (compiled_vs_eager_*), beside the bare loop's: no --only compile part
part "ViT-B/16 bf16 steps beside the bare loop's, eager and compiled" "$py" -m peftlab.cli bench --device cuda \
  --only bare "${vitb[@]}" --repeats 6 --json "$out/bare_vitb16_bf16.json"
echo "all $((SECONDS - started)) s" | tee -a "$out/times.txt"
echo "gpu-check: $([ $failed = 0 ] && echo "every part passed" || echo "a part FAILED"); files in $out"
exit $failed
