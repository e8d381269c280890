"""Export a trained run as a plain timm state dict that timm loads with no peftlab code."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from peftlab.backbones import read_safetensors
from peftlab.files import write_atomic
from peftlab.config import load_config
from peftlab.errors import UserError


def load_trained(run_dir: Path):
    """Rebuild a run's tuned model from its config.yaml and adapter.safetensors."""
    from peftlab.backbones import build_backbone
    from peftlab.files import read_json
    from peftlab.tuners import apply_tuner

    result = read_json(run_dir / "result.json")
    if result is None or result["status"] != "completed":
        raise UserError(f"run directory {run_dir} holds no completed run (result.json missing or not completed)")
    cfg = load_config(run_dir / "config.yaml")
    model = build_backbone(cfg.model, result["provenance"]["data"]["num_classes"]
                           if cfg.model.num_classes is None else cfg.model.num_classes)
    tuner = apply_tuner(model, cfg)
    tuner.load_adapter_state_dict(read_safetensors(run_dir / "adapter.safetensors"))
    return tuner


def export_merged(run_dir: Path, out: Path) -> Path:
    tuner = load_trained(run_dir)
    model = tuner.merged_model() if tuner.is_adapter else tuner.model
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    write_atomic(out, lambda tmp: save_file(state, tmp))
    return out
