"""Visual prompt tuning: how many prompt tokens, and whether every block gets its own (deep)."""

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field
from peftlab.config.sections import MethodConfig

# where a prompt token has no place, as the families compute attention
REFUSED = {
    "Beit": "its relative position bias covers the class token and the patches only; a prompt has no "
    "entry in it (VPT's papers prompt ViTs with absolute position embeddings)",
    "SwinTransformer": "its attention runs inside windows of patches, where a prompt token has no place; "
    "the Swin variant of VPT (prompts per window) is not implemented",
}


@dataclass(frozen=True)
class VPTConfig(MethodConfig):
    name: str = "vpt"
    prompt_tokens: int = 10  # learned tokens inserted after the cls (and register / distillation) tokens
    deep: bool = True  # VPT-deep: new prompts before every block; false: VPT-shallow, prompts at the input only
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "whose prompts peftlab has not tested on a quantized base"

    def __post_init__(self):
        super().__post_init__()
        check_field(self.prompt_tokens > 0, "method.prompt_tokens", self.prompt_tokens, "an integer > 0")
