"""Figures measured in separate processes: peak RSS per method (memory, P3b)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from peftlab.bench.common import Trainer, make_cfg
from peftlab.config.schema import RunConfig, load_config
from peftlab.models.backbones import build_backbone, input_spec_for
from peftlab.models.meta import shapes_only
from peftlab.training import metrics


def peak_rss_child(cfg_dict: dict, precision: str, batch: int, img_size: int, queue) -> None:
    """In a fresh worker: build, train 3 steps, report peak RSS and weight bytes."""
    from peftlab.config.schema import RunConfig, from_dict

    cfg = from_dict(RunConfig, cfg_dict)
    images = torch.randn(batch, 3, img_size, img_size)
    labels = torch.arange(batch) % 10
    trainer = Trainer(cfg, images, labels, precision)
    for _ in range(3):
        trainer.step()
    queue.put({"peak_rss_bytes": metrics.peak_rss_bytes(), "weights_bytes": metrics.weights_bytes(trainer.model)})


def memory(cfgs: dict[str, RunConfig], precision: str, batch: int, img_size: int) -> dict:
    from peftlab.config.schema import to_dict
    from peftlab.study.executors.local import worker_context

    ctx = worker_context()
    out = {}
    for name, cfg in cfgs.items():
        queue = ctx.Queue()
        proc = ctx.Process(target=peak_rss_child, args=(to_dict(cfg), precision, batch, img_size, queue))
        proc.start()
        out[name] = child_result(proc, queue)
        proc.join()
    return out


def child_result(proc, queue) -> dict:
    """What a measuring child put on ``queue``; a RuntimeError as soon as it has ended without putting it
    (its traceback is on stderr), not a wait for a result that never comes."""
    import queue as queues

    while True:
        try:
            return queue.get(timeout=2)
        except queues.Empty:
            if not proc.is_alive() and queue.empty():
                code = proc.exitcode
                raise RuntimeError(f"the bench's measuring process ended (exit code {code}) with no result") from None


LARGE_METHODS = {
    "qlora_nf4_dq": ("lora", {"mode": "nf4", "double_quant": True}),
    "lora_fp32": ("lora", {}),
    "full": ("full", {}),
}


def large_model_child(section, img_size: int | None, method: str, quant: dict, steps: int, malloc: str, queue) -> None:
    """In a fresh process: build (peak apart), train ``steps`` steps at batch 4 with gradient checkpointing.
    ``section``: the model section (``large_model_section``); ``malloc``: train.malloc."""
    from peftlab.quant import allocator
    from peftlab.quant.load import loads_quantized

    allocator.configure(malloc)  # before the baseline, as a run does before it builds
    cfg = dataclasses.replace(
        make_cfg(section, img_size, method, quant=quant),
        train=load_config(overrides={"train": {"grad_checkpointing": True, "clip_grad": 1.0, "malloc": malloc}}).train,
    )
    size = input_spec_for(cfg.model).img_size
    images, labels = torch.randn(4, 3, size, size), torch.arange(4)
    if cfg.quant.mode != "none":  # before the baseline, as a run imports it (training.recipe.build)
        import bitsandbytes  # noqa: F401
    rss = metrics.PeakRSS()
    trainer = Trainer(cfg, images, labels, "fp32")
    build_peak, after_build = rss.peak_above_baseline(), rss.now_above_baseline()
    rss.reset_peak()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    queue.put(
        {
            "peak_rss_above_baseline_bytes": rss.peak_above_baseline(),  # training only, build apart
            "build_peak_rss_bytes": build_peak,
            "rss_after_build_bytes": after_build,  # held once built: live tensors and the heap glibc kept
            "rss_baseline_bytes": rss.baseline,
            "quantized_while_loading": loads_quantized(cfg.model, cfg.quant, cfg.method),
            "trainable": sum(p.numel() for p in trainer.params),
            **trainer.tuner.base_weight_bytes(),
            "step_seconds": (time.perf_counter() - start) / steps,
        }
    )


def write_random_weights(model: str, img_size: int | None, path: str) -> None:
    """In a fresh process: ``model``'s random base (timm's initialisation, seed 0) as a safetensors file."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    base = build_backbone(make_cfg(model, img_size, "full").model, 10)
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, path)


