"""A vision study with a crossed ablation, shaped as the runner writes it (no torch): studyfiles' study, whose
main LoRA configurations (r = 4 and 8 on the standard targets) also belong to the ablation ``rank_targets``, which
crosses r in {4, 8} with the targets in {standard, all-linear}. A run shared by two groups records the axes of its
first group (main: method.r only), as the runner's merged spec does."""

import json
from pathlib import Path

from studyfiles import SEEDS, completed_result, config, write_run, write_study_dir

GROUP = "rank_targets"
# variant, r, test top-1 per seed, trainable
ALL_LINEAR = [
    ("lora r=4 targets=all-linear", 4, (0.695, 0.688, 0.701), 30_730),
    ("lora r=8 targets=all-linear", 8, (0.705, 0.699, 0.712), 57_418),
]


def write_crossed_study(study_dir: Path) -> Path:
    study = write_study_dir(study_dir, with_failure=False)
    base = study / "base" / "model.safetensors"
    for spec_path in study.glob("runs/*/spec.json"):
        spec = json.loads(spec_path.read_text())
        spec["groups"] = ["main", GROUP] if spec["method"] == "lora" else ["main"]
        spec_path.write_text(json.dumps(spec))
    order = 100
    for variant, rank, scores, trainable in ALL_LINEAR:
        for seed, top1 in zip(SEEDS, scores):
            overrides = {"method.name": "lora", "method.r": rank, "method.target_modules": "all-linear"}
            cfg = config({**overrides, "model.pretrained": base}, seed)
            run_id = f"lora{rank}all-s{seed}"
            write_run(
                study / "runs" / run_id,
                cfg,
                run_id,
                variant,
                "lora",
                seed,
                {"method.r": rank, "method.target_modules": "all-linear"},
                order,
                result=completed_result(cfg, top1, trainable, 33.0),
            )
            spec_path = study / "runs" / run_id / "spec.json"
            spec_path.write_text(json.dumps({**json.loads(spec_path.read_text()), "groups": [GROUP]}))
            order += 1
    return study
