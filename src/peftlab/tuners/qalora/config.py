"""QA-LoRA's method config: the adapter (r, alpha, targets) and the group-wise quantized base it needs.

The base's format, group size and quantization schedule are method options, not ``quant``
options: the group size is shared by the quantizer and the adapter's input pooling (the merge
folds into the zeros only when they are equal), the schedule is part of how this method trains,
and peftlab's group-wise layers exist only under QA-LoRA. ``quant.mode`` stays bitsandbytes'
(QLoRA) and must be ``none`` here; ``quant.skip`` still names the Linears left in full precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from peftlab.config import MethodConfig, check_field, check_regex
from peftlab.tuners.lora.config import TARGET_PRESETS

FORMATS = ("int2", "int3", "int4", "int8", "nf4", "fp4")
SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class QALoraConfig(MethodConfig):
    name: str = "qalora"
    r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    # a preset (standard = q,v; extended = q,k,v,proj; all-linear) or a list of module names / anchored regexes
    target_modules: str | tuple[str, ...] = "standard"
    format: Literal["int2", "int3", "int4", "int8", "nf4", "fp4"] = "int4"
    group_size: int = 32  # consecutive input columns sharing a scale and a zero/offset; divides every in_features
    # λ from 0 (full precision) to 1 (quantized) over schedule_steps: W_t = (1 - λ_t) W + λ_t Q(W)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    schedule_steps: int | None = None  # None: the whole run (λ reaches 1 at the last step)

    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = ("which quantizes its own base group-wise (method.format, "
                                           "method.group_size); bitsandbytes layers cannot absorb the merge")

    def __post_init__(self):
        super().__post_init__()
        check_field(self.r > 0, "method.r", self.r, "an integer > 0")
        check_field(self.lora_alpha > 0, "method.lora_alpha", self.lora_alpha, "a number > 0")
        check_field(0.0 <= self.lora_dropout < 1.0, "method.lora_dropout", self.lora_dropout, "a value in [0, 1)")
        if isinstance(self.target_modules, str):
            check_field(self.target_modules in TARGET_PRESETS, "method.target_modules", self.target_modules,
                        "one of " + ", ".join(TARGET_PRESETS) + " or a list of module names/regexes")
        else:
            check_field(len(self.target_modules) > 0, "method.target_modules", list(self.target_modules),
                        "a non-empty list")
            for pattern in self.target_modules:
                check_regex("method.target_modules", pattern)
        check_field(self.format in FORMATS, "method.format", self.format, "one of " + ", ".join(FORMATS))
        check_field(self.group_size > 0, "method.group_size", self.group_size, "an integer > 0")
        check_field(self.schedule in SCHEDULES, "method.schedule", self.schedule, "one of " + ", ".join(SCHEDULES))
        check_field(self.schedule_steps is None or self.schedule_steps > 0, "method.schedule_steps",
                    self.schedule_steps, "a positive integer or null")
        check_field(self.schedule_steps is None or self.schedule != "constant", "method.schedule_steps",
                    self.schedule_steps, "null when method.schedule is constant (λ = 1 throughout)")
