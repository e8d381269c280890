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

from peftlab.config.checks import check_field
from peftlab.tuners.targets import TargetsConfig

FORMATS = ("int2", "int3", "int4", "int8", "nf4", "fp4")
SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class QALoraConfig(TargetsConfig):  # target_modules, lora_alpha, lora_dropout as for LoRA
    name: str = "qalora"
    r: int = 8
    format: Literal["int2", "int3", "int4", "int8", "nf4", "fp4"] = "int4"
    group_size: int = 32  # consecutive input columns sharing a scale and a zero/offset; divides every in_features
    # λ from 0 (full precision) to 1 (quantized) over schedule_steps: W_t = (1 - λ_t) W + λ_t Q(W)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    schedule_steps: int | None = None  # None: the whole run (λ reaches 1 at the last step)

    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = (
        "which quantizes its own base group-wise (method.format, "
        "method.group_size); bitsandbytes layers cannot absorb the merge"
    )
    quantizes_base: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
        check_field(self.r > 0, "method.r", self.r, "an integer > 0")
        check_field(self.format in FORMATS, "method.format", self.format, "one of " + ", ".join(FORMATS))
        check_field(self.group_size > 0, "method.group_size", self.group_size, "an integer > 0")
        check_field(self.schedule in SCHEDULES, "method.schedule", self.schedule, "one of " + ", ".join(SCHEDULES))
        check_field(
            self.schedule_steps is None or self.schedule_steps > 0,
            "method.schedule_steps",
            self.schedule_steps,
            "a positive integer or null",
        )
        check_field(
            self.schedule_steps is None or self.schedule != "constant",
            "method.schedule_steps",
            self.schedule_steps,
            "null when method.schedule is constant (λ = 1 throughout)",
        )
