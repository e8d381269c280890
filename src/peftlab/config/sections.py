"""The sections of a run config: model, data, method (the base of every method's config),
quant and train; each a frozen dataclass that checks itself in ``__post_init__``.

``RunConfig``, which holds them, and the reading of files live in ``peftlab.config.schema``. The
method's own options live in ``tuners/<name>/config.py``, each a subclass of ``MethodConfig``.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, replace
from typing import Literal

from peftlab.config.checks import (
    GLUE_PAIR_DATA,
    HUB_REPO_ID,
    MAX_DEPTH,
    MAX_EMBED_DIM,
    MAX_IMG_SIZE,
    MAX_TEXT_TOKENS,
    MAX_THREADS,
    NAME_COMPONENTS,
    TEXT_DATASET_NAMES,
    check_dataset_name,
    check_field,
    check_pair_separator,
    check_prompt_format,
    check_regex,
)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "deit_tiny_patch16_224"
    source: Literal["timm", "hf", "hf-text"] = "timm"
    # hf-text: a sequence classifier (AutoModelForSequenceClassification) or a causal LM
    # (AutoModelForCausalLM, its loss on the response tokens, perplexity reported)
    task: Literal["classification", "causal-lm"] = "classification"
    # "none" (random init; source hf, hf-text: model.path's own weights), "hub" (the Hugging Face hub's
    # safetensors weights, downloaded into the hub cache or read from it with HF_HUB_OFFLINE=1: timm's for a
    # timm model, the repository model.name names for hf and hf-text) or a .safetensors path (timm)
    pretrained: str = "none"
    # HF transformers model directory (source: hf or hf-text; null with pretrained: hub)
    path: str | None = None
    num_classes: int | None = None  # None: the dataset's number of classes
    img_size: int | None = None
    patch_size: int | None = None
    depth: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None
    in_chans: int = 3
    drop_path_rate: float = 0.0

    def __post_init__(self):
        check_field(bool(self.name), "model.name", self.name, "a timm model name")
        for name in ("num_classes", "img_size", "patch_size", "depth", "embed_dim", "num_heads"):
            value = getattr(self, name)
            check_field(value is None or value > 0, f"model.{name}", value, "a positive integer or null")
        for name, most in (
            ("img_size", MAX_IMG_SIZE),
            ("patch_size", MAX_IMG_SIZE),
            ("depth", MAX_DEPTH),
            ("embed_dim", MAX_EMBED_DIM),
            ("num_heads", MAX_EMBED_DIM),
        ):
            value = getattr(self, name)
            check_field(value is None or value <= most, f"model.{name}", value, f"an integer in [1, {most}] or null")
        check_field(self.in_chans in (1, 3), "model.in_chans", self.in_chans, "1 or 3")
        check_field(
            self.task == "classification" or self.source == "hf-text",
            "model.task",
            self.task,
            "classification unless model.source is hf-text",
        )
        check_field(0.0 <= self.drop_path_rate < 1.0, "model.drop_path_rate", self.drop_path_rate, "a value in [0, 1)")
        if self.img_size and self.patch_size:
            check_field(
                self.img_size % self.patch_size == 0,
                "model.patch_size",
                self.patch_size,
                f"a divisor of model.img_size={self.img_size}",
            )
        if self.embed_dim and self.num_heads:
            check_field(
                self.embed_dim % self.num_heads == 0,
                "model.num_heads",
                self.num_heads,
                f"a divisor of model.embed_dim={self.embed_dim}",
            )
        self.check_hf_fields()

    def check_hf_fields(self) -> None:
        """An HF model (source hf or hf-text) is read from a directory: model.path, or with pretrained: hub
        the hub snapshot of the repository model.name names (``peftlab.models.hub.hf_model_dir``)."""
        if self.source == "timm":
            return
        hub = self.pretrained == "hub"
        check_field(
            hub or self.pretrained == "none",
            "model.pretrained",
            self.pretrained,
            f"'none' (the weights in model.path) or 'hub' (model.name's hub repository) when model.source is "
            f"{self.source!r}",
        )
        if not hub:
            check_field(
                bool(self.path),
                "model.path",
                self.path,
                f"a local HF transformers model directory when model.source is {self.source!r} "
                "(or model.pretrained: hub and model.name a hub repository)",
            )
            return
        check_field(
            self.path is None,
            "model.path",
            self.path,
            "null when model.pretrained is 'hub' (the model directory is the hub snapshot of model.name)",
        )
        check_field(
            bool(HUB_REPO_ID.fullmatch(self.name)),
            "model.name",
            self.name,
            f"a Hugging Face hub model repository, org/name or org/name@revision, when model.source is "
            f"{self.source!r} and model.pretrained is 'hub'",
        )


def architecture_only(model: ModelConfig) -> ModelConfig:
    """``model`` as what builds its architecture without its pretrained weights (counting, the checks, a
    rebuild before a state dict is loaded): a timm model's ``pretrained`` set to 'none'; an HF model's
    left as it is, its directory (model.path, or the hub snapshot of model.name) holding the architecture."""
    return model if model.source != "timm" else replace(model, pretrained="none")


@dataclass(frozen=True)
class DataConfig:
    name: str = "fashion_mnist"
    root: str | None = None
    download: bool = False
    val_fraction: float = 0.1
    split_seed: int = 0
    train_subset: int | None = None
    val_subset: int | None = None
    test_subset: int | None = None
    classes: tuple[int, ...] | None = None  # keep these labels, relabelled 0..k-1
    augment: bool = False
    num_workers: int | None = None  # file datasets: decoding processes; None: 0 on CPU, up to 8 on CUDA or MPS
    cache: bool = False  # file datasets: keep decoded, resized images as a uint8 .npy in the data cache
    # imagefolder: a folder of class folders that is the test split (None: root/test, else root/val,
    # else 20% of the images); the training images are then root/train, or root itself
    test_dir: str | None = None
    # resizing to model.img_size (antialiased): bilinear, or bicubic as VTAB-1k's protocols resize
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    # the mean/std inputs are normalized with: the model's own (timm's pretrained config), ImageNet's
    # (V-PETL Bench's), or none: pixels in [0, 1] (PETL_Vision's VTAB-1k runs)
    normalize: Literal["model", "imagenet", "none"] = "model"
    # train on train + val (the final runs of the tuned protocol: VTAB-1k's train800val200.txt); val is empty
    trainval: bool = False
    # filelist: list files of 'relative/path label' lines, relative to data.root (image paths too);
    # without val_list, val is carved from train (data.val_fraction); trainval_list: train + val as listed
    train_list: str | None = None
    val_list: str | None = None
    test_list: str | None = None
    trainval_list: str | None = None
    # filelist: the VTAB-1k group the task is reported under (the report's VTAB tables), e.g. a VTAB-style
    # task of one's own such as `peftlab data vtab-demo`'s
    group: Literal["Natural", "Specialized", "Structured"] | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    # text data (model.source hf-text): tokens per example, with the model's own tokenizer
    max_length: int = 128
    # longest: each batch padded to its longest example; max_length: every batch to data.max_length
    padding: Literal["longest", "max_length"] = "longest"
    truncation: bool = True  # false: an example longer than data.max_length is an error, not cut
    # a decoder's sentence pair: the text between its two texts (None: the tokenizer's end-of-sequence token;
    # "": nothing); an encoder's pair takes its tokenizer's own template ([SEP]) and refuses this key
    pair_separator: str | None = None
    # instructions: alpaca (Alpaca's template) or dialogue (DialoGPT's turns: the turn, EOS, the reply, EOS)
    prompt_format: Literal["alpaca", "dialogue"] = "alpaca"

    def __post_init__(self):
        check_dataset_name(self.name)
        self.check_text_fields()
        for name in ("train_list", "val_list", "test_list", "trainval_list"):
            value = getattr(self, name)
            check_field(
                value is None or self.name == "filelist", f"data.{name}", value, "null unless data.name is 'filelist'"
            )
            check_field(
                value is None or (bool(value) and "\0" not in value),
                f"data.{name}",
                value,
                "a list file's path relative to data.root",
            )
        check_field(
            self.group is None or self.name == "filelist",
            "data.group",
            self.group,
            "null unless data.name is 'filelist' (a suite task's group is its own)",
        )
        if self.name == "filelist":
            check_field(bool(self.root), "data.root", self.root, "a directory when data.name is 'filelist'")
            for name in ("train_list", "test_list"):
                check_field(
                    getattr(self, name) is not None,
                    f"data.{name}",
                    None,
                    "a list file (relative to data.root) when data.name is 'filelist'",
                )
        check_field(
            self.name != "imagefolder" or bool(self.root),
            "data.root",
            self.root,
            "a directory when data.name is 'imagefolder'",
        )
        check_field(
            self.test_dir is None or self.name == "imagefolder",
            "data.test_dir",
            self.test_dir,
            "null unless data.name is 'imagefolder'",
        )
        check_field(0.0 <= self.val_fraction < 1.0, "data.val_fraction", self.val_fraction, "a value in [0, 1)")
        check_field(self.split_seed >= 0, "data.split_seed", self.split_seed, "an integer >= 0")
        for name in ("train_subset", "val_subset", "test_subset"):
            value = getattr(self, name)
            check_field(value is None or value > 0, f"data.{name}", value, "a positive integer or null")
        if self.classes is not None:
            check_field(
                len(self.classes) >= 2 and len(set(self.classes)) == len(self.classes) and min(self.classes) >= 0,
                "data.classes",
                list(self.classes),
                "at least two distinct non-negative labels",
            )
        check_field(
            self.num_workers is None or self.num_workers >= 0,
            "data.num_workers",
            self.num_workers,
            "an integer >= 0 (0: decode in the main process) or null (by device)",
        )

    def check_text_fields(self) -> None:
        """The text keys: columns only for data.name text, a folder for every text dataset, max_length."""
        for name, default in (("text_column", "text"), ("text_pair_column", None), ("label_column", "label")):
            value = getattr(self, name)
            check_field(
                value == default or self.name == "text",
                f"data.{name}",
                value,
                f"{'null' if default is None else repr(default)} unless data.name is 'text' "
                "(a GLUE task's columns are its own)",
            )
            named = isinstance(value, str) and value != ""
            check_field(named or (value is None and default is None), f"data.{name}", value, "a column name")
        check_field(
            self.text_pair_column != self.text_column,
            "data.text_pair_column",
            self.text_pair_column,
            "null or a column other than data.text_column",
        )
        if self.name in TEXT_DATASET_NAMES and not (self.name.startswith("glue/") and self.download):
            hub = " (or data.download: true: the task from the HF hub's GLUE)" if "glue/" in self.name else ""
            check_field(bool(self.root), "data.root", self.root, f"a directory when data.name is {self.name!r}{hub}")
        check_pair_separator(self.pair_separator, bool(self.text_pair_column) or self.name in GLUE_PAIR_DATA)
        check_prompt_format(self.prompt_format, self.name)
        check_field(
            1 <= self.max_length <= MAX_TEXT_TOKENS,
            "data.max_length",
            self.max_length,
            f"an integer in [1, {MAX_TEXT_TOKENS}]",
        )


@dataclass(frozen=True)
class MethodConfig:
    """What every method's config has: its name, which selects the class (``peftlab.config.methods``).

    Each method defines its own frozen subclass in ``tuners/<name>/config.py`` with only the
    options it has, so a run id hashes only those.
    """

    name: str = "lora"
    # class-level facts the recipe and validation read (not config fields)
    quantizable: typing.ClassVar[bool] = True  # may train on a quantized (bitsandbytes) base
    unquantizable_reason: typing.ClassVar[str] = (
        "which trains every base weight (a quantized base cannot be trained; use lora or linear on a quantized base)"
    )
    quantizes_base: typing.ClassVar[bool] = False  # quantizes the base's Linears itself (QA-LoRA)
    # defaults that changed, field -> (new default, the old one the run id hashes instead): a config that
    # leaves the field alone keeps its run id (peftlab.config.run_ids.hashed_dict)
    hashed_as: typing.ClassVar[dict[str, tuple[typing.Any, typing.Any]]] = {}
    # a plugin's paper: one BibTeX entry, which the paper's bibliography adds and its Methods paragraph cites
    bibtex: typing.ClassVar[str] = ""

    def describe(self) -> str | None:
        """What this configuration of the method trains, with its own hyper-parameters, as the paper's Methods
        paragraph says it: plain-text sentences (``$...$`` is LaTeX math), recorded in each run's result.json
        (provenance.plugin.description). A plugin overrides it (docs/methods/adding-a-method.md); None: the paper
        names the method and the options its configurations set. The built-ins' sentences are the paper's own,
        written from the recorded config (analysis/paper/methods.py)."""
        return None

    def __post_init__(self):
        # each method's class declares its own name, the key of its TUNERS entry (a test checks they agree)
        own = None if type(self) is MethodConfig else type(self).__dict__.get("name")
        check_field(self.name == own, "method.name", self.name, f"{own!r}, the name of {type(self).__name__}")


@dataclass(frozen=True)
class QuantConfig:
    """A quantized base (QLoRA): bitsandbytes int8 or 4-bit (nf4 / fp4) Linears under the adapters."""

    mode: Literal["none", "int8", "nf4", "fp4"] = "none"
    double_quant: bool = False  # 4-bit only: quantize the absmax statistics too (bnb compress_statistics)
    compute_dtype: Literal["fp32", "bf16", "fp16"] = "fp32"  # 4-bit matmul dtype; fp32 on CPU
    # Linear modules left in full precision: regexes matched against whole name components
    # (``head`` skips ``head`` and ``base_model.model.head``); the patch embedding is a Conv2d; ``score``
    # is the decoders' (Llama's, GPT-2's) sequence-classification head, ``lm_head`` a causal LM's
    skip: tuple[str, ...] = ("head", "classifier", "score", "lm_head", "patch_embed.*")
    # kept so that run ids (hashes of the whole config) stay what they were; QA-LoRA's group size is
    # method.group_size (method.name: qalora), which also sets the adapter's input pooling
    group_size: int | None = None
    # 4-bit evaluation on a CPU: reference (dequantize, multiply in compute_dtype: the same numbers on every
    # CPU) or bnb (bitsandbytes' bf16 kernel on AVX512-BF16 CPUs: faster there, bf16 rounding; the reference
    # path on CPUs without it, as bitsandbytes itself chooses there)
    cpu_kernel: Literal["reference", "bnb"] = "reference"

    def __post_init__(self):
        check_field(
            not self.double_quant or self.mode in ("nf4", "fp4"),
            "quant.double_quant",
            self.double_quant,
            "false unless quant.mode is nf4 or fp4",
        )
        check_field(
            self.group_size is None,
            "quant.group_size",
            self.group_size,
            "null (QA-LoRA's group size is method.group_size, with method.name: qalora)",
        )
        for pattern in self.skip:
            check_regex("quant.skip", pattern, NAME_COMPONENTS)
        check_field(
            self.cpu_kernel == "reference" or self.mode in ("nf4", "fp4"),
            "quant.cpu_kernel",
            self.cpu_kernel,
            "'reference' unless quant.mode is nf4 or fp4 (the bnb kernel is 4-bit only)",
        )


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (None: all epochs)
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 1e-3
    head_lr: float | None = None  # None: same as lr
    weight_decay: float = 0.01
    head_weight_decay: float | None = None  # None: same as weight_decay
    warmup_ratio: float = 0.06
    label_smoothing: float = 0.0  # of the training loss (PETL benchmarks differ here); evaluation is plain
    grad_accum: int = 1
    clip_grad: float | None = 1.0
    # auto: bf16 autocast on a CUDA GPU that supports it, fp32 elsewhere (CPU bf16 is ~20x slower here;
    # MPS is unmeasured)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"  # auto (CUDA, then Apple MPS, then CPU) | cpu | cuda | cuda:N | mps
    # torch intra-op threads; None: OMP_NUM_THREADS, else 2 if reproducible, else physical cores
    threads: int | None = None
    log_every: int = 10
    ckpt_every: int = 100
    eval_every: int | None = None  # also evaluate on val every N steps (convergence curves)
    early_stop_patience: int | None = None  # epochs without val improvement
    grad_checkpointing: bool = False  # recompute block activations in backward (timm / HF switch)
    # Linux (glibc): lean fixes malloc's mmap threshold at 1 MiB, so a freed tensor's memory goes back to the
    # system and a step's peak is about what it holds (ViT-L QLoRA at batch 4: 380 MiB against 1,124), for
    # slower steps (that QLoRA step 1.35-1.40x, a deit_small LoRA step at batch 32 1.19-1.29x); system keeps
    # glibc's own rule. peftlab.quant.allocator
    malloc: Literal["system", "lean"] = "system"
    compile: bool = False  # torch.compile the model (inductor); one logged line and eager if it cannot compile
    # with train.compile: torch.compile's mode. reduce-overhead replays the step as CUDA graphs (on a GPU;
    # the CPU compiles as default), which need static shapes: every training batch is train.batch_size
    # images, the last short batch of each epoch dropped (its images train in other epochs' batches, as
    # each epoch shuffles anew); evaluation and the merge check see every image
    compile_mode: Literal["default", "reduce-overhead"] = "default"
    tf32: bool = True  # CUDA only: TF32 matmuls and convolutions on Ampere and later
    # None: fused AdamW on CUDA and on a reproducible CPU run (its square root is exactly rounded on every CPU);
    # else PyTorch's single-tensor one
    fused_adamw: bool | None = None
    # on an out-of-memory error: halve the micro-batch computed at once (gradients accumulate over
    # the halves: same effective batch) and go on from the last checkpoint
    auto_batch: bool = False
    # x86 CPUs: compute every Linear's products through oneDNN at AVX2, pin MKL to its COMPATIBLE branch and ATen
    # to its AVX2 code and take the fused AdamW, so one seed gives the same numbers on AVX2 and AVX-512, Intel and
    # AMD CPUs (set before torch is imported; peftlab.utils.cpu, peftlab.models.products)
    reproducible: bool = False
    test: bool = True  # test the final weights; false: a study's tuning trial (chosen on val, its merge checked on val)
    merged_test: Literal["auto", "always"] = "auto"

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "log_every", "ckpt_every"):
            value = getattr(self, name)
            check_field(value > 0, f"train.{name}", value, "an integer > 0")
        for name in ("max_steps", "threads", "eval_every", "early_stop_patience"):
            value = getattr(self, name)
            check_field(value is None or value > 0, f"train.{name}", value, "a positive integer or null")
        check_field(
            self.threads is None or self.threads <= MAX_THREADS,
            "train.threads",
            self.threads,
            f"an integer in [1, {MAX_THREADS}] or null",
        )
        check_field(
            not (self.reproducible and self.fused_adamw is False),
            "train.fused_adamw",
            self.fused_adamw,
            "true or null with train.reproducible: true (the unfused AdamW's square root differs by CPU vendor)",
        )
        check_field(
            self.compile or self.compile_mode == "default",
            "train.compile_mode",
            self.compile_mode,
            "default unless train.compile is true (the mode is torch.compile's)",
        )
        check_field(self.lr > 0, "train.lr", self.lr, "a number > 0")
        check_field(self.head_lr is None or self.head_lr > 0, "train.head_lr", self.head_lr, "a number > 0 or null")
        check_field(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        check_field(
            self.head_weight_decay is None or self.head_weight_decay >= 0,
            "train.head_weight_decay",
            self.head_weight_decay,
            "a number >= 0 or null",
        )
        check_field(0.0 <= self.warmup_ratio < 1.0, "train.warmup_ratio", self.warmup_ratio, "a value in [0, 1)")
        check_field(
            0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", self.label_smoothing, "a value in [0, 1)"
        )
        check_field(
            self.clip_grad is None or self.clip_grad > 0, "train.clip_grad", self.clip_grad, "a number > 0 or null"
        )
        check_field(
            re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
            "train.device",
            self.device,
            "auto, cpu, cuda, cuda:N or mps",
        )
