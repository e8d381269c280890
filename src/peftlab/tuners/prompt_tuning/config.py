"""Prompt tuning's method config (PEFT's ``PromptTuningConfig``): the learned embeddings of
``num_virtual_tokens`` tokens put before the text of an HF text model (``model.source: hf-text``)."""

from dataclasses import dataclass
from typing import ClassVar, Literal

from peftlab.config.checks import check_field
from peftlab.config.sections import MethodConfig

# virtual tokens take positions of the model as the text does (data.max_length plus these must fit, which
# only the model tells); this bound refuses a typo before a table of its size is built
MAX_VIRTUAL_TOKENS = 4096


def check_virtual_tokens(value: int) -> None:
    check_field(
        isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_VIRTUAL_TOKENS,
        "method.num_virtual_tokens",
        value,
        f"an integer in [1, {MAX_VIRTUAL_TOKENS}]",
    )


@dataclass(frozen=True)
class PromptTuningMethodConfig(MethodConfig):
    name: str = "prompt_tuning"
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "which peftlab has not tested on a bitsandbytes base (use lora or dora)"
    num_virtual_tokens: int = 20  # learned token embeddings put before the text (Lester et al. try 1 to 150)
    # random (PEFT's RANDOM: nn.Embedding's normal draw) or sample_vocab (PEFT's SAMPLE_VOCAB: the embeddings
    # of tokens drawn from the whole vocabulary; the paper draws from its 5,000 most common)
    prompt_tuning_init: Literal["random", "sample_vocab"] = "random"

    def __post_init__(self):
        super().__post_init__()
        check_virtual_tokens(self.num_virtual_tokens)
        check_field(
            self.prompt_tuning_init in ("random", "sample_vocab"),
            "method.prompt_tuning_init",
            self.prompt_tuning_init,
            "random or sample_vocab",
        )
