"""Prefix tuning's method config (PEFT's ``PrefixTuningConfig``): learned keys and values of
``num_virtual_tokens`` positions before the text, in every attention layer of an HF text model
(``model.source: hf-text``)."""

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field
from peftlab.config.sections import MethodConfig
from peftlab.tuners.prompt_tuning.config import check_virtual_tokens

MAX_ENCODER_HIDDEN_SIZE = 65536  # the projection's hidden width; PEFT's default is the model's width


@dataclass(frozen=True)
class PrefixTuningMethodConfig(MethodConfig):
    name: str = "prefix_tuning"
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "which peftlab has not tested on a bitsandbytes base (use lora or dora)"
    num_virtual_tokens: int = 20  # prefix positions whose keys and values every attention layer attends to
    # false: the keys and values are the learned parameters; true: an MLP computes them from learned
    # embeddings (Li & Liang's reparametrization; the MLP is trained and kept)
    prefix_projection: bool = False
    # with prefix_projection: the MLP's hidden width (null: the model's key/value width)
    encoder_hidden_size: int | None = None

    def __post_init__(self):
        super().__post_init__()
        check_virtual_tokens(self.num_virtual_tokens)
        check_field(
            isinstance(self.prefix_projection, bool),
            "method.prefix_projection",
            self.prefix_projection,
            "true or false",
        )
        size = self.encoder_hidden_size
        check_field(
            size is None
            or isinstance(size, int)
            and not isinstance(size, bool)
            and 1 <= size <= MAX_ENCODER_HIDDEN_SIZE,
            "method.encoder_hidden_size",
            size,
            f"null or an integer in [1, {MAX_ENCODER_HIDDEN_SIZE}]",
        )
        check_field(
            size is None or self.prefix_projection,
            "method.encoder_hidden_size",
            size,
            "null unless method.prefix_projection is true",
        )
