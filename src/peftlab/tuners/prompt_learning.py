"""What PEFT's prompt-learning methods (prompt tuning, prefix tuning) share on an HF text model.

PEFT wraps the transformers sequence classifier inside peftlab's ``HFTextLogits`` (not the wrapper:
PEFT's forward calls the transformers model with ``inputs_embeds`` or ``past_key_values``), with
``task_type`` SEQ_CLS, so PEFT trains its copy of the head (``score`` or ``classifier``, its
``modules_to_save``) and extends the attention mask over the virtual tokens itself. Trainable: the
method's parameters and the head. Virtual tokens change the output from the start (no identity) and
fold into no base weight (``merged_model`` is None). PEFT's own config and state dict load with
``PeftModel.from_pretrained`` on the plain transformers model.

Prompt tuning hands the decoders (Llama, GPT-2) ``inputs_embeds``, without which transformers cannot
find the last token that is not padding: it classifies at the last position, a padding token in a
right-padded batch. ``PromptedTextLogits`` classifies at the last real token instead (the mask says
which), so each example gets the logits it gets alone; PEFT's model, loaded from the export, agrees
with it on a batch without padding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from peftlab.backbones import HFTextLogits, head_prefix, trains_head
from peftlab.errors import ConfigError
from peftlab.tuners.base import Tuner

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel


class PromptedTextLogits(HFTextLogits):
    """``HFTextLogits`` around PEFT's prompt-learning model; ``pool_last_real``: classify a decoder at
    the last token the mask keeps (prompt tuning), not at the last position."""

    def __init__(self, model: PeftModel, pool_last_real: bool):
        super().__init__(model)
        self.pool_last_real = pool_last_real

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.dim() == 3:  # (batch, 2, tokens): ids and mask stacked (peftlab.data.tokens)
            input_ids, attention_mask = input_ids[:, 0], input_ids[:, 1]
        if not self.pool_last_real or attention_mask is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states[-1]  # (batch, virtual + tokens, width), after the final norm
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = self.model.active_peft_config.num_virtual_tokens + (positions * attention_mask).argmax(-1)
        return self.model.base_model.score(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])


def check_text_model(model: nn.Module, method: str) -> None:
    """One ConfigError line unless ``model`` is an HF text classifier (``model.source: hf-text``)."""
    if not trains_head(model):  # PEFT's causal-LM prompt learning (CAUSAL_LM) is not wired in
        raise ConfigError(
            f"method.name={method!r} adapts a text classifier: expected model.task classification (prompt "
            "learning on a causal LM is not built)"
        )
    if not isinstance(model, HFTextLogits):
        inner = getattr(model, "model", None)  # peftlab's wrapper of a transformers model: name that model
        shown = type(inner if isinstance(inner, nn.Module) else model).__name__
        raise ConfigError(
            f"method.name={method!r} supports HF text models (model.source: hf-text: Llama, GPT-2, BERT, "
            f"RoBERTa), not {shown}"
        )


def check_positions(model: nn.Module, num_virtual_tokens: int) -> None:
    """The virtual tokens take positions of a model with learned ones (GPT-2, BERT, RoBERTa): some must be
    left for the text (build_text_data checks data.max_length against the rest)."""
    from peftlab.data.tokens import position_limit

    limit = position_limit(model.model.config.to_dict())
    if limit is not None and num_virtual_tokens >= limit:
        raise ConfigError(
            f"method.num_virtual_tokens={num_virtual_tokens} is invalid: expected fewer than the model's "
            f"{limit} positions, which the virtual tokens share with the text"
        )


class PromptLearningTuner(Tuner):
    """A transformers model wrapped by PEFT's prompt tuning or prefix tuning, inside ``PromptedTextLogits``."""

    is_adapter = True  # trains added tokens, counted as the adapter; nothing merges (merged_model: None)

    @property
    def peft_model(self) -> PeftModel:
        return self.model.model

    def peft_adapter(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """PEFT's own config and weights: the wrapped model is the plain transformers one (GPT-2's
        Conv1D Linears are no target: the prompts touch no layer)."""
        from peft import get_peft_model_state_dict

        config = self.peft_model.peft_config[self.peft_model.active_adapter].to_dict()
        config["inference_mode"] = True
        state = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(self.peft_model).items()}
        return {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}, state

    def merged_model(self, quantized: bool = False) -> None:
        return None  # virtual tokens: nothing folds into the base weights


def inject_prompts(model: HFTextLogits, config: PeftConfig, pool_last_real: bool) -> tuple[PromptedTextLogits, str]:
    """(``get_peft_model`` on the transformers model inside ``model``, wrapped; the name of the head PEFT
    trains: its ``modules_to_save`` copy under ``model.base_model``)."""
    from peft import get_peft_model  # peft (and transformers): not for checks

    head = head_prefix(model).removeprefix("model.")  # score (decoders) or classifier
    decoder = head == "score"
    wrapped = PromptedTextLogits(get_peft_model(model.model, config), pool_last_real and decoder)
    return wrapped, f"model.base_model.{head}"
