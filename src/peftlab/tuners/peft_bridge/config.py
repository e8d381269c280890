"""The PEFT bridge's method config: any PEFT type that adapts ``nn.Linear``, by its PeftType name, with
its own config class's fields as ``options`` (tuners/peft_bridge/types.py says which types and fields)."""

from dataclasses import dataclass, field
from typing import ClassVar

from peftlab.config.checks import check_field, fail_field
from peftlab.tuners.peft_bridge.types import (
    DEFAULT_OPTIONS,
    REFUSED,
    REFUSED_VALUES,
    RESERVED,
    SHARED_SIZES,
    applicable,
    described,
    matches,
    option_names,
    peft_types,
)
from peftlab.tuners.targets import ModulesConfig
from peftlab.utils.errors import ConfigError

Scalar = int | float | str | bool | None
# what YAML gives an option of a PEFT config: a value, a list of values, or a mapping of names to values
OptionValue = Scalar | tuple[Scalar, ...] | dict[str, Scalar]


@dataclass(frozen=True)
class PeftBridgeConfig(ModulesConfig):
    name: str = "peft"
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = (
        "whose types peftlab has not tested on a bitsandbytes base (use lora, dora or qalora)"
    )
    # PEFT's method type by its PeftType name (LORA, FOURIERFT, HRA, ...: docs/methods/peft-types.md)
    peft_type: str = "LORA"
    # fields of that type's own PEFT config class (FourierFTConfig's n_frequency, ...), passed as they are
    options: dict[str, OptionValue] = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        types = peft_types()
        check_field(
            self.peft_type in types, "method.peft_type", self.peft_type, "a PEFT type name: " + ", ".join(applicable())
        )
        if self.peft_type in REFUSED:
            raise ConfigError(
                f"method.peft_type={self.peft_type!r} cannot run through method.name: peft: {REFUSED[self.peft_type]}"
            )
        allowed = option_names(self.peft_type)
        for key in self.options:
            if key in RESERVED:
                raise ConfigError(f"method.options.{key} is set by peftlab, not an option: {RESERVED[key]}")
            check_field(
                key in allowed,
                "method.options",
                key,
                f"a field of PEFT's {types[self.peft_type]['config']}: {', '.join(allowed)}",
            )
        self.check_option_values(types[self.peft_type])

    def check_option_values(self, entry: dict) -> None:
        """Each option's value is of the type PEFT's config class declares for it (``types.json``), before
        PEFT reads it; a rank pattern's values are ranks (bounded as ``r`` is); values PEFT allows that the
        bridge cannot run (``REFUSED_VALUES``) are refused with the reason."""
        for key, value in self.options.items():
            expected = entry["types"].get(key, "any")
            if not matches(value, expected):
                fail_field(f"method.options.{key}", value, f"{described(expected)} (PEFT's {entry['config']}.{key})")
            if key == "rank_pattern" and isinstance(value, dict):
                for pattern, rank in value.items():
                    check_field(
                        isinstance(rank, int) and not isinstance(rank, bool) and rank > 0,
                        f"method.options.rank_pattern[{pattern!r}]",
                        rank,
                        "a rank: an integer > 0",
                    )
            reason = REFUSED_VALUES.get(key, {}).get(value) if isinstance(value, str) else None
            if reason:
                raise ConfigError(f"method.options.{key}={value!r} cannot run through method.name: peft: {reason}")

    @property
    def option_ranks(self) -> list[int]:
        """The ranks the options give: ``r`` and the values of ``rank_pattern`` (integers), bounded as the
        built-in methods' before anything is built (``params.check_model_size``)."""
        values = [self.options.get("r")]
        pattern = self.options.get("rank_pattern")
        values += list(pattern.values()) if isinstance(pattern, dict) else []
        return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]

    @property
    def shared_size(self) -> int:
        """The fp32 words the tensors the options size once for every layer take while they are built
        (UniLoRA's vector bank), bounded as ranks are (``params.check_model_size``)."""
        words = SHARED_SIZES.get(self.peft_type, {})
        values = {key: self.options.get(key) for key in words}
        return sum(words[k] * v for k, v in values.items() if isinstance(v, int) and not isinstance(v, bool))

    def peft_options(self) -> dict:
        """The options as PEFT's config takes them (lists where YAML's lists were read as tuples)."""
        options = {**DEFAULT_OPTIONS.get(self.peft_type, {}), **self.options}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
