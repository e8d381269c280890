"""Bottleneck adapters: Houlsby, Pfeiffer and AdaptFormer share one config shape (their width)."""

from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field
from peftlab.config.sections import MethodConfig

# where each adapter sits in a block: after (or beside) these branches' modules
ADAPTER_PLACES = {"houlsby": ("attn", "mlp"), "pfeiffer": ("mlp",), "adaptformer": ("mlp",)}


@dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """What every bottleneck adapter has: its hidden width."""

    bottleneck: int = 8  # hidden width of each adapter (down d -> bottleneck, up bottleneck -> d)
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "whose adapters peftlab has not tested on a quantized base"

    def __post_init__(self):
        super().__post_init__()
        check_field(self.bottleneck > 0, "method.bottleneck", self.bottleneck, "an integer > 0")


@dataclass(frozen=True)
class HoulsbyConfig(AdapterConfig):
    """Houlsby et al. (2019): a sequential adapter after the attention and after the MLP of every block."""

    name: str = "houlsby"


@dataclass(frozen=True)
class PfeifferConfig(AdapterConfig):
    """Pfeiffer et al. (2021): one sequential adapter after the MLP of every block."""

    name: str = "pfeiffer"


@dataclass(frozen=True)
class AdaptFormerConfig(AdapterConfig):
    """Chen et al. (2022): an adapter parallel to the MLP of every block, its output times ``scale``."""

    name: str = "adaptformer"
    bottleneck: int = 64  # hidden width of each adapter (64: the paper's width for ViT-B)
    scale: float = 0.1  # the adapter's output is multiplied by it (the paper's s)

    def __post_init__(self):
        super().__post_init__()
        check_field(self.scale > 0, "method.scale", self.scale, "a number > 0")
