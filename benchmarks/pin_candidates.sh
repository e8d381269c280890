#!/usr/bin/env bash
# The pin and the former pins recorded on this CPU in one call (about 6 to 10 minutes on 2 cores), for a CPU of
# another class than the committed records' to say whether it computes the bits the records agree on (issue 87: the
# pin changed only where two vendors' records agreed). Every pin has records of an Intel Xeon, an AMD EPYC with
# AVX-512 and one with AVX2 only; the candidate onednn-avx512's Intel record was taken with the unfused AdamW (see
# benchmarks/step_probe.py) and is to be taken again here on an Intel CPU with AVX-512 (copy its two records over
# benchmarks/step_probe/intel-xeon-avx512-amx-onednn-avx512-downstream-threads{1,2}.json):
#
#     bash benchmarks/pin_candidates.sh [OUT_DIR] [PYTHON]      # default: runs/pin-candidates, .venv/bin/python
#
# It writes OUT_DIR/machine.txt (CPU and flags), arith_hashes.txt (each product's bits under each MKL branch and
# through oneDNN), one step-probe record per pin and thread count (three steps of the pretraining and of every
# default-study configuration) with its comparison against the Intel Xeon's committed record of the same pin
# (benchmarks/step_probe/intel-xeon-avx512-amx-*), and bench-pin.json (each pin's cost against the unpinned
# step, the default study's model, batch 128). The pins: onednn-quantized (the pin since 2026-11-30: every Linear's
# products through oneDNN at AVX2, peftlab.models.products, a quantized base's backward products too; its cost
# against onednn's in quantized-step.json: benchmarks/quantized_backward_step.py, the QLoRA steps under both in one
# process), onednn (the pin of 2026-11-29, a quantized base's backward in MKL's COMPATIBLE branch) and compatible
# (the pin before it, every product in MKL's COMPATIBLE branch), which archives of their runs rerun with, and on a
# CPU with AVX-512 onednn-avx512 (onednn's products at AVX512_CORE: a candidate for AVX-512 CPUs alone, its cost the
# bench's AVX512_CORE line), and on every CPU onednn-mkl-avx2 (the pin with the batched products it leaves to MKL,
# attention's and the stacked LoRA factors', in MKL's AVX2 branch: a candidate of 2026-12-01 recorded on an AMD EPYC
# with AVX-512 alone, so compared with that record rather than an Intel one; its cost the bench's "MKL AVX2 rest"
# lines). Copy OUT_DIR's records into benchmarks/step_probe/ under the CPU's name;
# "every entry equal" on every line of a pin means this CPU computes its bits. The whole default study under
# the former pin's base is compared run by run with the Intel Xeon's by benchmarks/compare_study.py (its
# docstring has the two commands).
set -u
cd "$(dirname "$0")/.."
out=${1:-runs/pin-candidates}
py=${2:-.venv/bin/python}
mkdir -p "$out"
records=benchmarks/step_probe
{
  grep -m1 'model name' /proc/cpuinfo
  grep -m1 'vendor_id' /proc/cpuinfo
  grep -m3 -E '^(cpu family|model|stepping)\s*:' /proc/cpuinfo  # the generation a VM's model name can hide
  echo "flags: $(grep -m1 -o -w -E 'avx2|avx512f|avx512_bf16|amx_tile|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "cores: $(nproc)"
  "$py" -c 'import torch; print("torch", torch.__version__)'
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
"$py" benchmarks/arith_hashes.py > "$out/arith_hashes.txt" 2>&1
grep oneDNN "$out/arith_hashes.txt"
status=0
variants="compatible onednn onednn-quantized onednn-mkl-avx2"
# oneDNN's products at AVX512_CORE: a candidate pin for AVX-512 CPUs alone (an AVX2-only CPU cannot run its kernels)
grep -q -w avx512f /proc/cpuinfo && variants="$variants onednn-avx512"
for variant in $variants; do
  for threads in 1 2; do
    case $variant in
      compatible) recorded=$records/intel-xeon-avx512-amx-host-compatible-downstream-threads$threads.json ;;
      onednn-mkl-avx2) recorded=$records/amd-epyc-avx512bf16-$variant-downstream-threads$threads.json ;;
      *) recorded=$records/intel-xeon-avx512-amx-$variant-downstream-threads$threads.json ;;
    esac
    "$py" benchmarks/step_probe.py --variant "$variant" --threads "$threads" --downstream \
      --out "$out/$variant-threads$threads.json" --compare "$recorded" 2>&1 \
      | grep -v -e gemm_4bit_forward -e gpuGetDeviceCount | tee "$out/$variant-threads$threads.txt" || status=1
  done
done
# the cost: the default study's model (4 blocks, width 128, 28 px), batch 128, one thread a process
"$py" -m peftlab.cli bench --only pin --model vit_tiny_patch16_224 --img-size 28 --patch-size 7 --depth 4 \
  --embed-dim 128 --num-heads 4 --batch 128 --repeats 3 --json "$out/bench-pin.json" 2>&1 \
  | grep -v -e gemm_4bit_forward -e gpuGetDeviceCount | tee "$out/bench-pin.txt" || status=1
# the candidate onednn-quantized's cost: the default study's QLoRA steps (int8, nf4) under it and under the pin
"$py" benchmarks/quantized_backward_step.py --json "$out/quantized-step.json" 2>&1 \
  | grep -v -e gemm_4bit_forward -e gpuGetDeviceCount | tee "$out/quantized-step.txt" || status=1
exit $status
