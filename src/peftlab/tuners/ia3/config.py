"""IA3's method config (PEFT's ``IA3Config``): a learned vector rescales each target's output, or,
for a feed-forward module, its input. Its presets are its own: ``standard`` is the paper's keys,
values and the MLP's inner activations (the input of ``fc2``), so a study whose base config is
LoRA's (``target_modules: standard``) runs IA3 where its paper puts it; ``all-linear`` every
Linear of the blocks; LoRA's ``extended`` (q, k, v, proj) has no IA3 meaning."""

import re
from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field, check_regex
from peftlab.models.families import Family, canonical_names
from peftlab.tuners.targets import PRESETS, ModulesConfig
from peftlab.utils.errors import ConfigError

# the paper's places: k and v of the split qkv, and fc2 (rescaled on its input, see feedforward_modules)
IA3_STANDARD = [r"blocks\.\d+\.attn\.qkv\.[kv]", r"blocks\.\d+\.mlp\.fc2"]


@dataclass(frozen=True)
class IA3MethodConfig(ModulesConfig):
    name: str = "ia3"
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "which peftlab has not tested on a bitsandbytes base (use lora or dora)"
    presets: ClassVar[dict[str, list[str]]] = {"standard": IA3_STANDARD, "all-linear": PRESETS["all-linear"]}
    presets_help: ClassVar[str] = "standard (k, v and fc2, the paper's places), all-linear"
    # target_modules was the list of the paper's places, which the preset 'standard' now names
    hashed_as: ClassVar[dict[str, tuple[str, list[str]]]] = {"target_modules": ("standard", IA3_STANDARD)}
    # a preset (standard = k, v, fc2, the paper's places; all-linear) or a list of module names / anchored regexes
    target_modules: str | tuple[str, ...] = "standard"
    # targets whose input (not output) is rescaled: anchored regexes, each matching some target
    feedforward_modules: tuple[str, ...] = (r"blocks\.\d+\.mlp\.fc2",)

    def __post_init__(self):
        super().__post_init__()
        check_field(
            isinstance(self.feedforward_modules, tuple),
            "method.feedforward_modules",
            self.feedforward_modules,
            "a list of module names/regexes (may be empty)",
        )
        for pattern in self.feedforward_modules:
            check_regex("method.feedforward_modules", pattern)


def feedforward_targets(cfg: IA3MethodConfig, targets: list[str], family: Family) -> list[str]:
    """The targets whose input is rescaled; each feedforward pattern must match one, by its name or
    the name the presets know it by (Swin's ``layers.1.blocks.0.mlp.fc2`` is ``blocks.1.mlp.fc2``)."""
    known_as = {n: key for key, names in canonical_names(targets, family).items() for n in names}
    found = []
    for pattern in cfg.feedforward_modules:
        hits = [t for t in targets if re.fullmatch(pattern, t) or re.fullmatch(pattern, known_as[t])]
        if not hits:
            raise ConfigError(
                f"method.feedforward_modules entry {pattern!r} matches no adapted module "
                f"(adapted: {', '.join(targets[:4])}{', ...' if len(targets) > 4 else ''})"
            )
        found.extend(h for h in hits if h not in found)
    return found
