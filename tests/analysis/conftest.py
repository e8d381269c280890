"""Results tables in the shape `peftlab results` writes.

`results_table`: a small, fixed table of hand-written numbers (the golden LaTeX table).

The accuracies were picked so that the printed (one-decimal, percent) bootstrap intervals
are the same for every bootstrap seed tried (300): the golden table then checks formatting,
not the random draws of scipy's bootstrap.
"""

import numpy as np
import pandas as pd
import pytest

TOTAL = 5_526_346  # DeiT-tiny with a 10-class head

# variant, method, r, quant mode, trainable, {seed: (test_top1, test_top5)}
RUNS = [
    ("full", "full", np.nan, "none", TOTAL, {0: (0.812, 0.981), 1: (0.806, 0.979), 2: (0.810, 0.983)}),
    ("linear", "linear", np.nan, "none", 1_930, {0: (0.703, 0.950), 1: (0.698, 0.948), 2: (0.705, 0.951)}),
    ("lora r=8", "lora", 8, "none", 149_386, {0: (0.801, 0.978), 1: (0.797, 0.980), 2: (0.803, 0.977)}),
    ("lora_qv r=8 nf4", "lora_qv", 8, "nf4", 75_658, {0: (0.795, 0.975), 1: (0.799, 0.976), 2: (0.791, 0.974)}),
    ("lora r=64", "lora", 64, "none", 1_181_578, {0: (0.808, 0.980)}),
]


@pytest.fixture
def results_table():
    return make_results_table()


def make_results_table():
    rows = []
    for variant, method, r, quant, trainable, scores in RUNS:
        for seed, (top1, top5) in scores.items():
            rows.append(
                {
                    "run_id": f"{variant}-{seed}".replace(" ", "-"),
                    "status": "completed",
                    "error": None,
                    "variant": variant,
                    "method": method,
                    "seed": seed,
                    "config.method.r": r,
                    "config.quant.mode": quant,
                    "metrics.test_top1": top1,
                    "metrics.test_top5": top5,
                    "params.total": TOTAL,
                    "params.trainable": trainable,
                    "params.trainable_ratio": trainable / TOTAL,
                }
            )
    rows.append(
        {
            "run_id": "lora-r=64-1",
            "status": "failed",
            "error": "RuntimeError: CUDA out of memory",
            "variant": "lora r=64",
            "method": "lora",
            "seed": 1,
            "config.method.r": 64,
            "config.quant.mode": "none",
        }
    )
    return pd.DataFrame(rows)


@pytest.fixture
def synthetic_study():
    """A synthetic study (random numbers, for plotting tests only): ranks, quantization, a failure."""
    rng = np.random.default_rng(0)
    variants = [
        # variant, method, r, lora_alpha, quant, trainable, weights_bytes, accuracy
        ("full", "full", np.nan, np.nan, "none", TOTAL, 22_105_384, 0.81),
        ("linear", "linear", np.nan, np.nan, "none", 1_930, 22_105_384, 0.70),
        ("lora r=4", "lora", 4, 8, "none", 38_794, 22_105_384, 0.79),
        ("lora r=8", "lora", 8, 16, "none", 75_658, 22_105_384, 0.80),
        ("lora r=16", "lora", 16, 32, "none", 149_386, 22_105_384, 0.805),
        ("lora r=8 int8", "lora", 8, 16, "int8", 75_658, 6_400_000, 0.798),
        ("lora r=8 nf4", "lora", 8, 16, "nf4", 75_658, 3_800_000, 0.79),
    ]
    rows = []
    for variant, method, r, alpha, quant, trainable, weights, accuracy in variants:
        for seed in range(3):
            rows.append(
                {
                    "run_id": f"{variant}-{seed}",
                    "status": "completed",
                    "error": None,
                    "variant": variant,
                    "method": method,
                    "seed": seed,
                    "config.method.r": r,
                    "config.method.lora_alpha": alpha,
                    "config.method.target_modules": ["q", "v"],
                    "config.quant.mode": quant,
                    "config.train.lr": 1e-3,
                    "metrics.test_top1": accuracy + rng.normal(0, 0.004),
                    "metrics.merged_test_top1": accuracy - (0.01 if quant != "none" else 0) + rng.normal(0, 0.004),
                    "params.total": TOTAL,
                    "params.trainable": trainable,
                    "params.trainable_ratio": trainable / TOTAL,
                    "memory.weights_bytes": weights,
                    "memory.base_weights_bytes": weights,
                    "memory.base_weights_fp32_bytes": 22_105_384,
                    "memory.peak_rss_bytes": int(weights * 8 + rng.normal(0, 2e7)),
                    "timing.train_seconds": 300 * (1 + trainable / TOTAL) + rng.normal(0, 10),
                }
            )
    rows.append(
        {"run_id": "lora r=16-3", "status": "diverged", "error": "loss is NaN", "variant": "lora r=16", "seed": 3}
    )
    return pd.DataFrame(rows)


@pytest.fixture
def synthetic_curves():
    """Learning curves of three ranks over three seeds (random numbers)."""
    rng = np.random.default_rng(1)
    rows = []
    for r in (4, 8, 16):
        for seed in range(3):
            for step in range(0, 1001, 100):
                accuracy = 0.8 * (1 - np.exp(-step / (150 + 10 * r))) + rng.normal(0, 0.01)
                rows.append(
                    {
                        "run_id": f"r{r}-{seed}",
                        "variant": f"lora r={r}",
                        "config.method.r": r,
                        "step": step,
                        "val_top1": accuracy,
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture
def drawn(monkeypatch):
    """The figures a plot function would save, by name (nothing is written): every figure module's save_figure."""
    from peftlab.analysis.figures import ablation, study
    from peftlab.analysis.report import tuning

    kept = {}

    def keep(fig, out_dir, name):
        kept[name] = fig
        return [name]

    for module in (study, ablation, tuning):
        monkeypatch.setattr(module, "save_figure", keep)
    return kept


@pytest.fixture(scope="session")
def archive(tmp_path_factory):
    """The image-folder study's submission archive (archivefiles.py), built once per pytest run (by the first xdist
    worker that runs a file needing it: ``testkit.built_once``) and read by the archive tests (test_reproduce.py,
    test_reproduce_hostile.py, test_reproduce_received.py, ...): a test that changes it, or its study folder, unpacks
    or copies its own."""
    from archivefiles import make_archive
    from testkit import built_once

    return built_once(tmp_path_factory, "made", make_archive)


@pytest.fixture(scope="session")
def pristine(archive, tmp_path_factory):
    """The archive unpacked once, its data where REPRODUCE.md says: read only, each case changes a copy."""
    from archivefiles import unpacked

    return unpacked(archive, tmp_path_factory.mktemp("pristine"))
