"""A small study directory on disk, shaped like the runner and train.py write it (no torch).

runs/<run_id>/{spec.json, config.yaml, result.json, metrics.jsonl} for full fine-tuning, a
linear probe and LoRA r=4 and r=8 over three seeds, plus one failed LoRA run. The test top-1
values are fixed by hand so the paper's tables have known numbers (RUNS below).
"""

import json
from pathlib import Path

import yaml
from testkit import REPO

from peftlab.config.schema import load_config, to_dict

TOTAL = 800_394
# variant, method, overrides, trainable, wall seconds, test top-1 per seed
RUNS = [
    ("full", "full", {"method.name": "full"}, TOTAL, 40.0, [0.745, 0.752, 0.739]),
    ("linear", "linear", {"method.name": "linear", "train.lr": 0.01}, 1_290, 20.0, [0.593, 0.591, 0.597]),
    ("lora r=4", "lora", {"method.name": "lora", "method.r": 4}, 9_482, 30.0, [0.675, 0.663, 0.690]),
    ("lora r=8", "lora", {"method.name": "lora", "method.r": 8}, 17_674, 31.0, [0.684, 0.664, 0.702]),
]
# the method zoo, written only when ``variants`` names them (the literature table's methods and two it lacks)
ZOO_RUNS = [
    ("vpt", "vpt", {"method.name": "vpt"}, 6_410, 33.0, [0.702, 0.711, 0.695]),
    ("pfeiffer", "pfeiffer", {"method.name": "pfeiffer"}, 5_538, 32.0, [0.688, 0.679, 0.690]),
    ("ssf", "ssf", {"method.name": "ssf"}, 9_866, 35.0, [0.721, 0.730, 0.716]),
    ("houlsby", "houlsby", {"method.name": "houlsby"}, 9_786, 36.0, [0.733, 0.741, 0.729]),
    ("difffit", "difffit", {"method.name": "difffit"}, 7_114, 34.0, [0.715, 0.709, 0.722]),
]
SEEDS = (0, 1, 2)


def write_study_dir(study_dir: Path, with_failure: bool = True, variants=None) -> Path:
    """The study of RUNS (or of the named variants only, from RUNS and ZOO_RUNS) in study_dir/runs, on a
    base model whose pretraining manifest is study_dir/base/manifest.json."""
    base = study_dir / "base" / "model.safetensors"
    base.parent.mkdir(parents=True)
    (base.parent / "manifest.json").write_text(
        json.dumps({"data": {"name": "mnist"}, "test_top1": 0.9576, "train_seconds": 110.4, "weights": base.name})
    )
    order = 0
    for variant, method, overrides, trainable, wall, scores in RUNS + (ZOO_RUNS if variants is not None else []):
        if variants is not None and variant not in variants:
            continue
        for seed, top1 in zip(SEEDS, scores):
            cfg = config({**overrides, "model.pretrained": base}, seed)
            run_id = f"{variant.replace(' ', '').replace('=', '')}-s{seed}"
            axes = {"method.r": overrides["method.r"]} if "method.r" in overrides else {}
            write_run(
                study_dir / "runs" / run_id,
                cfg,
                run_id,
                variant,
                method,
                seed,
                axes,
                order,
                result=completed_result(cfg, top1, trainable, wall),
            )
            order += 1
    if with_failure:
        cfg = config({"method.name": "lora", "method.r": 8, "model.pretrained": base}, seed=3)
        write_run(
            study_dir / "runs" / "lorar8-s3",
            cfg,
            "lorar8-s3",
            "lora r=8",
            "lora",
            3,
            {"method.r": 8},
            order,
            result={
                "status": "failed",
                "error": "RuntimeError: out of memory",
                "step": 12,
                "config": to_dict(cfg),
                "metrics": {},
                "params": None,
                "provenance": None,
            },
        )
    return study_dir


def set_data(study_dir: Path, **data) -> Path:
    """The study's runs as if trained on other data: ``data`` (name, root, ...) into the config each
    result.json records (cifar100: a dataset that configs/literature.yaml has published rows of)."""
    for path in study_dir.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        result["config"]["data"].update(data)
        path.write_text(json.dumps(result, indent=2))
    return study_dir


def config(overrides, seed):
    dotted = [f"{key}={value}" for key, value in {**overrides, "seed": seed}.items()]
    return load_config(REPO / "configs" / "downstream.yaml", dotted)


def write_run(run_dir, cfg, run_id, variant, method, seed, axes, order, result):
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(
        json.dumps(
            {
                "run_id": run_id,
                "variant": variant,
                "method": method,
                "seed": seed,
                "groups": [],
                "axes": axes,
                "order": order,
            }
        )
    )
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    if result["status"] == "completed":
        top1 = result["metrics"]["test_top1"]
        lines = [
            {"kind": "eval", "step": step, "epoch": 0, "val_loss": 1.0, "val_top1": top1 * fraction, "val_top5": 0.9}
            for step, fraction in ((25, 0.7), (50, 0.85), (75, 0.95), (125, 1.0))
        ]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def completed_result(cfg, top1, trainable, wall):
    return {
        "status": "completed",
        "error": None,
        "step": 125,
        "config": to_dict(cfg),
        "metrics": {
            "test_top1": top1,
            "test_top5": min(0.99, top1 + 0.25),
            "val_top1": top1,
            "best_val_top1": top1,
            "test_loss": 0.8,
        },
        "params": {"total": TOTAL, "trainable": trainable, "trainable_ratio": trainable / TOTAL},
        "memory": {"peak_rss_bytes": 900_000_000, "cuda_max_allocated_bytes": None, "weights_bytes": 3_201_576},
        "timing": {
            "train_seconds": wall - 5,
            "train_images_per_second": 300.0,
            "eval_images_per_second": 2000.0,
            "wall_seconds": wall,
        },
        "merge": None,
        "provenance": {
            "git_sha": "0123456789abcdef0123456789abcdef01234567",
            "git_dirty": False,
            "versions": {"torch": "2.14.1", "timm": "1.0.31", "peft": "0.21.2"},
            "hardware": {"cpu": "AMD EPYC test CPU", "cpu_count": 2, "device": "cpu", "gpu": None},
            "threads": 2,
            "dtype": "fp32",
            "seed": cfg.seed,
            "data": {"name": cfg.data.name, "split_sizes": {"train": 4000, "val": 500, "test": 2000}},
        },
    }
