"""What PEFT's prompt-learning methods (prompt tuning, prefix tuning) share on an HF text model.

PEFT wraps the transformers model inside peftlab's ``HFTextLogits`` or ``HFCausalLM`` (not the wrapper:
PEFT's forward calls the transformers model with ``inputs_embeds`` or ``past_key_values``) and extends
the attention mask over the virtual tokens itself. Virtual tokens change the output from the start (no
identity) and fold into no base weight (``merged_model`` is None). PEFT's own config and state dict load
with ``PeftModel.from_pretrained`` on the plain transformers model.

A sequence classifier (``task_type`` SEQ_CLS): PEFT trains its copy of the head (``score`` or
``classifier``, its ``modules_to_save``). Prompt tuning hands the decoders (Llama, GPT-2)
``inputs_embeds``, without which transformers cannot find the last token that is not padding: it
classifies at the last position, a padding token in a right-padded batch. ``PromptedTextLogits``
classifies at the last real token instead (the mask says which), so each example gets the logits it gets
alone; PEFT's model, loaded from the export, agrees with it on a batch without padding.

A causal LM (CAUSAL_LM): the LM head stays frozen, the prompts alone train. Prompt tuning's logits come
back with ``num_virtual_tokens`` more positions, in front (the virtual tokens' own predictions); prefix
tuning's do not (its keys and values are the cache of earlier tokens). ``PromptedCausalLM`` drops those
positions, so that its logits line up with the targets ``peftlab.data.text.tokens`` builds, as ``HFCausalLM``'s
do: the loss, top-1 and perplexity per response token mean what they mean for LoRA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from peftlab.models.backbones import HFCausalLM, HFTextLogits, head_prefix
from peftlab.tuners.base import Tuner
from peftlab.utils.errors import ConfigError

if TYPE_CHECKING:
    from peft import PeftConfig, PeftModel, TaskType


class PromptedTextLogits(HFTextLogits):
    """``HFTextLogits`` around PEFT's prompt-learning model; ``pool_last_real``: classify a decoder at
    the last token the mask keeps (prompt tuning), not at the last position."""

    def __init__(self, model: PeftModel, pool_last_real: bool):
        super().__init__(model)
        self.pool_last_real = pool_last_real

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.dim() == 3:  # (batch, 2, tokens): ids and mask stacked (peftlab.data.text.tokens)
            input_ids, attention_mask = input_ids[:, 0], input_ids[:, 1]
        if not self.pool_last_real or attention_mask is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states[-1]  # (batch, virtual + tokens, width), after the final norm
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = self.model.active_peft_config.num_virtual_tokens + (positions * attention_mask).argmax(-1)
        return self.model.base_model.score(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])


class PromptedCausalLM(HFCausalLM):
    """``HFCausalLM`` around PEFT's ``PeftModelForCausalLM``: the next-token logits of the text's own
    positions, (batch, vocabulary, tokens - 1), as ``HFCausalLM`` gives them; ``virtual_positions``: the
    positions PEFT's logits have in front of the text's (prompt tuning's virtual tokens; 0 for prefix
    tuning)."""

    def __init__(self, model: PeftModel, virtual_positions: int):
        super().__init__(model)
        self.virtual_positions = virtual_positions

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.dim() == 3:  # (batch, 2, tokens): ids and mask stacked (peftlab.data.text.tokens)
            input_ids, attention_mask = input_ids[:, 0], input_ids[:, 1]
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, virtual + L, V)
        return logits[:, self.virtual_positions : -1].transpose(1, 2)


def check_text_model(model: nn.Module, method: str) -> None:
    """One ConfigError line unless ``model`` is an HF text model (``model.source: hf-text``): a sequence
    classifier or a causal LM."""
    if not isinstance(model, HFTextLogits | HFCausalLM):
        inner = getattr(model, "model", None)  # peftlab's wrapper of a transformers model: name that model
        shown = type(inner if isinstance(inner, nn.Module) else model).__name__
        raise ConfigError(
            f"method.name={method!r} supports HF text models (model.source: hf-text: Llama, GPT-2, BERT, "
            f"RoBERTa), not {shown}"
        )


def task_type(model: HFTextLogits | HFCausalLM) -> TaskType:
    """PEFT's task of the model: CAUSAL_LM (no head to train) or SEQ_CLS (the head in modules_to_save)."""
    from peft import TaskType

    return TaskType.CAUSAL_LM if isinstance(model, HFCausalLM) else TaskType.SEQ_CLS


def check_positions(model: nn.Module, num_virtual_tokens: int) -> None:
    """The virtual tokens take positions of a model with learned ones (GPT-2, BERT, RoBERTa): some must be
    left for the text (build_text_data checks data.max_length against the rest)."""
    from peftlab.data.text.tokens import position_limit

    limit = position_limit(model.model.config.to_dict())
    if limit is not None and num_virtual_tokens >= limit:
        raise ConfigError(
            f"method.num_virtual_tokens={num_virtual_tokens} is invalid: expected fewer than the model's "
            f"{limit} positions, which the virtual tokens share with the text"
        )


class PromptLearningTuner(Tuner):
    """A transformers model wrapped by PEFT's prompt tuning or prefix tuning, inside ``PromptedTextLogits``
    (a classifier) or ``PromptedCausalLM``."""

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


def inject_prompts(
    model: HFTextLogits | HFCausalLM, config: PeftConfig, pool_last_real: bool
) -> tuple[PromptedTextLogits | PromptedCausalLM, str]:
    """(``get_peft_model`` on the transformers model inside ``model``, wrapped; the name of the head PEFT
    trains: a classifier's ``modules_to_save`` copy under ``model.base_model``, a causal LM's frozen
    ``lm_head``, which names no trainable parameter)."""
    from peft import PeftType, get_peft_model  # peft (and transformers): not for checks

    head = head_prefix(model).removeprefix("model.")  # score (decoders), classifier or lm_head
    peft_model = get_peft_model(model.model, config)
    if isinstance(model, HFCausalLM):
        virtual = config.num_virtual_tokens if config.peft_type == PeftType.PROMPT_TUNING else 0
        return PromptedCausalLM(peft_model, virtual), f"model.base_model.{head}"
    return PromptedTextLogits(peft_model, pool_last_real and head == "score"), f"model.base_model.{head}"
