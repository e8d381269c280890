"""Figures of training steps timed in alternation: the recipe against a hand-written step and LoRA
against full fine-tuning (P1, P2, P3c, the rank controllers, P5), bf16 against fp32, the monitors'
cost, and compiled against eager steps."""

from __future__ import annotations

import statistics
import time

import torch

from peftlab.bench.common import DTYPES, QKV, Trainer, make_cfg, ratios, spread
from peftlab.bench.peak import peak_within_ceiling
from peftlab.models.backbones import build_backbone
from peftlab.training import metrics
from peftlab.training.monitors.cost import model_monitor_cost
from peftlab.training.runtime import resolve_precision
from peftlab.training.step import compute_loss
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.utils import provenance


def step_trainers(cfg, images, labels, dtype: str, device: torch.device) -> dict[str, Trainer]:
    """The steps timed together; ``cfg(method, ...)`` makes the bench model's config for a method."""
    return {
        "hand_written_peft_qkv": Trainer(cfg("lora", [QKV]), images, labels, dtype, hand_written=True, device=device),
        "peftlab_lora_qkv": Trainer(cfg("lora", [QKV]), images, labels, dtype, device=device),
        "peftlab_lora_qv": Trainer(cfg("lora"), images, labels, dtype, device=device),
        "peftlab_full": Trainer(cfg("full"), images, labels, dtype, device=device),
        "peftlab_qlora_nf4": Trainer(cfg("lora", quant={"mode": "nf4"}), images, labels, dtype, device=device),
        # rank controllers at the same built rank as LoRA r=8, reallocating on every step (their worst case)
        "peftlab_adalora": Trainer(
            cfg("adalora", init_r=8, target_r=4, tinit=0, deltaT=1), images, labels, dtype, device=device
        ),
        "peftlab_adaptive": Trainer(
            cfg("adaptive", r=4, max_rank=8, warmup=0, interval=1, final_step=0.99, importance="sensitivity"),
            images,
            labels,
            dtype,
            device=device,
        ),
    }


def step_figures(trainers: dict[str, Trainer], peak: dict, dtype: str, repeats: int, device: torch.device) -> dict:
    """The steps timed in alternation with the peak matmul (measured again in every repetition):
    the peak updated, the steps' seconds, and P1, P2, P3c, the rank controllers and P5."""
    n = peak["size"]
    a, b = (torch.randn(n, n, dtype=DTYPES[dtype], device=device) for _ in range(2))
    times = metrics.time_interleaved(
        {**{k: t.step for k, t in trainers.items()}, "peak_matmul": lambda: a @ b}, repeats, device, warmup=2
    )
    interleaved = [2 * n**3 / s / 1e9 for s in times.pop("peak_matmul")]
    peak = {**peak, "interleaved_gflops": spread(interleaved), "best_gflops": max(peak["gflops"], *interleaved)}
    peak["valid"] = peak_within_ceiling(peak)
    return {
        "peak": peak,
        "step_seconds": {k: spread(v) for k, v in times.items()},
        "P1_overhead": {
            "recipe_vs_hand_written": ratios(times, "peftlab_lora_qkv", "hand_written_peft_qkv"),
            "qv_slices_vs_hand_written": ratios(times, "peftlab_lora_qv", "hand_written_peft_qkv"),
            "target": 1.03,
        },
        "P2_lora_vs_full": {**ratios(times, "peftlab_lora_qv", "peftlab_full"), "target": 0.75},
        "P3c_qlora_vs_lora_step": {**ratios(times, "peftlab_qlora_nf4", "peftlab_lora_qv"), "target": 1.15},
        "adaptive_rank_steps": {
            "adalora_vs_lora": ratios(times, "peftlab_adalora", "peftlab_lora_qv"),
            "controller_vs_lora": ratios(times, "peftlab_adaptive", "peftlab_lora_qv"),
            "setting": "built rank 8 on q,v like LoRA r=8; AdaLoRA tinit=0, deltaT=1; controller "
            "sensitivity/proportional, warmup 0, interval 1: every step updates the importance and "
            "reallocates (the worst case)",
            "target": 1.10,
        },
        "P5_mfu": model_flops_utilization(trainers, times, peak),
    }


def model_flops_utilization(trainers: dict[str, Trainer], times: dict[str, list[float]], peak: dict) -> dict:
    """P5: FLOP/s of the LoRA and full steps (FLOPs counted over one step) / the best measured peak."""
    mfu = {}
    for name in ("peftlab_lora_qv", "peftlab_full"):
        flops = training_flops(trainers[name])
        achieved = flops / statistics.median(times[name]) / 1e9
        value = achieved / peak["best_gflops"]
        mfu[name] = {
            "step_gflop": flops / 1e9,
            "achieved_gflops": achieved,
            "mfu": value,
            "valid": peak["valid"] and 0 < value <= 1,
        }  # above 1: a peak measured under load
    return {
        **mfu,
        "flops_counted_with": "torch.utils.flop_counter.FlopCounterMode (one training step)",
        "peak": "the best matmul throughput of the peak measurement and of its repetitions interleaved with the steps",
        "target": 0.5,
    }