def write_random_hf_vit(model: str, img_size: int | None, path: str) -> None:
    """In a fresh process: transformers' ViT for image classification with ``model``'s sizes (read
    from timm's architecture on the meta device), random weights (seed 0), saved by ``save_pretrained``."""
    from transformers import ViTConfig, ViTForImageClassification

    with shapes_only():
        timm_model = build_backbone(make_cfg(model, img_size, "full").model, 10)
    block = timm_model.blocks[0]
    config = ViTConfig(
        hidden_size=timm_model.embed_dim,
        num_hidden_layers=len(timm_model.blocks),
        num_attention_heads=block.attn.num_heads,
        intermediate_size=block.mlp.fc1.out_features,
        image_size=timm_model.patch_embed.img_size[0],
        patch_size=timm_model.patch_embed.patch_size[0],
        num_labels=10,
    )
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(path)


def large_model_section(model: str, weights: str, tmp: Path, ctx) -> tuple[str | dict, Path | None]:
    """P3b's model section and the file or directory it reads (written here in a fresh process):
    ``file``, a safetensors file of timm's random weights; ``random``, timm's initialisation in each
    process; ``hf``, an HF ViT of the model's sizes (``model.source: hf``)."""
    if weights == "random":
        return model, None
    path, write = (
        (tmp / "hf-vit", write_random_hf_vit) if weights == "hf" else (tmp / "base.safetensors", write_random_weights)
    )
    proc = ctx.Process(target=write, args=(model, None, str(path)))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"P3b: writing {model}'s random weights failed (exit {proc.exitcode})")
    return ({"source": "hf", "path": str(path)} if weights == "hf" else {"name": model, "pretrained": str(path)}), path


def large_model_memory(
    model: str, steps: int = 2, img_size: int | None = None, weights: str = "file", malloc: str = "system"
) -> dict:
    """P3b: each method in its own process. ``weights='file'`` reads every base from one safetensors
    file of random weights, as a user's pretrained base is read (QLoRA's quantized while loading);
    ``'random'`` builds each from timm's initialisation (QLoRA's built in fp32, then quantized);
    ``'hf'`` reads an HF ViT of the model's sizes through transformers (``large_model_section``)."""
    import tempfile

    from peftlab.study.executors.local import worker_context

    ctx = worker_context()
    if weights == "hf":
        img_size = None  # the HF model's config holds its size
    size = input_spec_for(make_cfg(model, img_size, "full").model).img_size
    out = {"model": model, "img_size": size, "batch": 4, "steps": steps, "grad_checkpointing": True, "weights": weights}
    out["malloc"] = malloc
    with tempfile.TemporaryDirectory(prefix="peftlab-bench-") as tmp:
        section, path = large_model_section(model, weights, Path(tmp), ctx)
        if path:
            files = [path] if path.is_file() else list(path.glob("*.safetensors"))
            out["weights_file_bytes"] = sum(f.stat().st_size for f in files)
        for name, (method, quant) in LARGE_METHODS.items():
            queue = ctx.Queue()
            proc = ctx.Process(target=large_model_child, args=(section, img_size, method, quant, steps, malloc, queue))
            proc.start()
            out[name] = child_result(proc, queue)
            proc.join()
    out["ratios"] = {}
    for figure, key in (("", "peak_rss_above_baseline_bytes"), ("build_", "build_peak_rss_bytes")):
        peak = {name: out[name][key] for name in LARGE_METHODS}
        out["ratios"][f"{figure}qlora_vs_lora"] = peak["qlora_nf4_dq"] / peak["lora_fp32"]
        out["ratios"][f"{figure}qlora_vs_full"] = peak["qlora_nf4_dq"] / peak["full"]
    out["ratios"]["target"] = {"qlora_vs_lora": 0.35, "qlora_vs_full": 0.10}
    return out
