"""A pretrained base for offline studies: train a small timm ViT from scratch, cache it.

``pretrain(cfg, out_dir)`` trains with the one recipe (method ``full``) in ``out_dir/run``,
then writes ``out_dir/model.safetensors`` (a plain timm state dict) and
``out_dir/manifest.json`` (architecture, data, seed, test accuracy, SHA-256, config hash).
A second call with the same config finds the manifest and reuses the weights. ``out_dir`` is
locked for the whole call: a second pretraining of the same directory waits for the first and
then finds its weights, so two processes never train in one directory.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from peftlab.config.schema import RunConfig, config_hash, load_config, to_dict
from peftlab.data.readers.records import hash_file
from peftlab.utils import locks
from peftlab.utils.cpu import base_products, pinned_products
from peftlab.utils.errors import ConfigError, UserError
from peftlab.utils.files import read_json, write_atomic, write_json_atomic


def default_out_dir(cfg: RunConfig) -> Path:
    """Where a base model is cached unless told otherwise: cache/pretrained/<name>."""
    return Path("cache") / "pretrained" / cfg.name


def cached_manifest(cfg: RunConfig, out_dir: Path) -> dict | None:
    """The manifest if ``out_dir`` holds weights trained from exactly this config, intact; None
    otherwise (missing, corrupt or stale manifest, changed weights)."""
    manifest_path, weights = out_dir / "manifest.json", out_dir / "model.safetensors"
    manifest = read_json(manifest_path)  # absent or corrupt (opened once) is no cache: the base is trained again
    if manifest is None or not weights.is_file():
        return None
    if (
        manifest is None
        or not isinstance(manifest.get("weights"), str)
        or manifest.get("config_hash") != config_hash(cfg, 16)
        or manifest.get("sha256") != hash_file(weights)
        or base_products(manifest.get("products")) != this_base_products(cfg)  # a base of the former pin: again
    ):
        return None
    return manifest


def same_config(path: Path, cfg: RunConfig) -> bool:
    """True when the config file at ``path`` is ``cfg`` as a run id sees it (a field added since
    it was written, at its default, is no difference); False for another or an unreadable one."""
    try:
        return config_hash(load_config(path, base_dir=Path.cwd()), 64) == config_hash(cfg, 64)
    except ConfigError:
        return False


def other_products(run_dir: Path, cfg: RunConfig) -> bool:
    """``run_dir`` holds a completed pretraining whose products are not the ones this environment's pin computes
    (``this_base_products``: a base trained before oneDNN's products were the pin's)."""
    result = read_json(run_dir / "result.json")
    if not isinstance(result, dict) or result.get("status") != "completed":
        return False
    arithmetic = (result.get("provenance") or {}).get("arithmetic") or {}
    return isinstance(arithmetic, dict) and base_products(arithmetic.get("products")) != this_base_products(cfg)


def this_base_products(cfg: RunConfig) -> str | None:
    """The products a pretraining of ``cfg`` computes in this environment (``utils.cpu.base_products``)."""
    return base_products(pinned_products(cfg.train.reproducible))


def tell_waiting(text: str) -> None:
    print(f"peftlab: {text}", file=sys.stderr, flush=True)


def pretrain(
    cfg: RunConfig, out_dir: str | Path, progress: bool = True, on_wait=tell_waiting, execution: dict | None = None
) -> dict:
    """Train (or find cached) a base model in ``out_dir``; ``execution``: the study executor's job that trains it
    (its run's record's ``execution``)."""
    if cfg.method.name != "full":
        raise ConfigError(f"method.name={cfg.method.name!r} is invalid for pretraining: expected 'full'")
    out_dir = Path(out_dir)
    with locks.hold(out_dir, "pretraining directory", "peftlab pretrain", wait=True, on_wait=on_wait):
        return pretrain_in(cfg, out_dir, progress, execution)


def pretrain_in(cfg: RunConfig, out_dir: Path, progress: bool, execution: dict | None = None) -> dict:
    """The pretraining in its (locked) directory."""
    from peftlab.training.run import train  # the recipe (timm, PEFT) stays out of the study's parent process

    manifest = cached_manifest(cfg, out_dir)
    if manifest is not None:
        return {**manifest, "cached": True}
    run_dir = out_dir / "run"
    if (run_dir / "config.yaml").exists() and not same_config(run_dir / "config.yaml", cfg):
        shutil.rmtree(run_dir)  # an older pretraining config: start afresh
    elif other_products(run_dir, cfg):
        shutil.rmtree(run_dir)  # trained by the former pin's products (MKL's): this pin's base is another
    if cfg.model.source == "hf-text":  # a causal LM and its tokenizer, saved as an HF model directory
        from peftlab.training.bases.text_base import pretrain_text

        trained = pretrain_text(cfg, out_dir, progress, execution)
        result, weights = trained["result"], out_dir / "model.safetensors"
    else:
        result = train(cfg, run_dir, progress=progress, execution=execution)
        weights = out_dir / "model.safetensors"
    if result["status"] != "completed":
        raise UserError(f"pretraining in {run_dir} {result['status']}: {result['error']}")
    if cfg.model.source != "hf-text":
        write_atomic(weights, lambda tmp: shutil.copyfile(run_dir / "adapter.safetensors", tmp))
    manifest = {
        "architecture": to_dict(cfg.model),
        "data": to_dict(cfg.data),
        "seed": cfg.seed,
        "test_top1": result["metrics"]["test_top1"],
        "test_top5": result["metrics"]["test_top5"],
        "test_perplexity": result["metrics"].get("test_perplexity"),
        "train_seconds": result["timing"]["train_seconds"],
        "params": result["params"],
        "sha256": hash_file(weights),
        "config_hash": config_hash(cfg, 16),
        "weights": weights.name,
        "data_sha256": result["provenance"]["data_sha256"],
        "products": result["provenance"]["arithmetic"].get("products"),  # the pin's (models.products) or None
    }
    write_json_atomic(out_dir / "manifest.json", manifest)
    return {**manifest, "cached": False}