def training_flops(trainer: Trainer) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        trainer.step()
    return counter.get_total_flops()


def precision_figure(
    model: str | dict, img_size: int | None, images, labels, repeats: int, device: torch.device, n: int = 1024
) -> dict:
    """bf16 against fp32 on this machine, interleaved: a LoRA r=8 training step (bf16 autocast) and a
    square matmul (``n`` x ``n``); and a 4-bit (nf4) base in evaluation with bitsandbytes' CPU kernel against the
    reference arithmetic (``quant.cpu_kernel``). What they cost depends on the CPU (AVX2 only: bf16
    about 20x slower; AVX512-BF16: faster), so ``train.precision: auto`` stays fp32 on a CPU and a
    user switches on this measurement."""
    lora = make_cfg(model, img_size, "lora")
    steps = {precision: Trainer(lora, images, labels, precision, device=device) for precision in ("fp32", "bf16")}
    mats = {
        precision: [torch.randn(n, n, dtype=DTYPES[precision], device=device) for _ in range(2)] for precision in DTYPES
    }
    calls = {
        "fp32_step": steps["fp32"].step,
        "bf16_step": steps["bf16"].step,
        "fp32_matmul": lambda: mats["fp32"][0] @ mats["fp32"][1],
        "bf16_matmul": lambda: mats["bf16"][0] @ mats["bf16"][1],
    }
    if device.type == "cpu":
        for kernel in ("reference", "bnb"):
            torch.manual_seed(0)
            cfg = make_cfg(model, img_size, "lora", quant={"mode": "nf4", "cpu_kernel": kernel})
            tuner = apply_tuner(build_backbone(cfg.model, 10), cfg.method, TunerContext(10**6, device, cfg.quant))
            evaluated = tuner.model.eval()
            calls[f"nf4_{kernel}_eval"] = lambda m=evaluated: torch.no_grad()(m)(images)
    times = metrics.time_interleaved(calls, repeats, device, warmup=2)
    figure = {
        "bf16_vs_fp32_step": ratios(times, "bf16_step", "fp32_step"),
        "bf16_vs_fp32_matmul": ratios(times, "bf16_matmul", "fp32_matmul"),
        "auto_resolves_to": resolve_precision("auto", device),
        "cpu_flags": provenance.cpu_flags(),
        # on a GPU the steps and matmuls ran there: the row names it, not the host's flags
        "ran_on": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "step": "LoRA r=8 on q,v, bf16 autocast vs fp32",
        "matmul_size": n,
    }
    if "nf4_bnb_eval" in times:
        figure["nf4_bnb_kernel_vs_reference_eval"] = ratios(times, "nf4_bnb_eval", "nf4_reference_eval")
    return figure


def monitor_cost(trainer: Trainer, repeats: int) -> dict:
    """A LoRA step with the recipe's monitors at log points / the same step without them."""
    return model_monitor_cost(
        trainer.model,
        trainer.tuner.trainable_parameters(),
        trainer.step,
        lambda: compute_loss(trainer.model, trainer.images, trainer.labels, trainer.precision, trainer.device),
        repeats,
    )


def compile_figures(
    model: str | dict, img_size: int | None, images, labels, dtype: str, repeats: int, device: torch.device
) -> dict:
    """train.compile: compiled / eager step for LoRA (q, v) and full, P2 between the compiled
    steps, and the compile time (the first compiled step less the median eager step)."""
    trainers, compile_seconds = {}, {}
    for method in ("lora", "full"):
        cfg = make_cfg(model, img_size, method)
        trainers[f"{method}_eager"] = Trainer(cfg, images, labels, dtype, device=device)
        compiled = trainers[f"{method}_compiled"] = Trainer(cfg, images, labels, dtype, device=device, compiled=True)
        metrics.synchronize(device)
        start = time.perf_counter()
        compiled.step()
        metrics.synchronize(device)
        compile_seconds[method] = time.perf_counter() - start
    times = metrics.time_interleaved({k: t.step for k, t in trainers.items()}, repeats, device, warmup=1)
    return {
        "step_seconds": {k: spread(v) for k, v in times.items()},
        "compiled_vs_eager": {
            "lora": ratios(times, "lora_compiled", "lora_eager"),
            "full": ratios(times, "full_compiled", "full_eager"),
        },
        "P2_compiled": {**ratios(times, "lora_compiled", "full_compiled"), "target": 0.75},
        "compile_seconds": {k: v - statistics.median(times[f"{k}_eager"]) for k, v in compile_seconds.items()},
        "backend": "inductor (torch.compile defaults), nn.Module.compile as train.compile does",
    }
