"""``peftlab bench``: what peftlab costs, measured as ratios side by side in one process.

Every ratio compares two things timed in alternation (A, B, A, B, ...) after warm-up, so
drift of the machine cancels; each figure is the median of the repeats, with the spread
(min-max) beside it. Peak RSS is measured in separate worker processes, one per method.

- peak: the best measured matmul throughput for the dtype (square matmuls, several sizes).
- P1: peftlab's training step (the recipe's own ``training.step.training_step``) over a minimal hand-written PEFT + timm step on the same PEFT model (LoRA on timm's whole
  ``qkv``), and the cost of adapting exactly the q and v slices (split qkv) over that.
- P2: LoRA r=8 (q, v) step / full fine-tuning step.
- P3a: stored bytes of the quantized block Linears / their fp32 bytes (int8, nf4, nf4 + double
  quant, fp4), counted from the bitsandbytes layers' state dicts.
- P3b: peak RSS above the post-import baseline while training a ViT-Large (random weights, batch
  4, gradient checkpointing), each method in its own process: QLoRA (nf4 + double quant) /
  fp32 LoRA and / full fine-tuning; the model-building peak apart.
- P3c: QLoRA nf4 training step / fp32 LoRA step (interleaved with the P1/P2 steps).
- Adaptive ranks: AdaLoRA step and importance-controller step / LoRA step at the same built rank,
  reallocating on every step (interleaved with the others).
- P4: merged-model latency / base latency, and unmerged adapter latency / base latency.
- P4q: QA-LoRA (int4, group 32): the merged model (still quantized) / the same quantized base
  without adapters (the merge adds nothing), and that quantized model / the fp32 merged model.
- P5: model FLOP/s (counted by torch.utils.flop_counter.FlopCounterMode over one training
  step) / measured matmul peak.
- compile: the compiled (``train.compile``, inductor) / eager step for LoRA and full, and P2
  between the compiled steps; the compile time (first compiled step less an eager one) apart.
- ``--device cuda``: the same figures on a GPU, against the GPU's spec-sheet peak; the memory
  figures (peak RSS of host processes) and P6 are CPU-only and left out there.
- P6: fixed cost of a study run (worker fork, data load, model build, tuner, first batch)
  / the default study's mean per-run wall time.
- data: images/s of the data path alone (an ImageFolder of JPEGs written here, decoded, resized,
  augmented and normalised as training gets them, with ``data.num_workers``) / images/s of a
  deit_tiny_patch16_224 training step (LoRA r=8, batch as given), interleaved; >= 2 means the
  data path never limits training. ``peftlab bench --only data`` measures just this figure.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from peftlab import metrics, provenance
from peftlab.backbones import build_backbone, enable_grad_checkpointing, input_spec_for
from peftlab.config import RunConfig, load_config
from peftlab.errors import UserError
from peftlab.monitors.cost import model_monitor_cost
from peftlab.tuners import apply_tuner
from peftlab.tuners.base import TunerContext
from peftlab.training.evaluate import fetch
from peftlab.training.runtime import autocast, fused_adamw, resolve_precision, select_device, set_tf32
from peftlab.training.step import NonFinite, Optimization, compute_loss, epoch_batches, training_step, warmup_cosine

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def cpu_ceiling_gflops(dtype: str) -> dict:
    """The CPU's theoretical fp32 ceiling where Linux tells enough: cores (the threads used) x
    vector lanes (AVX-512: 16, AVX2: 8 fp32) x 2 (a fused multiply-add) x 2 FMA units (assumed:
    the count cannot be read) x the boost clock (cpufreq's cpuinfo_max_freq). Where the flags or
    the boost clock cannot be read (a VM often hides cpufreq), or for bf16, ``gflops`` is None and
    ``why`` says what was missing."""
    import re

    if dtype != "fp32":
        return {"gflops": None, "why": f"no CPU ceiling is computed for {dtype}"}
    try:
        cpuinfo = open("/proc/cpuinfo").read()
    except OSError:
        return {"gflops": None, "why": "/proc/cpuinfo cannot be read"}
    flags = set(re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M).group(1).split()) if "flags" in cpuinfo else set()
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else None
    if lanes is None:
        return {"gflops": None, "why": "the CPU flags name neither AVX-512 nor AVX2 with FMA"}
    freq = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"
    try:  # the boost clock; /proc/cpuinfo's "cpu MHz" is the nominal or current one, and a ceiling from it is too low
        ghz = int(open(freq).read()) / 1e6
    except (OSError, ValueError):
        return {"gflops": None, "why": f"the boost clock cannot be read ({freq} is missing: cpufreq is hidden)"}
    cores = torch.get_num_threads()
    return {"gflops": cores * lanes * 2 * 2 * ghz, "cores": cores, "fp32_lanes": lanes, "fma_units": 2,
            "ghz": ghz, "assumed": "2 FMA units per core"}


# dense (no sparsity) spec-sheet peaks in GFLOP/s, by a name torch.cuda.get_device_name() contains;
# TF32 is the fp32 matmul figure when train.tf32 allows it (the bench's own setting)
GPU_PEAKS = {"H200": {"fp32": 494_700, "bf16": 989_400}, "H100 PCIe": {"fp32": 378_000, "bf16": 756_000},
             "H100": {"fp32": 494_700, "bf16": 989_400}, "A100": {"fp32": 156_000, "bf16": 312_000},
             "L4": {"fp32": 60_000, "bf16": 121_000}}


def gpu_ceiling_gflops(dtype: str, name: str) -> dict:
    """The spec-sheet dense peak (TF32 for fp32 matmuls) of the GPU ``name``
    (``torch.cuda.get_device_name``); ``gflops`` None for a GPU not in ``GPU_PEAKS``."""
    for key, peaks in GPU_PEAKS.items():  # "H100 PCIe" before "H100": the first match wins
        if key in name:
            return {"gflops": peaks[dtype], "gpu": name, "source": "NVIDIA spec sheet, dense, TF32 for fp32"}
    return {"gflops": None, "gpu": name, "why": f"{name} has no spec-sheet peak in peftlab.bench.GPU_PEAKS"}


def peak_within_ceiling(peak: dict) -> bool:
    """False where the best measured peak exceeds the theoretical ceiling: a timing error or a
    wrong ceiling, never a result. True where no ceiling is known."""
    ceiling = (peak.get("ceiling") or {}).get("gflops")
    return ceiling is None or peak["best_gflops"] <= ceiling


def matmul_peak(dtype: str, repeats: int, device: torch.device = torch.device("cpu"),
                sizes=(512, 1024, 2048)) -> dict:
    """Best median GFLOP/s of ``a @ b`` over a few square sizes."""
    best = None
    if device.type == "cuda":
        sizes = (2048, 4096, 8192)
    for n in sizes:
        a = torch.randn(n, n, dtype=DTYPES[dtype], device=device)
        b = torch.randn(n, n, dtype=DTYPES[dtype], device=device)
        times = metrics.time_interleaved({"mm": lambda: a @ b}, repeats, device, warmup=2)["mm"]
        gflops = 2 * n ** 3 / statistics.median(times) / 1e9
        if best is None or gflops > best["gflops"]:
            best = {"gflops": gflops, "size": n, "seconds": spread(times)}
    return best


def make_cfg(model: str, img_size: int | None, method: str, targets="standard", r: int = 8,
             quant: dict | None = None, **options) -> RunConfig:
    method_cfg = {"name": method, "r": r, "target_modules": targets} if method in ("lora", "qalora") else {"name": method}
    method_cfg.update(options)
    overrides = {"model": {"name": model, "num_classes": 10}, "method": method_cfg, "quant": quant or {}}
    if img_size:
        overrides["model"]["img_size"] = img_size
    return load_config(overrides=overrides)


class Trainer:
    """One model, its optimizer and schedule, and a fixed batch: ``step()`` is one training step."""

    def __init__(self, cfg: RunConfig, images, labels, precision: str, hand_written: bool = False,
                 device: torch.device = torch.device("cpu"), compiled: bool = False):
        torch.manual_seed(0)
        self.device = device
        model = build_backbone(cfg.model, 10)
        if cfg.train.grad_checkpointing:
            enable_grad_checkpointing(model)
        self.precision, self.images, self.labels = precision, images.to(device), labels.to(device)
        self.device = device
        self.steps_taken = 0
        self.cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=precision, clip_grad=1.0))
        if hand_written:
            # the minimal loop a user writes: PEFT on timm's fused qkv, AdamW, backward, step
            from peft import LoraConfig, get_peft_model

            self.model = get_peft_model(model.to(device), LoraConfig(r=cfg.method.r, lora_alpha=cfg.method.lora_alpha,
                                                          target_modules=r"blocks\.\d+\.attn\.qkv",
                                                          modules_to_save=["head"]))
            self.params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(self.params, lr=1e-4)
            self.step = self.hand_step
        else:
            self.tuner = apply_tuner(model, cfg, TunerContext(10 ** 6, device, cfg.quant))
            self.model = self.tuner.model.to(device)
            self.params = list(self.tuner.trainable_parameters().values())
            self.optimizer = torch.optim.AdamW(self.tuner.param_groups(1e-4, 0.01, 1e-4, 0.01),
                                               fused=fused_adamw(None, device) or None)
            self.tuner.attach_optimizer(self.optimizer)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(10 ** 6, 0.0))
            self.scaler = torch.amp.GradScaler(device.type, enabled=False)
            self.nonfinite = NonFinite(device, precision)
            self.optimization = Optimization(self.optimizer, self.scheduler, self.scaler, self.params,
                                             self.cfg.train.precision, self.cfg.train.clip_grad, device)
            self.step = self.recipe_step
        self.model.train()
        if compiled:  # what train.compile does; the first step compiles
            self.model.compile()

    def recipe_step(self) -> None:
        """The recipe's own training step (training.step.training_step); the step count advances, so
        rank controllers reallocate as they would in a run."""
        training_step(self.model, self.tuner, [(self.images, self.labels)], self.optimization, step=self.steps_taken,
                      n_micro=1, nonfinite=self.nonfinite)
        self.steps_taken += 1

    def hand_step(self) -> None:
        with autocast(self.precision, self.device):
            loss = F.cross_entropy(self.model(self.images).float(), self.labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def precision_figure(model: str, img_size: int | None, images, labels, repeats: int, device: torch.device) -> dict:
    """bf16 against fp32 on this machine, interleaved: a LoRA r=8 training step (bf16 autocast) and a
    square matmul; and a 4-bit (nf4) base in evaluation with bitsandbytes' CPU kernel against the
    reference arithmetic (``quant.cpu_kernel``). What they cost depends on the CPU (AVX2 only: bf16
    about 20x slower; AVX512-BF16: faster), so ``train.precision: auto`` stays fp32 on a CPU and a
    user switches on this measurement."""
    lora = make_cfg(model, img_size, "lora")
    steps = {precision: Trainer(lora, images, labels, precision, device=device) for precision in ("fp32", "bf16")}
    n = 1024
    mats = {precision: [torch.randn(n, n, dtype=DTYPES[precision], device=device) for _ in range(2)]
            for precision in DTYPES}
    calls = {"fp32_step": steps["fp32"].step, "bf16_step": steps["bf16"].step,
             "fp32_matmul": lambda: mats["fp32"][0] @ mats["fp32"][1],
             "bf16_matmul": lambda: mats["bf16"][0] @ mats["bf16"][1]}
    if device.type == "cpu":
        for kernel in ("reference", "bnb"):
            torch.manual_seed(0)
            cfg = make_cfg(model, img_size, "lora", quant={"mode": "nf4", "cpu_kernel": kernel})
            tuner = apply_tuner(build_backbone(cfg.model, 10), cfg, TunerContext(10 ** 6, device, cfg.quant))
            evaluated = tuner.model.eval()
            calls[f"nf4_{kernel}_eval"] = lambda m=evaluated: torch.no_grad()(m)(images)
    times = metrics.time_interleaved(calls, repeats, device, warmup=2)

    def ratio(a: str, b: str) -> dict:
        return spread([x / y for x, y in zip(times[a], times[b])])

    figure = {"bf16_vs_fp32_step": ratio("bf16_step", "fp32_step"),
              "bf16_vs_fp32_matmul": ratio("bf16_matmul", "fp32_matmul"),
              "auto_resolves_to": resolve_precision("auto", device),
              "cpu_flags": provenance.cpu_flags(), "step": "LoRA r=8 on q,v, bf16 autocast vs fp32",
              "matmul_size": n}
    if "nf4_bnb_eval" in times:
        figure["nf4_bnb_kernel_vs_reference_eval"] = ratio("nf4_bnb_eval", "nf4_reference_eval")
    return figure


def training_flops(trainer: Trainer) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        trainer.step()
    return counter.get_total_flops()


def inference_latency(cfg: RunConfig, images, precision: str, repeats: int,
                      device: torch.device = torch.device("cpu")) -> dict:
    torch.manual_seed(0)
    base = build_backbone(cfg.model, 10).to(device).eval()
    tuner = apply_tuner(copy.deepcopy(base), cfg)
    with torch.no_grad():
        for name, param in tuner.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)  # a trained-looking adapter: the merge is not a no-op
    adapter = tuner.model.eval()
    merged = tuner.merged_model().eval()

    def run(model):
        def call():
            with torch.no_grad(), autocast(precision, device):
                model(images)
        return call

    times = metrics.time_interleaved({"base": run(base), "merged": run(merged), "adapter": run(adapter)},
                                     repeats, device, warmup=2)
    ratios = {
        "merged_vs_base": [m / b for m, b in zip(times["merged"], times["base"])],
        "adapter_vs_base": [a / b for a, b in zip(times["adapter"], times["base"])],
    }
    return {"seconds": {k: spread(v) for k, v in times.items()}, "ratios": {k: spread(v) for k, v in ratios.items()}}


def qalora_latency(cfg: RunConfig, images, precision: str, repeats: int,
                   device: torch.device = torch.device("cpu")) -> dict:
    """QA-LoRA: merged (quantized) / quantized base without adapters, and quantized / fp32 merged."""
    torch.manual_seed(0)
    tuner = apply_tuner(build_backbone(cfg.model, 10), cfg, TunerContext(None, device, cfg.quant))
    tuner.model.to(device)
    plain = tuner.merged_model(quantized=True).eval()  # B = 0: the quantized base, no adapters
    with torch.no_grad():
        for name, param in tuner.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    merged = tuner.merged_model(quantized=True).eval()
    fp32 = tuner.merged_model().eval()
    images = images.to(device)

    def run(model):
        def call():
            with torch.no_grad(), autocast(precision, device):
                model(images)
        return call

    times = metrics.time_interleaved({"quantized_base": run(plain), "merged": run(merged), "fp32_merged": run(fp32)},
                                     repeats, device, warmup=2)
    ratios = {"merged_vs_quantized_base": [m / b for m, b in zip(times["merged"], times["quantized_base"])],
              "quantized_vs_fp32": [m / f for m, f in zip(times["merged"], times["fp32_merged"])]}
    return {"format": cfg.method.format, "group_size": cfg.method.group_size,
            "seconds": {k: spread(v) for k, v in times.items()}, "ratios": {k: spread(v) for k, v in ratios.items()}}


def peak_rss_child(cfg_dict: dict, precision: str, batch: int, img_size: int, queue) -> None:
    """In a fresh worker: build, train 3 steps, report peak RSS and weight bytes."""
    from peftlab.config import RunConfig, from_dict

    cfg = from_dict(RunConfig, cfg_dict)
    images = torch.randn(batch, 3, img_size, img_size)
    labels = torch.arange(batch) % 10
    trainer = Trainer(cfg, images, labels, precision)
    for _ in range(3):
        trainer.step()
    queue.put({"peak_rss_bytes": metrics.peak_rss_bytes(), "weights_bytes": metrics.weights_bytes(trainer.model)})


def memory(cfgs: dict[str, RunConfig], precision: str, batch: int, img_size: int) -> dict:
    from peftlab.config import to_dict
    from peftlab.study.runner import worker_context

    ctx = worker_context()
    out = {}
    for name, cfg in cfgs.items():
        queue = ctx.Queue()
        proc = ctx.Process(target=peak_rss_child, args=(to_dict(cfg), precision, batch, img_size, queue))
        proc.start()
        out[name] = queue.get(timeout=1800)
        proc.join()
    return out


def study_overhead(default_study_dir: Path) -> dict:
    """Fixed cost of one run against the default study's mean per-run wall time."""
    from peftlab.data import build_data

    results = [json.loads(p.read_text()) for p in default_study_dir.glob("runs/*/result.json")]
    walls = [r["timing"]["wall_seconds"] for r in results if r.get("status") == "completed"]
    lora = [r for r in results if r.get("status") == "completed" and r["config"]["method"]["name"] == "lora"]
    if not walls or not lora:
        return {"skipped": f"no completed default study in {default_study_dir} (run `make study` first)"}
    cfg = load_config(overrides=lora[0]["config"])
    times = []
    for _ in range(3):
        start = time.perf_counter()
        spec = input_spec_for(cfg.model)
        data = build_data(cfg.data, img_size=spec.img_size, in_chans=spec.in_chans, mean=spec.mean, std=spec.std)
        model = build_backbone(cfg.model, data.info.num_classes)
        tuner = apply_tuner(model, cfg)
        images, labels = fetch(data.train, torch.arange(cfg.train.batch_size), torch.device("cpu"))
        F.cross_entropy(tuner.model(images), labels).backward()
        times.append(time.perf_counter() - start)
    fork = fork_seconds()
    fixed = statistics.median(times) + fork
    per_run = statistics.mean(walls)
    return {"fixed_seconds": fixed, "fork_seconds": fork, "setup_seconds": spread(times),
            "mean_run_wall_seconds": per_run, "runs": len(walls), "ratio": fixed / per_run,
            "import_seconds_once_per_study": import_seconds()}


def _noop() -> None:
    return None


def fork_seconds() -> float:
    from peftlab.study.runner import worker_context

    ctx = worker_context()
    ctx.Process(target=_noop).start()  # starts the forkserver (imports once per study)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        proc = ctx.Process(target=_noop)
        proc.start()
        proc.join()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def import_seconds() -> float:
    import subprocess
    import sys

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import peftlab.training.run, peftlab.data, timm, peft"], check=True)
    return time.perf_counter() - start


def write_jpeg_folder(directory: Path, n_train: int, size: int = 256, classes: int = 8, n_test: int = 16,
                      seed: int = 0) -> None:
    """An ImageFolder (train/<class>/, test/<class>/) of size x size RGB JPEGs (quality 90): smooth
    random colour fields with pixel noise, which compress and decode like photographs do."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        for i in range(count):
            folder = directory / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            field = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
            pixels = np.asarray(field, dtype=np.int16) + rng.integers(-16, 17, (size, size, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)


DATA_PATH_MODEL = "deit_tiny_patch16_224"


def data_path(batch: int, repeats: int, num_workers: int | None, device: torch.device, n_images: int = 512,
              model: str = DATA_PATH_MODEL, cache: bool = False, progress=print) -> dict:
    """Images/s of the data path alone / images/s of a training step of ``model`` (LoRA r=8), interleaved.

    The data path: an ImageFolder of ``n_images`` 256 px JPEGs written to a temporary folder, read
    as a run reads it (decode, resize to the model's input, augment, normalise, on ``device``),
    one epoch per repetition through the recipe's own ``BatchLoader`` with persistent workers.
    With ``cache`` the images are decoded once beforehand (``data.cache``, kept in the temporary
    folder) and the figure times the memory-mapped path later epochs and runs take.
    """
    import tempfile

    from peftlab.data import build_data
    from peftlab.data.loading import BatchLoader

    cfg = make_cfg(model, None, "lora")
    spec = input_spec_for(cfg.model)
    with tempfile.TemporaryDirectory(prefix="peftlab-bench-data-") as tmp:
        progress(f"data: writing {n_images} JPEGs of 256 px")
        write_jpeg_folder(Path(tmp) / "jpegs", n_images)
        data_cfg = load_config(overrides={"data": {"name": "imagefolder", "root": f"{tmp}/jpegs", "val_fraction": 0.0,
                                                   "augment": True, "num_workers": num_workers, "cache": cache}}).data
        data = build_data(data_cfg, img_size=spec.img_size, in_chans=spec.in_chans, mean=spec.mean, std=spec.std,
                          device=device, cache_dir=Path(tmp) / "cache")  # the decoded copy goes with the JPEGs
        loader = BatchLoader(data.train, device, num_workers, persistent=True)
        epochs = iter(range(10 ** 6))

        def data_epoch() -> None:
            for _ in loader(epoch_batches(len(data.train), batch, 0, next(epochs))):
                pass

        images = torch.randn(batch, 3, spec.img_size, spec.img_size)
        trainer = Trainer(cfg, images, torch.arange(batch) % 10, "fp32", device=device)
        progress(f"data: {len(data.train)} images per epoch / {model} steps (interleaved)")
        times = metrics.time_interleaved({"data_epoch": data_epoch, "step": trainer.step}, repeats, device)
        workers = loader.num_workers
        del loader  # its workers end here
    data_ips = [len(data.train) / t for t in times["data_epoch"]]
    step_ips = [batch / t for t in times["step"]]
    ratio = spread([d / s for d, s in zip(data_ips, step_ips)])
    return {"model": model, "img_size": spec.img_size, "batch": batch, "images": len(data.train),
            "jpeg_size": 256, "augment": True, "cache": cache, "device": str(device),
            "num_workers": workers, "num_workers_config": num_workers,
            "data_images_per_second": spread(data_ips), "step_images_per_second": spread(step_ips),
            "ratio": ratio, "target": 2.0, "meets_target": ratio["median"] >= 2.0}


def run_bench(model: str = "deit_small_patch16_224", img_size: int | None = None, batch: int = 32,
              dtype: str = "fp32", repeats: int = 5, default_study_dir: Path = Path("runs/default"),
              with_memory: bool = True, large_model: str | None = "vit_large_patch16_224", large_steps: int = 2,
              device: str = "cpu", with_compile: bool = True, only: str | None = None,
              num_workers: int | None = None, data_images: int = 512, data_cache: bool = False,
              progress=print) -> dict:
    """Every figure (``only=None``), or just one (``only="data"``) on ``device`` ("cpu", "cuda" or
    "auto"), the data figure with ``num_workers`` decoding processes (None: chosen for the device)."""

    torch.manual_seed(0)
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("peftlab bench --device cuda: no CUDA device is available here")
    dev = select_device(device)
    set_tf32(True, dev)  # train.tf32's default
    lora_cfg = make_cfg(model, img_size, "lora")
    size = input_spec_for(lora_cfg.model).img_size
    images = torch.randn(batch, 3, size, size, device=dev)
    labels = (torch.arange(batch) % 10).to(dev)
    report = {"model": model, "img_size": size, "batch": batch, "dtype": dtype, "repeats": repeats,
              "device": str(dev), "threads": torch.get_num_threads(), "versions": provenance.package_versions(),
              "hardware": provenance.hardware(dev)}
    report["load_average_start"] = os.getloadavg()
    if only == "precision":
        report["precision"] = precision_figure(model, img_size, images, labels, repeats, dev)
        report["load_average_end"] = os.getloadavg()
        return report
    if only == "data":
        report["model"] = DATA_PATH_MODEL  # the header names the model the figure trains
        report["data_path"] = data_path(batch, repeats, num_workers, dev, data_images,
                                        cache=data_cache, progress=progress)
        report["load_average_end"] = os.getloadavg()
        return report

    progress("peak: matmul throughput")
    ceiling = cpu_ceiling_gflops(dtype) if dev.type == "cpu" else gpu_ceiling_gflops(dtype, torch.cuda.get_device_name(dev))
    report["peak"] = {**matmul_peak(dtype, repeats, dev), "ceiling": ceiling}

    progress("P1/P2/P5: training steps (interleaved)")
    trainers = {
        "hand_written_peft_qkv": Trainer(make_cfg(model, img_size, "lora", [r"blocks\.\d+\.attn\.qkv"]), images,
                                         labels, dtype, hand_written=True, device=dev),
        "peftlab_lora_qkv": Trainer(make_cfg(model, img_size, "lora", [r"blocks\.\d+\.attn\.qkv"]), images,
                                    labels, dtype, device=dev),
        "peftlab_lora_qv": Trainer(lora_cfg, images, labels, dtype, device=dev),
        "peftlab_full": Trainer(make_cfg(model, img_size, "full"), images, labels, dtype, device=dev),
        "peftlab_qlora_nf4": Trainer(make_cfg(model, img_size, "lora", quant={"mode": "nf4"}), images, labels, dtype,
                                     device=dev),
        # rank controllers at the same built rank as LoRA r=8, reallocating on every step (their worst case)
        "peftlab_adalora": Trainer(make_cfg(model, img_size, "adalora", init_r=8, target_r=4, tinit=0, deltaT=1),
                                   images, labels, dtype, device=dev),
        "peftlab_adaptive": Trainer(make_cfg(model, img_size, "adaptive", r=4, max_rank=8, warmup=0, interval=1,
                                             final_step=0.99, importance="sensitivity"), images, labels, dtype,
                                    device=dev),
    }
    n = report["peak"]["size"]  # the peak is measured again in every repetition, between the steps
    a, b = (torch.randn(n, n, dtype=DTYPES[dtype], device=dev) for _ in range(2))
    times = metrics.time_interleaved({**{k: t.step for k, t in trainers.items()}, "peak_matmul": lambda: a @ b},
                                     repeats, dev, warmup=2)
    interleaved = [2 * n ** 3 / s / 1e9 for s in times.pop("peak_matmul")]
    report["peak"] = {**report["peak"], "interleaved_gflops": spread(interleaved),
                      "best_gflops": max(report["peak"]["gflops"], *interleaved)}
    report["peak"]["valid"] = peak_within_ceiling(report["peak"])
    report["step_seconds"] = {k: spread(v) for k, v in times.items()}

    def ratio(a: str, b: str) -> dict:
        return spread([x / y for x, y in zip(times[a], times[b])])

    report["P1_overhead"] = {"recipe_vs_hand_written": ratio("peftlab_lora_qkv", "hand_written_peft_qkv"),
                             "qv_slices_vs_hand_written": ratio("peftlab_lora_qv", "hand_written_peft_qkv"),
                             "target": 1.03}
    report["P2_lora_vs_full"] = {**ratio("peftlab_lora_qv", "peftlab_full"), "target": 0.75}
    report["P3c_qlora_vs_lora_step"] = {**ratio("peftlab_qlora_nf4", "peftlab_lora_qv"), "target": 1.15}
    report["adaptive_rank_steps"] = {
        "adalora_vs_lora": ratio("peftlab_adalora", "peftlab_lora_qv"),
        "controller_vs_lora": ratio("peftlab_adaptive", "peftlab_lora_qv"),
        "setting": "built rank 8 on q,v like LoRA r=8; AdaLoRA tinit=0, deltaT=1; controller sensitivity/proportional, "
                   "warmup 0, interval 1: every step updates the importance and reallocates (the worst case)",
        "target": 1.10}
    mfu = {}
    for name in ("peftlab_lora_qv", "peftlab_full"):
        flops = training_flops(trainers[name])
        achieved = flops / statistics.median(times[name]) / 1e9
        value = achieved / report["peak"]["best_gflops"]
        mfu[name] = {"step_gflop": flops / 1e9, "achieved_gflops": achieved, "mfu": value,
                     "valid": report["peak"]["valid"] and 0 < value <= 1}  # above 1: a peak measured under load
    report["P5_mfu"] = {**mfu, "flops_counted_with": "torch.utils.flop_counter.FlopCounterMode (one training step)",
                        "peak": "the best matmul throughput of the peak measurement and of its repetitions "
                                "interleaved with the steps", "target": 0.5}
    progress("precision: bf16 / fp32 steps and matmuls, nf4 with bitsandbytes' CPU kernel / reference (interleaved)")
    report["precision"] = precision_figure(model, img_size, images, labels, repeats, dev)
    progress("monitor cost: a step with monitors at log points / a step without")
    t = trainers["peftlab_lora_qv"]
    report["monitor_cost"] = model_monitor_cost(t.model, t.tuner.trainable_parameters(), t.step, lambda: compute_loss(
        t.model, t.images, t.labels, t.precision, dev), repeats)
    del trainers

    if with_compile:
        progress("compile: compiled / eager steps (interleaved), compile time apart")
        report["compile"] = compile_figures(model, img_size, images, labels, dtype, repeats, dev)

    progress("P3a: stored bytes of quantized block Linears")
    report["P3a_quantized_bytes"] = {**quantized_bytes(lora_cfg), "target": {"nf4_double_quant": 0.15}}

    progress("P4: inference latency (interleaved)")
    report["P4_merged_inference"] = {**inference_latency(lora_cfg, images, dtype, repeats, dev), "target": 1.01}
    progress("P4q: QA-LoRA inference latency (interleaved)")
    report["P4q_qalora_inference"] = {**qalora_latency(make_cfg(model, img_size, "qalora"), images, dtype, repeats,
                                                       dev), "target": {"merged_vs_quantized_base": 1.01}}
    if dev.type == "cuda":  # the rest measures host processes (peak RSS, forks): CPU figures
        report["load_average_end"] = os.getloadavg()
        return report

    progress("P6: study overhead")
    report["P6_study_overhead"] = {**study_overhead(default_study_dir), "target": 0.05}

    if with_memory:
        progress("memory: peak RSS per method (separate processes)")
        report["memory"] = memory({"full": make_cfg(model, img_size, "full"), "lora_qv_r8": lora_cfg},
                                  dtype, batch, size)
    if large_model:
        progress(f"P3b: peak RSS training {large_model} (separate processes)")
        report["P3b_large_model_memory"] = large_model_memory(large_model, steps=large_steps, img_size=img_size)
    progress("data: the data path / a deit_tiny training step (interleaved)")
    report["data_path"] = data_path(batch, repeats, num_workers, select_device(device), data_images,
                                        cache=data_cache, progress=progress)
    report["load_average_end"] = os.getloadavg()  # with the start's: a quiet run reads near 0, a loaded one not
    return report


def compile_figures(model: str, img_size: int | None, images, labels, dtype: str, repeats: int,
                    device: torch.device) -> dict:
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

    def ratio(a: str, b: str) -> dict:
        return spread([x / y for x, y in zip(times[a], times[b])])

    return {"step_seconds": {k: spread(v) for k, v in times.items()},
            "compiled_vs_eager": {"lora": ratio("lora_compiled", "lora_eager"),
                                  "full": ratio("full_compiled", "full_eager")},
            "P2_compiled": {**ratio("lora_compiled", "full_compiled"), "target": 0.75},
            "compile_seconds": {k: v - statistics.median(times[f"{k}_eager"]) for k, v in compile_seconds.items()},
            "backend": "inductor (torch.compile defaults), nn.Module.compile as train.compile does"}


QUANT_MODES = {"int8": {"mode": "int8"}, "nf4": {"mode": "nf4"}, "nf4_double_quant": {"mode": "nf4", "double_quant": True},
               "fp4": {"mode": "fp4"}}


def quantized_bytes(cfg: RunConfig) -> dict:
    """Stored bytes of the quantized block Linears relative to the same Linears in fp32, per mode."""
    from peftlab.quant import is_quantized_linear, quantize_base

    torch.manual_seed(0)
    base = build_backbone(cfg.model, 10)
    out = {}
    for name, quant in QUANT_MODES.items():
        model = copy.deepcopy(base)
        quantize_base(model, dataclasses.replace(cfg.quant, **quant), torch.device("cpu"))
        layers = [m for n, m in model.named_modules() if is_quantized_linear(m) and ".blocks." in f".{n}"]
        stored = sum(t.numel() * t.element_size() for m in layers for t in m.state_dict().values())
        fp32 = sum(4 * (m.in_features * m.out_features + m.out_features) for m in layers)
        out[name] = {"ratio": stored / fp32, "stored_bytes": stored, "fp32_bytes": fp32, "layers": len(layers)}
    return out


LARGE_METHODS = {"qlora_nf4_dq": ("lora", {"mode": "nf4", "double_quant": True}), "lora_fp32": ("lora", {}),
                 "full": ("full", {})}


def large_model_child(model: str, img_size: int | None, method: str, quant: dict, steps: int, queue) -> None:
    """In a fresh process: build (peak apart), train ``steps`` steps at batch 4 with gradient checkpointing."""
    cfg = dataclasses.replace(make_cfg(model, img_size, method, quant=quant), train=load_config(
        overrides={"train": {"grad_checkpointing": True, "clip_grad": 1.0}}).train)
    size = input_spec_for(cfg.model).img_size
    images, labels = torch.randn(4, 3, size, size), torch.arange(4)
    rss = metrics.PeakRSS()
    trainer = Trainer(cfg, images, labels, "fp32")
    build_peak = rss.peak_above_baseline()
    rss.reset_peak()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    queue.put({"peak_rss_above_baseline_bytes": rss.peak_above_baseline(),  # training only, build apart
               "build_peak_rss_bytes": build_peak,
               "rss_baseline_bytes": rss.baseline, "trainable": sum(p.numel() for p in trainer.params),
               **trainer.tuner.base_weight_bytes(), "step_seconds": (time.perf_counter() - start) / steps})


def large_model_memory(model: str, steps: int = 2, img_size: int | None = None) -> dict:
    from peftlab.study.runner import worker_context

    ctx = worker_context()
    out = {"model": model, "batch": 4, "steps": steps, "grad_checkpointing": True}
    for name, (method, quant) in LARGE_METHODS.items():
        queue = ctx.Queue()
        proc = ctx.Process(target=large_model_child, args=(model, img_size, method, quant, steps, queue))
        proc.start()
        out[name] = queue.get(timeout=3600)
        proc.join()
    peak = {name: out[name]["peak_rss_above_baseline_bytes"] for name in LARGE_METHODS}
    out["ratios"] = {"qlora_vs_lora": peak["qlora_nf4_dq"] / peak["lora_fp32"],
                     "qlora_vs_full": peak["qlora_nf4_dq"] / peak["full"],
                     "target": {"qlora_vs_lora": 0.35, "qlora_vs_full": 0.10}}
    return out


def precision_rows(report: dict) -> list[tuple[str, str, str]]:
    figure = report.get("precision")
    if not figure:
        return []
    flags = " ".join(figure["cpu_flags"]) or "flags unknown"
    rows = []
    for key, label in (("bf16_vs_fp32_step", "bf16 / fp32 LoRA step"), ("bf16_vs_fp32_matmul", "bf16 / fp32 matmul"),
                       ("nf4_bnb_kernel_vs_reference_eval", "nf4 eval, bnb CPU kernel / reference")):
        if key in figure:
            value = figure[key]
            rows.append((label, f"{value['median']:.3f} [{value['min']:.3f}-{value['max']:.3f}] ({flags})", ""))
    rows.append(("   train.precision auto on this device", figure["auto_resolves_to"], ""))
    return rows


def figure_rows(report: dict) -> list[tuple[str, str, str]]:
    """(name, value, target) rows of the full bench's figures."""
    def med(d):
        return d["median"]

    peak = report["peak"]
    ceiling = peak.get("ceiling") or {}
    shown_ceiling = (f"; ceiling {ceiling['gflops']:.0f}" if ceiling.get("gflops") else
                     f"; no ceiling: {ceiling['why']}" if ceiling.get("why") else "")
    rows = [("peak matmul", f"{peak.get('best_gflops', peak['gflops']):.1f} GFLOP/s (n={peak['size']}, best of "
             f"{1 + peak.get('interleaved_gflops', {}).get('n', 0)} measurements){shown_ceiling}"
             + ("" if peak.get("valid", True) else " INVALID: above the ceiling"), "")]
    p1 = report["P1_overhead"]
    rows.append(("P1 recipe / hand-written step", f"{med(p1['recipe_vs_hand_written']):.3f} "
                 f"[{p1['recipe_vs_hand_written']['min']:.3f}-{p1['recipe_vs_hand_written']['max']:.3f}]", "<= 1.03"))
    rows.append(("   q,v slices / hand-written", f"{med(p1['qv_slices_vs_hand_written']):.3f}", ""))
    p2 = report["P2_lora_vs_full"]
    rows.append(("P2 LoRA r=8 / full step", f"{med(p2):.3f} [{p2['min']:.3f}-{p2['max']:.3f}]", "<= 0.75"))
    p3c = report["P3c_qlora_vs_lora_step"]
    rows.append(("P3c QLoRA nf4 / LoRA step", f"{med(p3c):.3f} [{p3c['min']:.3f}-{p3c['max']:.3f}]", "<= 1.15"))
    adaptive = report.get("adaptive_rank_steps")
    if adaptive:
        for name, label in (("adalora_vs_lora", "AdaLoRA / LoRA step"), ("controller_vs_lora", "controller / LoRA step")):
            value = adaptive[name]
            rows.append((label, f"{med(value):.3f} [{value['min']:.3f}-{value['max']:.3f}] (reallocating every step)",
                         "<= 1.10"))
    for name, value in report["P3a_quantized_bytes"].items():
        if name != "target":
            rows.append((f"P3a stored bytes {name} / fp32", f"{value['ratio']:.3f}",
                         "<= 0.15" if name == "nf4_double_quant" else ""))
    p3b = report.get("P3b_large_model_memory")
    if p3b:
        for name in LARGE_METHODS:
            rows.append((f"P3b {p3b['model']} {name}", f"train peak {p3b[name]['peak_rss_above_baseline_bytes'] / 2**20:.0f}"
                         f" MiB, build peak {p3b[name]['build_peak_rss_bytes'] / 2**20:.0f} MiB", ""))
        rows.append(("P3b QLoRA / LoRA peak RSS", f"{p3b['ratios']['qlora_vs_lora']:.3f}", "<= 0.35"))
        rows.append(("P3b QLoRA / full peak RSS", f"{p3b['ratios']['qlora_vs_full']:.3f}", "<= 0.10"))
    p4 = report["P4_merged_inference"]["ratios"]
    rows.append(("P4 merged / base latency", f"{med(p4['merged_vs_base']):.3f}", "<= 1.01"))
    rows.append(("   adapter / base latency", f"{med(p4['adapter_vs_base']):.3f}", ""))
    p4q = report.get("P4q_qalora_inference")
    if p4q:
        rows.append((f"P4q QA-LoRA {p4q['format']} merged / quantized base",
                     f"{med(p4q['ratios']['merged_vs_quantized_base']):.3f}", "<= 1.01"))
        rows.append(("    quantized / fp32 merged latency", f"{med(p4q['ratios']['quantized_vs_fp32']):.3f}", ""))
    for name, value in report["P5_mfu"].items():
        if isinstance(value, dict):
            shown = (f"{value['mfu']:.3f} ({value['achieved_gflops']:.1f} GFLOP/s)" if value.get("valid", True) else
                     f"INVALID: {value['mfu']:.2f} is outside (0, 1]; the machine was loaded, run it again quietly")
            rows.append((f"P5 MFU {name}", shown, ">= 0.5"))
    rows += precision_rows(report)
    comp = report.get("compile")
    if comp:
        for method in ("lora", "full"):
            value = comp["compiled_vs_eager"][method]
            rows.append((f"compiled / eager step {method}", f"{med(value):.3f} [{value['min']:.3f}-{value['max']:.3f}]"
                         f" (compile {comp['compile_seconds'][method]:.0f} s)", ""))
        p2c = comp["P2_compiled"]
        rows.append(("P2 compiled LoRA / compiled full", f"{med(p2c):.3f} [{p2c['min']:.3f}-{p2c['max']:.3f}]",
                     "<= 0.75"))
    if "monitor_cost" in report:
        mc = report["monitor_cost"]
        rows.append(("monitors at log points / none", f"{mc['ratio']['median']:.4f} [{mc['ratio']['min']:.4f}-"
                     f"{mc['ratio']['max']:.4f}] (log_every {mc['log_every']})", "<= 1.03"))
    p6 = report.get("P6_study_overhead", {"skipped": "CPU only"})
    rows.append(("P6 run fixed cost / run time", f"{p6['ratio']:.3f} ({p6['fixed_seconds']:.2f}s of "
                 f"{p6['mean_run_wall_seconds']:.1f}s)" if "ratio" in p6 else p6["skipped"], "<= 0.05"))
    for name, mem in (report.get("memory") or {}).items():
        rows.append((f"peak RSS {name}", f"{mem['peak_rss_bytes'] / 2**20:.0f} MiB "
                     f"(weights {mem['weights_bytes'] / 2**20:.1f} MiB)", ""))
    return rows


def format_report(report: dict) -> str:
    def med(d):
        return d["median"]

    load = ""
    if report.get("load_average_start") and report.get("load_average_end"):
        load = (f"; load average {report['load_average_start'][0]:.1f} at the start, "
                f"{report['load_average_end'][0]:.1f} at the end")
    where = (f"{report['threads']} threads" if report.get("device", "cpu") == "cpu" else
             f"{report['hardware'].get('gpu') or report['device']}")
    lines = [f"peftlab bench: {report['model']} at {report['img_size']} px, batch {report['batch']}, "
             f"{report['dtype']}, {where}, {report['repeats']} interleaved repeats "
             f"({report['hardware']['cpu']}{load})", ""]
    rows = figure_rows(report) if "peak" in report else precision_rows(report)
    data = report.get("data_path")
    if data:
        rows.append(("data path / deit_tiny step", f"{med(data['ratio']):.2f} [{data['ratio']['min']:.2f}-"
                     f"{data['ratio']['max']:.2f}] ({med(data['data_images_per_second']):.0f} / "
                     f"{med(data['step_images_per_second']):.1f} images/s, {data['num_workers']} workers, "
                     f"{'cached, ' if data.get('cache') else ''}{data['device']})", ">= 2"))
    width = max(len(r[0]) for r in rows)
    lines += [f"{name:<{width}}  {value:<40} {target}" for name, value, target in rows]
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=lambda v: None if isinstance(v, float) and
                               math.isnan(v) else str(v)) + "\n")

