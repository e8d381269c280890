#!/usr/bin/env bash
# gpu-check's runs per hour on one GPU: a small study (LoRA r=4 x 4 seeds on a random 2-block ViT and images
# written here, as gpu-check-study.sh's) trained from scratch with 1, 2 and 4 local workers, all on the first
# visible GPU (--runs-per-gpu N: N runs share it); then `study --dry-run --time-steps`, the plan a GPU gives
# for the same study before it starts, to set beside the measured hours.
#
#   bash scripts/gpu-check-throughput.sh OUT      (PYTHON, default python3; peftlab on PYTHONPATH;
#                                                  DEVICE, default cuda: cpu tries the script on a laptop)
#
# Writes OUT/throughput.json ({"gpu", "runs", "rows": [{"workers", "seconds", "runs_per_hour", "completed"}]})
# and OUT/plan.txt (the dry run's output).
set -euo pipefail
out=$(realpath -m "$1")
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}  # one GPU: every worker shares it
"$py" -c "import sys; from pathlib import Path; from peftlab.data.synthetic import write_jpeg_folder
write_jpeg_folder(Path(sys.argv[1]), n_train=256, size=32, classes=4, n_test=64, class_colour=0.15)" "$work/images"
cat >"$work/base.yaml" <<YAML
name: gpu-check-throughput
model: {name: vit_tiny_patch16_224, img_size: 32, patch_size: 8, depth: 2, embed_dim: 64, num_heads: 2}
data: {name: imagefolder, root: $work/images, val_fraction: 0.25}
method: {name: lora, r: 4}
train: {epochs: 2, batch_size: 32, eval_batch_size: 64, lr: 3.0e-3, device: $device, threads: 2}
YAML
cat >"$work/study.yaml" <<YAML
name: gpu-check-throughput
base: base.yaml
seeds: 4
methods:
  lora: {}
YAML
rows=()
for workers in 1 2 4; do
  start=$(date +%s.%N)
  status=0
  "$py" -m peftlab.cli study "$work/study.yaml" --study-dir "$work/study-$workers" --workers "$workers" \
    --runs-per-gpu "$workers" --quiet >"$out/study-$workers.txt" 2>&1 || status=$?
  end=$(date +%s.%N)
  rows+=("$workers $start $end $status")
  echo "gpu-check-throughput: $workers workers: $(tail -n 1 "$out/study-$workers.txt")"
done
"$py" -m peftlab.cli study "$work/study.yaml" --study-dir "$work/plan" --dry-run --time-steps --quiet \
  >"$out/plan.txt" 2>&1 || true
"$py" - "$out/throughput.json" "$work" "${rows[@]}" <<'PY'
import json
import sys
from pathlib import Path

import torch

path, work, rows = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
runs = 4
table = []
for row in rows:
    workers, start, end, status = row.split()
    seconds = float(end) - float(start)
    results = [json.loads(p.read_text()) for p in (work / f"study-{workers}").glob("runs/*/result.json")]
    completed = sum(r.get("status") == "completed" for r in results)
    table.append(
        {
            "workers": int(workers),
            "seconds": seconds,
            "runs_per_hour": completed / seconds * 3600,
            "completed": completed,
            "exit_status": int(status),
            "cuda_visible_devices": sorted({r["provenance"]["hardware"].get("cuda_visible_devices") for r in results
                                             if r.get("provenance")}, key=str),
        }
    )
report = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "runs": runs, "setting": "the whole `peftlab study` call, "
          "interpreter start to exit: forkserver, workers, every run's build, steps, evaluation and merge check",
          "rows": table}
Path(path).write_text(json.dumps(report, indent=2) + "\n")
for row in table:
    print(f"{row['workers']} workers: {row['completed']}/{runs} runs in {row['seconds']:.1f} s, "
          f"{row['runs_per_hour']:.0f} runs per hour")
sys.exit(0 if all(r["completed"] == runs and r["exit_status"] == 0 for r in table) else 1)
PY
