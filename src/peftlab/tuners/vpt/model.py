"""VPT (Jia et al., ECCV 2022): learned prompt tokens in a frozen timm ViT, shallow or deep.

- VPT-shallow (``deep: false``): ``prompt_tokens`` tokens inserted once, before the first block,
  after the cls token (and any register / distillation tokens), without position embedding.
- VPT-deep (``deep: true``): every block gets its own prompts; before each block after the first
  the previous block's outputs at the prompt positions are replaced by the new prompts.
After the last block the prompt positions are dropped; the head reads timm's usual tokens.
On EVA the prompts join the prefix its rotary embedding skips; BEiT and Swin are refused (why: ``REFUSED``).

Initialization as the paper's code: uniform in ``±sqrt(6 / (in_chans * patch^2 + d))`` (Xavier
with the patch embedding's fan-in). Trainable: the prompts (``n d``, or ``depth n d`` deep) and the
head. No identity at initialization: prompts change every token by design. Prompts add tokens
the base's weights cannot absorb, so ``merged_model`` is None (no merge check; ``export --merged``
writes the base with the prompts, see ``peftlab.training.export.load_unmerged``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from peftlab.models.backbones import head_prefix
from peftlab.models.structure import structure_of
from peftlab.tuners import plans
from peftlab.tuners.base import Tuner, TunerContext
from peftlab.tuners.vpt.config import VPTConfig
from peftlab.tuners.vpt.layer import PromptedBlock


class VPTTuner(Tuner):
    name = "vpt"
    is_adapter = True  # trains added tokens (the prompt count is reported); merged_model: None

    def merged_model(self, quantized: bool = False) -> None:
        return None  # extra tokens: nothing folds into the base weights


def prompt_bound(model: nn.Module) -> float:
    """The paper's uniform bound: Xavier with fan-in in_chans x patch area and fan-out d."""
    proj = model.patch_embed.proj
    fan_in = proj.in_channels * math.prod(proj.kernel_size)
    return math.sqrt(6.0 / (fan_in + model.embed_dim))


def check(model: nn.Module, cfg: VPTConfig, ctx: TunerContext) -> None:
    plans.check_vpt(structure_of(model), cfg)


def apply(model: nn.Module, cfg: VPTConfig, ctx: TunerContext) -> VPTTuner:
    head = head_prefix(model)
    model.requires_grad_(False)
    bound, depth, weight = prompt_bound(model), len(model.blocks), model.patch_embed.proj.weight
    for i in range(depth):
        prompt = None
        if i == 0 or cfg.deep:
            prompt = nn.Parameter(
                torch.empty(cfg.prompt_tokens, model.embed_dim, device=weight.device, dtype=weight.dtype)
            )
            nn.init.uniform_(prompt, -bound, bound)
        attn = model.blocks[i].attn
        if hasattr(attn, "num_prefix_tokens"):  # EVA: rotary embeddings skip the prefix, and now the prompts
            attn.num_prefix_tokens += cfg.prompt_tokens
        model.blocks[i] = PromptedBlock(
            model.blocks[i], prompt, model.num_prefix_tokens, cfg.prompt_tokens, insert=i == 0, drop=i == depth - 1
        )
    model.get_submodule(head).requires_grad_(True)
    return VPTTuner(model, head)
