"""peftlab's training step against the bare loop a user writes with timm and PEFT, on one GPU (issue 61).

    python benchmarks/gpu_steps.py OUT.json [--model vit_base_patch16_224] [--batch 64] [--precision bf16]

Every step below trains ViT-B/16 (random weights) on one fixed batch, timed in alternation (so drift
cancels), each timed call being ``CALL_STEPS`` steps after one sync, the way a training loop lets the host
run ahead of the GPU:

- ``bare_full`` / ``bare_lora_qkv``: timm + PEFT's LoRA r=8 on the whole fused qkv (the head trained),
  fused AdamW, bf16 autocast, clip at 1.0: the minimal loop;
- ``peftlab_full`` / ``peftlab_lora_qv`` / ``peftlab_lora_qkv``: the recipe's own step
  (``training.step.training_step``) for full fine-tuning and LoRA r=8 on q and v (the standard preset) or
  on the whole qkv;
- the same under ``torch.compile`` (``*_compiled``; ``nn.Module.compile`` as ``train.compile`` does).

It adds each step's FLOPs (``FlopCounterMode``) over the bf16 matmul peak measured here, and for the eager
LoRA and full steps a profile: kernels launched per step, the GPU's busy time per step and the largest
kernels, so a launch-bound step reads apart from a compute-bound one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

CALL_STEPS = 5
QKV = r"blocks\.\d+\.attn\.qkv"  # timm's whole fused qkv


class BareLoop:
    """The loop a user writes: timm, PEFT's LoRA on the whole qkv (or full), fused AdamW, autocast."""

    def __init__(self, model_name: str | dict, method: str, images, labels, precision: str, compiled: bool):
        import timm
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        spec = {"name": model_name} if isinstance(model_name, str) else dict(model_name)
        model = timm.create_model(spec.pop("name"), pretrained=False, num_classes=10, **spec)
        if method == "lora":
            model = get_peft_model(
                model, LoraConfig(r=8, lora_alpha=16, target_modules=["qkv"], modules_to_save=["head"])
            )
        self.model = model.to(images.device).train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4, fused=True)
        self.device_type = images.device.type
        self.images, self.labels = images, labels
        self.dtype = torch.bfloat16 if precision == "bf16" else None
        if compiled:
            self.model.compile()

    def step(self) -> None:
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None):
            loss = F.cross_entropy(self.model(self.images).float(), self.labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def peftlab_trainer(model_name: str, method: str, targets, images, labels, precision: str, compiled: bool):
    from peftlab.bench.common import Trainer, make_cfg

    cfg = make_cfg(model_name, None, method, targets)
    return Trainer(cfg, images, labels, precision, device=images.device, compiled=compiled)


def bf16_peak_tflops(device) -> float:
    n = 8192
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * 10 / (time.perf_counter() - start) / 1e12


def step_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def profile(step) -> dict:
    """Kernels per step, GPU busy milliseconds per step and the largest kernels, over 3 profiled steps."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    steps = 3
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - start) / steps
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / 1e3 / steps  # microseconds to ms
    by_name: dict[str, float] = {}
    for e in kernels:
        by_name[e.name] = by_name.get(e.name, 0.0) + e.device_time / 1e3 / steps
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
    return {
        "kernels_per_step": len(kernels) / steps,
        "gpu_busy_ms_per_step": busy,
        "wall_ms_per_step_profiled": wall * 1e3,
        "top_kernels_ms": [[name[:90], round(ms, 3)] for name, ms in top],
    }


def host_profile(step, steps: int = 20) -> list:
    """The Python functions that take the host's time in ``steps`` steps (cProfile, by own time)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    profiler.disable()
    stats = pstats.Stats(profiler).stats
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:25]
    return [
        [f"{path.split('/')[-1]}:{line}({name})", calls, round(own / steps * 1e3, 3)]
        for (path, line, name), (_, calls, own, _, _) in rows
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--host-profile", action="store_true", help="cProfile the eager LoRA steps' Python")
    parser.add_argument(
        "--tiny", action="store_true", help="a 2-block ViT at 32 px on the CPU: the script's own smoke test"
    )
    options = parser.parse_args()
    device = torch.device("cpu" if options.tiny else "cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    p, m = options.precision, options.model
    size = 224
    if options.tiny:
        from peftlab.training.device_check import MODEL  # the device checks' 2-block ViT at 32 px

        m, size = dict(MODEL), 32
    images = torch.randn(options.batch, 3, size, size, device=device)
    labels = (torch.arange(options.batch) % 10).to(device)
    steppers = {
        "bare_full": BareLoop(m, "full", images, labels, p, False).step,
        "bare_lora_qkv": BareLoop(m, "lora", images, labels, p, False).step,
        "peftlab_full": peftlab_trainer(m, "full", "standard", images, labels, p, False).step,
        "peftlab_lora_qv": peftlab_trainer(m, "lora", "standard", images, labels, p, False).step,
        "peftlab_lora_qkv": peftlab_trainer(m, "lora", [QKV], images, labels, p, False).step,
    }
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report: dict = {"model": m, "batch": options.batch, "precision": p, "gpu": gpu, "torch": torch.__version__}
    if device.type == "cuda":
        report["bf16_peak_tflops_measured"] = bf16_peak_tflops(device)
        profiled = ("bare_full", "bare_lora_qkv", "peftlab_full", "peftlab_lora_qv")
        report["profile"] = {name: profile(steppers[name]) for name in profiled}
        print(json.dumps(report["profile"], indent=1), flush=True)
    if options.host_profile:
        report["host_profile"] = {name: host_profile(steppers[name]) for name in ("bare_lora_qkv", "peftlab_lora_qv")}
    report["step_gflop"] = {name: step_flops(steppers[name]) / 1e9 for name in ("peftlab_full", "peftlab_lora_qv")}
    from peftlab.training import metrics

    if not options.no_compile:
        compile_seconds = {}
        for name, make in {
            "bare_full_compiled": lambda: BareLoop(m, "full", images, labels, p, True).step,
            "bare_lora_qkv_compiled": lambda: BareLoop(m, "lora", images, labels, p, True).step,
            "peftlab_full_compiled": lambda: peftlab_trainer(m, "full", "standard", images, labels, p, True).step,
            "peftlab_lora_qv_compiled": lambda: peftlab_trainer(m, "lora", "standard", images, labels, p, True).step,
        }.items():
            start = time.perf_counter()
            steppers[name] = make()
            steppers[name]()
            metrics.synchronize(device)
            compile_seconds[name] = time.perf_counter() - start
        report["compile_seconds"] = compile_seconds

    calls = {name: (lambda s=s: [s() for _ in range(CALL_STEPS)]) for name, s in steppers.items()}
    print("timing the steps in alternation", flush=True)
    times = metrics.time_interleaved(calls, options.repeats, device, warmup=1)
    ms = {name: statistics.median(v) / CALL_STEPS * 1e3 for name, v in times.items()}
    report["step_ms_median"] = ms

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    pairs = [
        ("peftlab_lora_qv", "peftlab_full"),
        ("bare_lora_qkv", "bare_full"),
        ("peftlab_lora_qv", "bare_lora_qkv"),
        ("peftlab_lora_qkv", "bare_lora_qkv"),
        ("peftlab_full", "bare_full"),
    ]
    if not options.no_compile:
        pairs += [
            ("peftlab_lora_qv_compiled", "peftlab_full_compiled"),
            ("bare_lora_qkv_compiled", "bare_full_compiled"),
            ("peftlab_lora_qv_compiled", "bare_lora_qkv_compiled"),
            ("peftlab_lora_qv_compiled", "peftlab_lora_qv"),
        ]
    report["ratios"] = {f"{a} / {b}": ratio(a, b) for a, b in pairs}
    peak = report.get("bf16_peak_tflops_measured", float("nan"))
    report["flops_over_measured_peak"] = {
        name: report["step_gflop"][base] / ms[name] / peak
        for name in ms
        for base in ("peftlab_full", "peftlab_lora_qv")
        if name.startswith(base)
    }
    with open(options.out, "w") as f:
        json.dump(report, f, indent=1)
    for key, value in report["ratios"].items():
        print(f"{key:55s} {value:.3f}")
    for key, value in ms.items():
        print(f"{key:35s} {value:8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
