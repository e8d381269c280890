#!/usr/bin/env bash
# gpu-check's small real study: full fine-tuning and LoRA r=4, 2 seeds each, on a random 2-block ViT and
# images written here (smooth colour fields, 15% of each pixel its class's hue, 4 classes: no download),
# 4 worker processes on one GPU, through `peftlab study --report`. Its report.md, results.csv and figures
# are copied into OUT.
#
#   bash scripts/gpu-check-study.sh OUT      (PYTHON, default python3; peftlab on PYTHONPATH)
set -euo pipefail
out=$(realpath -m "$1")
py=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -c "import sys; from pathlib import Path; from peftlab.data.synthetic import write_jpeg_folder
write_jpeg_folder(Path(sys.argv[1]), n_train=256, size=32, classes=4, n_test=64, class_colour=0.15)" "$work/images"
cat >"$work/base.yaml" <<YAML
name: gpu-check
model: {name: vit_tiny_patch16_224, img_size: 32, patch_size: 8, depth: 2, embed_dim: 64, num_heads: 2}
data: {name: imagefolder, root: $work/images, val_fraction: 0.25}
method: {name: lora, r: 4}
train: {epochs: 3, batch_size: 32, eval_batch_size: 64, lr: 3.0e-3, device: auto, threads: 2}
YAML
cat >"$work/study.yaml" <<YAML
name: gpu-check-study
base: base.yaml
seeds: 2
methods:
  full: {set: {train.lr: 3.0e-4}}
  lora: {}
YAML
"$py" -m peftlab.cli study "$work/study.yaml" --study-dir "$work/study" --workers 4 --report --quiet
mkdir -p "$out"
cp -r "$work/study/report/." "$out/"
