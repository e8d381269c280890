"""``run_bench``: the figures of ``FIGURES`` in order, each a function of the bench that returns its
part of the report (a dict of report keys), with the header and the load averages around them."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from peftlab.bench.bare import bare_figure
from peftlab.bench.common import Trainer, make_cfg
from peftlab.bench.data import DATA_PATH_MODEL, data_path
from peftlab.bench.fixed_cost import run_fixed_cost
from peftlab.bench.memory import large_model_memory, memory
from peftlab.bench.methods import methods_figure
from peftlab.bench.peak import cpu_ceiling_gflops, gpu_ceiling_gflops, matmul_peak
from peftlab.bench.pin import pin_figure
from peftlab.bench.steps import compile_figures, monitor_cost, precision_figure, step_figures, step_trainers
from peftlab.bench.text import TextSizes, text_figure
from peftlab.bench.weights import inference_latency, qalora_latency, quantized_bytes
from peftlab.config.schema import RunConfig
from peftlab.models.backbones import input_spec_for
from peftlab.quant import allocator
from peftlab.training.runtime import select_device, set_tf32
from peftlab.utils import cpu, provenance
from peftlab.utils.errors import UserError


@dataclass(frozen=True)
class BenchOptions:
    """The options of ``peftlab bench``, with its defaults."""

    model: str = "deit_small_patch16_224"
    img_size: int | None = None  # None: the model's own
    architecture: dict = field(
        default_factory=dict
    )  # depth, embed_dim, num_heads, patch_size: the model's own if absent
    batch: int = 32
    dtype: str = "fp32"
    repeats: int = 5
    matmul_size: int = 1024  # the precision figure's square matmul (an AVX2-only CPU's bf16 one: about 2 s)
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    default_study: Path = Path("configs/studies/default.yaml")  # P6 measures its LoRA run
    with_memory: bool = True
    large_model: str | None = "vit_large_patch16_224"  # P3b; None skips it
    large_steps: int = 2
    large_weights: str = "file"  # P3b: a safetensors file, "random" (timm's initialisation) or "hf" (an HF ViT)
    malloc: str = "system"  # train.malloc for every figure (peftlab.quant.allocator); P3b's processes too
    with_compile: bool = True
    with_pin: bool = True  # the pin figure: a process per mode and repetition
    only: str | None = None  # one figure by name ("data", "precision", "pin", "methods", "steps", "text"); None: all
    num_workers: int | None = None  # data figure: None chooses for the device
    data_images: int = 512
    data_cache: bool = False
    data_layout: str = "imagefolder"  # or vtab1k: the JPEGs read through VTAB-1k's lists
    data_model: str = DATA_PATH_MODEL  # the model whose training step the data path is measured against
    text: TextSizes = TextSizes()  # the text figure's GPT-2 and batch (GPT-2 small, 8 x 128 tokens)

    @property
    def model_section(self) -> str | dict:
        """The timm name, or a model section with the architecture overrides (``make_cfg`` takes both)."""
        return {"name": self.model, **self.architecture} if self.architecture else self.model


@dataclass(frozen=True)
class Bench:
    """What each figure measures with: the options, the device, and the fixed batch of the timed steps."""

    options: BenchOptions
    device: torch.device
    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    progress: Callable[[str], None] = print

    def cfg(self, method: str, targets="standard", **options) -> RunConfig:
        """The bench model's run config for ``method`` (LoRA: r=8 on ``targets``)."""
        return make_cfg(self.options.model_section, self.options.img_size, method, targets, **options)

    def trainer(self, cfg: RunConfig) -> Trainer:
        return Trainer(cfg, self.images, self.labels, self.options.dtype, device=self.device)


def prepare(options: BenchOptions, progress: Callable[[str], None]) -> Bench:
    """Seed, device (UserError for --device cuda without a GPU), TF32 as train.tf32's default, and the batch."""
    torch.manual_seed(0)
    if options.device == "cuda" and not torch.cuda.is_available():
        raise UserError("peftlab bench --device cuda: no CUDA device is available here")
    device = select_device(options.device)
    set_tf32(True, device)  # train.tf32's default
    size = input_spec_for(make_cfg(options.model_section, options.img_size, "lora").model).img_size
    images = torch.randn(options.batch, 3, size, size, device=device)
    labels = (torch.arange(options.batch) % 10).to(device)
    return Bench(options, device, images, labels, progress)


# --- the figures, in the order they are measured ------------------------------------------


