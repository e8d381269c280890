"""Prompt tuning (Lester et al., EMNLP 2021) through PEFT's ``PromptTuningConfig`` on an HF text model.

``num_virtual_tokens`` learned embeddings of the model's width go before the text's; the frozen model
reads them as tokens. Trainable: ``num_virtual_tokens x hidden``, and a classifier's head (a causal LM's
stays frozen). The shared part (the wrappers, the tuner, the export, the decoders' pooling, the causal
LM's logits without the virtual positions) is ``tuners/prompt_learning.py``.
"""

from __future__ import annotations

from torch import nn

from peftlab.tuners.base import TunerContext
from peftlab.tuners.prompt_learning import (
    PromptLearningTuner,
    check_positions,
    check_text_model,
    inject_prompts,
    task_type,
)
from peftlab.tuners.prompt_tuning.config import PromptTuningMethodConfig


class PromptTuningTuner(PromptLearningTuner):
    name = "prompt_tuning"


def check(model: nn.Module, cfg: PromptTuningMethodConfig, ctx: TunerContext) -> None:
    check_text_model(model, cfg.name)
    check_positions(model, cfg.num_virtual_tokens)


def apply(model: nn.Module, cfg: PromptTuningMethodConfig, ctx: TunerContext) -> PromptTuningTuner:
    from peft import PromptTuningConfig, PromptTuningInit

    config = PromptTuningConfig(
        task_type=task_type(model),  # SEQ_CLS, or CAUSAL_LM for a causal LM
        num_virtual_tokens=cfg.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit[cfg.prompt_tuning_init.upper()],
    )
    return PromptTuningTuner(*inject_prompts(model, config, pool_last_real=True))
