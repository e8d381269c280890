#!/usr/bin/env bash
# The default study (until `peftlab study` lands): pretrain the small MNIST ViT (cached),
# then adapt it to Fashion-MNIST with full fine-tuning, a linear probe and LoRA r=8 (q, v).
# Completed runs are reused; an interrupted run resumes from its checkpoint.
set -euo pipefail
bin=${1:-.venv/bin}
"$bin/peftlab" pretrain configs/pretrain.yaml
for method in full linear lora; do
  "$bin/peftlab" train configs/downstream.yaml "method.name=$method" "name=fashion-$method" \
    --run-dir "runs/default/$method"
done
echo
echo "== default study: MNIST-pretrained ViT adapted to Fashion-MNIST =="
"$bin/peftlab" summary runs/default/full runs/default/linear runs/default/lora
