"""Pre-flight estimate against the measured training peak (issue 13): deit_small 224, batch 32."""

import json
import sys
from pathlib import Path

from peftlab.config.schema import load_config
from peftlab.training.run import train

base = {
    "model": {"name": "deit_small_patch16_224", "pretrained": "none"},
    "data": {"name": "fashion_mnist", "train_subset": 96, "val_subset": 32, "test_subset": 32},
    "train": {"epochs": 1, "max_steps": 2, "batch_size": 32, "eval_batch_size": 32, "log_every": 1},
}
configs = {
    "lora_qv_r8": {"method": {"name": "lora", "r": 8}},
    "full": {"method": {"name": "full"}},
    "qlora_nf4": {"method": {"name": "lora", "r": 8}, "quant": {"mode": "nf4"}},
}
out = {}
for name, extra in configs.items():
    if len(sys.argv) > 2 and name != sys.argv[2]:
        continue
    cfg = load_config(overrides={**base, **extra, "name": name})
    result = train(cfg, Path(sys.argv[1]) / name, progress=False)
    m = result["memory"]
    est = m["estimate"]
    out[name] = {
        "estimate_total_mib": est["total_bytes"] / 2**20,
        "estimate_training_mib": est["training_bytes"] / 2**20,
        "activations_mib": est["activations_bytes"] / 2**20,
        "weights_mib": est["weights_bytes"] / 2**20,
        "measured_peak_above_baseline_mib": m["peak_rss_above_baseline_bytes"] / 2**20,
        "measured_training_peak_mib": m["peak_rss_training_bytes"] / 2**20,
        "measured_build_peak_mib": m["peak_rss_model_build_bytes"] / 2**20,
        "ratio_estimate_vs_measured": est["total_bytes"] / m["peak_rss_above_baseline_bytes"],
    }
    print(name, json.dumps(out[name]), flush=True)
Path(sys.argv[1], f"preflight-{sys.argv[2]}.json").write_text(json.dumps(out, indent=2))
