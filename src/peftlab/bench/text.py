"""The text figure: a GPT-2-shaped causal LM's LoRA training step through peftlab (the model build, the tuner
and the recipe's ``training_step``, as a ``model.source: hf-text`` run trains it) against the bare loop a user
writes with transformers and PEFT (``get_peft_model`` with the same ``LoraConfig``, AdamW, backward, step), on
the same batch, base weights, trainable parameters, dtype and threads, in one process.

Both start from one random GPT-2 saved as an HF model directory (transformers' ``GPT2Config``, GPT-2's
vocabulary and positions; nothing downloaded). The same LoRA on both: rank ``r`` on every block's fused
``attn.c_attn`` (peftlab builds GPT-2's Conv1D as nn.Linear, PEFT wraps the Conv1D with
``fan_in_fan_out``); peftlab's default preset (q and v slices of ``c_attn``) is timed beside them. The
steps run in alternation (``metrics.balanced_orders``) after warm-up steps, each timed in wall seconds
(``time.perf_counter``) and CPU seconds of the process (``time.process_time``, every thread's). The
first warm-up step of each is seeded alike: with B = 0 at the start every adapter adds nothing, so
their first losses are the base model's loss on the batch, the same within float error.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from peftlab.bench.common import Trainer, spread
from peftlab.config.schema import RunConfig, load_config
from peftlab.training import metrics
from peftlab.training.runtime import autocast

# GPT-2's fused q, k, v in every block, as peftlab names it (the causal LM wrapped, its Conv1D a Linear)
C_ATTN = r"model\.transformer\.h\.\d+\.attn\.c_attn"
GPT2_VOCAB, GPT2_POSITIONS = 50257, 1024
STEPS = {
    "peftlab_lora_c_attn": "peftlab: build, LoRA on c_attn, recipe training_step",
    "bare_peft_c_attn": "bare transformers + PEFT loop, LoRA on c_attn",
    "peftlab_lora_qv": "peftlab: LoRA on the q and v slices of c_attn (the default preset)",
}


@dataclass(frozen=True)
class TextSizes:
    """The text figure's model and batch: GPT-2 small's shape by default."""

    layers: int = 12
    width: int = 768
    heads: int = 12
    length: int = 128  # tokens per sequence
    batch: int = 8
    r: int = 8

    @property
    def tokens(self) -> int:
        return self.batch * self.length


def write_gpt2(path: Path, sizes: TextSizes) -> Path:
    """A GPT-2 of ``sizes`` with random weights (seed 0), saved as an HF model directory at ``path``."""
    import transformers
    from huggingface_hub.utils import disable_progress_bars
    from transformers import GPT2Config, GPT2LMHeadModel

    disable_progress_bars()  # writing and loading one local file: no bars in the bench's output
    transformers.logging.disable_progress_bar()
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=sizes.layers,
        n_embd=sizes.width,
        n_head=sizes.heads,
        vocab_size=GPT2_VOCAB,
        n_positions=GPT2_POSITIONS,
        bos_token_id=0,
        eos_token_id=0,
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


def text_cfg(model_dir: Path, r: int, targets) -> RunConfig:
    """A peftlab run config of the causal LM at ``model_dir``, LoRA of rank ``r`` on ``targets``."""
    return load_config(
        overrides={
            "model": {"source": "hf-text", "path": str(model_dir), "task": "causal-lm"},
            "method": {"name": "lora", "r": r, "target_modules": targets},
            "data": {"name": "text", "root": str(model_dir)},  # never read: the batch is fixed
        }
    )


def text_batch(sizes: TextSizes, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch as peftlab's text data lays it out: (B, 2, L) token ids and attention mask (every
    position attended), and the causal LM's (B, L - 1) targets, token t + 1 for position t."""
    ids = torch.randint(0, GPT2_VOCAB, (sizes.batch, sizes.length), generator=torch.Generator().manual_seed(0))
    tokens = torch.stack([ids, torch.ones_like(ids)], dim=1)
    return tokens.to(device), ids[:, 1:].contiguous().to(device)


