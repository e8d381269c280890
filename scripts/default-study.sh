#!/usr/bin/env bash
# The default study: pretrain the small MNIST ViT (cached), adapt it to Fashion-MNIST with
# full fine-tuning, a linear probe, LoRA r=8, AdaLoRA, an importance controller, QA-LoRA int4
# and QLoRA int8/nf4 over 5 seeds (two runs at a time), then write the report and say whether
# its means are the study file's header's. Completed runs are reused; an interrupted run resumes
# from its checkpoint.
set -uo pipefail
bin=${1:-.venv/bin}
"$bin/peftlab" study configs/studies/default.yaml --workers 2 --report
status=$?
if [ -f runs/default/report/report.md ]; then
  echo
  echo "== the report: runs/default/report/report.md (figures and LaTeX tables beside it) =="
  sed -n '/^## Main table/,/^LaTeX/p' runs/default/report/report.md
  echo
  # one line: whether this machine gave the header's numbers, else which rows moved and by how much
  "$bin/python" -m peftlab.analysis.results.reproduced configs/studies/default.yaml runs/default
fi
exit $status