def measure_peak(b: Bench, report: dict) -> dict:
    o, dev = b.options, b.device
    ceiling = (
        cpu_ceiling_gflops(o.dtype)
        if dev.type == "cpu"
        else gpu_ceiling_gflops(o.dtype, torch.cuda.get_device_name(dev))
    )
    return {"peak": {**matmul_peak(o.dtype, o.repeats, dev), "ceiling": ceiling}}


def measure_steps(b: Bench, report: dict) -> dict:
    trainers = step_trainers(b.cfg, b.images, b.labels, b.options.dtype, b.device)
    return step_figures(trainers, report["peak"], b.options.dtype, b.options.repeats, b.device)


def measure_methods(b: Bench, report: dict) -> dict:
    o = b.options
    return {"methods": methods_figure(b.cfg, b.images, b.labels, o.dtype, o.repeats, b.device, b.progress)}


def measure_precision(b: Bench, report: dict) -> dict:
    o = b.options
    figure = precision_figure(o.model_section, o.img_size, b.images, b.labels, o.repeats, b.device, o.matmul_size)
    return {"precision": figure}


def measure_pin(b: Bench, report: dict) -> dict:
    o = b.options
    return {"pin": pin_figure(o.model_section, o.img_size, o.batch, o.dtype, o.repeats)}


def measure_monitor_cost(b: Bench, report: dict) -> dict:
    return {"monitor_cost": monitor_cost(b.trainer(b.cfg("lora")), b.options.repeats)}


def measure_compile(b: Bench, report: dict) -> dict:
    o = b.options
    return {"compile": compile_figures(o.model_section, o.img_size, b.images, b.labels, o.dtype, o.repeats, b.device)}


def measure_bare(b: Bench, report: dict) -> dict:
    o = b.options
    return {"bare": bare_figure(b.cfg, b.images, b.labels, o.dtype, o.repeats, b.device, o.with_compile, b.progress)}


def measure_quantized_bytes(b: Bench, report: dict) -> dict:
    return {"P3a_quantized_bytes": {**quantized_bytes(b.cfg("lora")), "target": {"nf4_double_quant": 0.15}}}


def measure_merged_inference(b: Bench, report: dict) -> dict:
    latency = inference_latency(b.cfg("lora"), b.images, b.options.dtype, b.options.repeats, b.device)
    return {"P4_merged_inference": {**latency, "target": 1.01}}


def measure_qalora_inference(b: Bench, report: dict) -> dict:
    latency = qalora_latency(b.cfg("qalora"), b.images, b.options.dtype, b.options.repeats, b.device)
    return {"P4q_qalora_inference": {**latency, "target": {"merged_vs_quantized_base": 1.01}}}


def measure_run_fixed_cost(b: Bench, report: dict) -> dict:
    """The default study's LoRA run, then its QLoRA (nf4) run, in workers of one forkserver started as the
    study starts it (its preload: the compiler too, as the study has quantized runs)."""
    repeats = min(b.options.repeats, 3)
    return {
        "P6_run_fixed_cost": run_fixed_cost(b.options.default_study, repeats=repeats),
        "P6_quantized_run_fixed_cost": run_fixed_cost(b.options.default_study, repeats=repeats, quant="nf4"),
    }


def measure_memory(b: Bench, report: dict) -> dict:
    cfgs = {"full": b.cfg("full"), "lora_qv_r8": b.cfg("lora")}
    return {"memory": memory(cfgs, b.options.dtype, b.options.batch, b.images.shape[-1])}


def measure_large_model(b: Bench, report: dict) -> dict:
    o = b.options
    figure = large_model_memory(
        o.large_model, steps=o.large_steps, img_size=o.img_size, weights=o.large_weights, malloc=o.malloc
    )
    if o.only == "P3b":  # the header names the model the figure trains
        return {"model": o.large_model, "img_size": figure["img_size"], "batch": 4, "P3b_large_model_memory": figure}
    return {"P3b_large_model_memory": figure}


def measure_data(b: Bench, report: dict) -> dict:
    o = b.options
    figure = data_path(
        o.batch,
        o.repeats,
        o.num_workers,
        b.device,
        o.data_images,
        model=o.data_model,
        cache=o.data_cache,
        progress=b.progress,
        layout=o.data_layout,
    )
    if o.only == "data":
        return {"model": o.data_model, "data_path": figure}  # the header names the model the figure trains
    return {"data_path": figure}


def measure_text(b: Bench, report: dict) -> dict:
    o = b.options
    figure = text_figure(o.text, o.dtype, o.repeats, b.device, progress=b.progress)
    return {"text": figure}