class BareStep:
    """The loop a user writes: transformers' GPT2LMHeadModel (its own loss from ``labels``), PEFT's LoRA,
    AdamW (lr and weight decay as the bench's peftlab steps), backward, clip (peftlab's default
    ``train.clip_grad``), step, zero_grad."""

    def __init__(self, model_dir: Path, cfg: RunConfig, tokens: torch.Tensor, precision: str, device: torch.device):
        from peft import LoraConfig, get_peft_model
        from transformers import GPT2LMHeadModel

        torch.manual_seed(0)
        base = GPT2LMHeadModel.from_pretrained(model_dir, use_safetensors=True)
        config = LoraConfig(
            r=cfg.method.r,
            lora_alpha=cfg.method.lora_alpha,
            lora_dropout=cfg.method.lora_dropout,
            target_modules=["c_attn"],
            fan_in_fan_out=True,  # GPT-2's Conv1D stores its weight (in, out)
        )
        self.model = get_peft_model(base, config).to(device).train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.01)
        self.ids, self.mask = tokens[:, 0], tokens[:, 1]
        self.precision, self.device = precision, device
        self.loss = None

    def step(self) -> None:
        with autocast(self.precision, self.device):
            loss = self.model(input_ids=self.ids, attention_mask=self.mask, labels=self.ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss = loss.detach()


def time_alternately(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: int = 2
) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds per call of each function, the calls alternated in ``balanced_orders`` after
    ``warmup`` calls each: ``{"wall": {name: [...]}, "cpu": {name: [...]}}``."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    times = {"wall": {name: [] for name in names}, "cpu": {name: [] for name in names}}
    orders = metrics.balanced_orders(len(names))
    for rep in range(repeats):
        for index in orders[rep % len(orders)]:
            metrics.synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            fns[names[index]]()
            metrics.synchronize(device)
            times["wall"][names[index]].append(time.perf_counter() - wall)
            times["cpu"][names[index]].append(time.process_time() - cpu)
    return times


def per_repeat_ratios(a: list[float], b: list[float]) -> dict:
    """The spread of ``a``'s times over ``b``'s, repetition by repetition, and ``fastest``: ``a``'s fastest
    step over ``b``'s, the steps least slowed by other work on a shared machine."""
    return {**spread([x / y for x, y in zip(a, b)]), "fastest": min(a) / min(b)}


def seeded_first_step(step, losses: dict[str, float], name: str) -> Callable[[], None]:
    """``step.step`` whose first call starts from seed 0 (GPT-2's dropout draws the same masks on every
    side) and records its loss in ``losses[name]``."""

    def run() -> None:
        if name in losses:
            step.step()
            return
        torch.manual_seed(0)
        step.step()
        losses[name] = float(step.loss)

    return run


def text_figure(
    sizes: TextSizes,
    precision: str,
    repeats: int,
    device: torch.device,
    warmup: int = 2,
    progress: Callable[[str], None] = print,
) -> dict:
    """The text figure's part of the report (``text``): tokens/s of each step in wall and CPU time, and
    peftlab's time per step / the bare loop's, repetition by repetition, with the first steps' losses."""
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="peftlab-bench-gpt2-") as tmp:
        model_dir = write_gpt2(Path(tmp), sizes)
        tokens, targets = text_batch(sizes, device)
        cfg = text_cfg(model_dir, sizes.r, [C_ATTN])
        progress(f"text: building the three GPT-2 steps ({sizes.layers} layers, width {sizes.width})")
        with warnings.catch_warnings():  # PEFT reads a transformers attribute deprecated in 5.x
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            steps = {
                "peftlab_lora_c_attn": Trainer(cfg, tokens, targets, precision, device=device),
                "bare_peft_c_attn": BareStep(model_dir, cfg, tokens, precision, device),
                "peftlab_lora_qv": Trainer(
                    text_cfg(model_dir, sizes.r, "standard"), tokens, targets, precision, device=device
                ),
            }
        trainable = {name: sum(p.numel() for p in step.params) for name, step in steps.items()}
        progress(f"text: {warmup} warm-up steps and {repeats} timed steps each (interleaved)")
        first_loss: dict[str, float] = {}
        fns = {name: seeded_first_step(step, first_loss, name) for name, step in steps.items()}
        times = time_alternately(fns, repeats, device, warmup=max(1, warmup))
    return {
        "model": "GPT-2 shaped causal LM (transformers GPT2Config), random weights",
        **asdict(sizes),
        "vocab": GPT2_VOCAB,
        "tokens_per_step": sizes.tokens,
        "dtype": precision,
        "threads": torch.get_num_threads(),
        # PASSIVE: OpenMP threads sleep at barriers, so CPU time counts work, not spinning while a thread
        # waits for one that other work on a shared machine has preempted
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "device": str(device),
        "steps": STEPS,
        "trainable": trainable,
        "first_step_loss": first_loss,
        "warmup": max(1, warmup),
        "step_seconds": {clock: {k: spread(v) for k, v in t.items()} for clock, t in times.items()},
        "tokens_per_second": {
            clock: {k: spread([sizes.tokens / s for s in v]) for k, v in t.items()} for clock, t in times.items()
        },
        "peftlab_vs_bare": {
            clock: per_repeat_ratios(t["peftlab_lora_c_attn"], t["bare_peft_c_attn"]) for clock, t in times.items()
        },
        "qv_vs_bare": {
            clock: per_repeat_ratios(t["peftlab_lora_qv"], t["bare_peft_c_attn"]) for clock, t in times.items()
        },
        "target": 1.05,
        "load_average": {"start": load_start, "end": os.getloadavg()},
    }
