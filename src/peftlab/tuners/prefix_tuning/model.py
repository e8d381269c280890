"""Prefix tuning (Li & Liang, ACL 2021) through PEFT's ``PrefixTuningConfig`` on an HF text model.

Every attention layer attends to ``num_virtual_tokens`` learned key/value pairs before the text (PEFT
hands them to transformers as the cache of earlier tokens). Without ``prefix_projection`` they are the
parameters: ``num_virtual_tokens x 2 x layers x kv`` with kv the keys' width (the hidden size, or
Llama's key/value heads x head size under grouped-query attention), plus a classifier's head (a causal
LM's stays frozen). With it, an MLP
(kv -> encoder_hidden_size -> 2 x layers x kv) computes them from ``num_virtual_tokens x kv``
embeddings. The shared part is ``tuners/prompt_learning.py``.
"""

from __future__ import annotations

from torch import nn

from peftlab.tuners.base import TunerContext
from peftlab.tuners.prefix_tuning.config import PrefixTuningMethodConfig
from peftlab.tuners.prompt_learning import (
    PromptLearningTuner,
    check_positions,
    check_text_model,
    inject_prompts,
    task_type,
)


class PrefixTuningTuner(PromptLearningTuner):
    name = "prefix_tuning"


def check(model: nn.Module, cfg: PrefixTuningMethodConfig, ctx: TunerContext) -> None:
    check_text_model(model, cfg.name)
    check_positions(model, cfg.num_virtual_tokens)


def apply(model: nn.Module, cfg: PrefixTuningMethodConfig, ctx: TunerContext) -> PrefixTuningTuner:
    from peft import PrefixTuningConfig

    config = PrefixTuningConfig(
        task_type=task_type(model),  # SEQ_CLS, or CAUSAL_LM for a causal LM
        num_virtual_tokens=cfg.num_virtual_tokens,
        prefix_projection=cfg.prefix_projection,
        encoder_hidden_size=cfg.encoder_hidden_size,
    )
    # the decoders classify at the last real token themselves: PEFT passes them the input ids
    return PrefixTuningTuner(*inject_prompts(model, config, pool_last_real=False))