class Figure(NamedTuple):
    name: str
    measure: Callable[[Bench, dict], dict]  # (bench, the report so far) -> its keys of the report
    announce: str  # the progress line of the full bench ({field} of BenchOptions filled in)
    wanted: Callable[[BenchOptions], bool] = lambda options: True
    cpu_only: bool = False  # host-process figures (peak RSS, forks): left out with --device cuda


FIGURES = [
    Figure("peak", measure_peak, "peak: matmul throughput"),
    Figure("steps", measure_steps, "P1/P2/P5: training steps (interleaved)"),
    Figure("methods", measure_methods, "methods: every method's training step / LoRA r=8 q,v (interleaved)"),
    Figure(
        "precision",
        measure_precision,
        "precision: bf16 / fp32 steps and matmuls, nf4 with bitsandbytes' CPU kernel / reference (interleaved)",
    ),
    Figure(
        "pin",
        measure_pin,
        "pin: full and LoRA steps unpinned, unpinned at AVX2, pinned (oneDNN products) and under the former pin "
        "(MKL COMPATIBLE), a process a set of switches",
        lambda o: o.with_pin,
        cpu_only=True,
    ),
    Figure("monitor_cost", measure_monitor_cost, "monitor cost: a step with monitors at log points / a step without"),
    Figure(
        "compile",
        measure_compile,
        "compile: compiled / eager steps (interleaved), compile time apart",
        lambda o: o.with_compile,
    ),
    Figure(
        "bare",
        measure_bare,
        "bare: peftlab's LoRA, full, AdaLoRA, QLoRA steps (and compiled LoRA, full) / a bare timm + PEFT loop's "
        "(interleaved)",
    ),
    Figure("P3a", measure_quantized_bytes, "P3a: stored bytes of quantized block Linears"),
    Figure("P4", measure_merged_inference, "P4: inference latency (interleaved)"),
    Figure("P4q", measure_qalora_inference, "P4q: QA-LoRA inference latency (interleaved)"),
    Figure(
        "P6", measure_run_fixed_cost, "P6: a run's fixed cost (the default study's LoRA, QLoRA runs)", cpu_only=True
    ),
    Figure(
        "memory",
        measure_memory,
        "memory: peak RSS per method (separate processes)",
        lambda o: o.with_memory,
        cpu_only=True,
    ),
    Figure(
        "P3b",
        measure_large_model,
        "P3b: peak RSS training {large_model} (separate processes)",
        lambda o: bool(o.large_model),
        cpu_only=True,
    ),
    Figure(
        "text",
        measure_text,
        "text: a GPT-2 ({text[layers]} layers, width {text[width]}) LoRA step, peftlab / bare transformers + PEFT "
        "(interleaved)",
    ),
    Figure(
        "data",
        measure_data,
        "data: the data path ({data_layout}) / a {data_model} training step (interleaved)",
        cpu_only=True,
    ),
]


def run_bench(options: BenchOptions = BenchOptions(), progress: Callable[[str], None] = print) -> dict:
    """Every figure of ``FIGURES`` (``options.only`` None), or the one it names, on ``options.device``."""
    if options.only is not None and options.only not in {figure.name for figure in FIGURES}:
        raise UserError(f"--only {options.only!r}: expected one of {', '.join(f.name for f in FIGURES)}")
    malloc = allocator.configure(options.malloc)  # before anything is built, as a run does
    b = prepare(options, progress)
    o, dev = options, b.device
    report = {
        "model": o.model,
        **({"architecture": o.architecture} if o.architecture else {}),
        "img_size": b.images.shape[-1],
        "batch": o.batch,
        "dtype": o.dtype,
        "repeats": o.repeats,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "malloc": malloc,
        "versions": provenance.package_versions(),
        "hardware": provenance.hardware(dev),
        "arithmetic": cpu.arithmetic_record(
            cpu.applies() and cpu.arithmetic_pinned(),
            mkl_branch=provenance.mkl_branch(),
            capability=torch.backends.cpu.get_cpu_capability(),
        ),
        "load_average_start": os.getloadavg(),
        **({"only": o.only} if o.only else {}),
    }
    for figure in FIGURES:
        if o.only is not None:
            # the steps' MFU is against the peak matmul: measured first
            if figure.name == o.only or (o.only == "steps" and figure.name == "peak"):
                report.update(figure.measure(b, report))
            continue
        if not figure.wanted(o) or (figure.cpu_only and dev.type == "cuda"):
            continue
        progress(figure.announce.format_map(dataclasses.asdict(o)))
        report.update(figure.measure(b, report))
    report["load_average_end"] = os.getloadavg()  # with the start's: a quiet run reads near 0, a loaded one not
    return report
