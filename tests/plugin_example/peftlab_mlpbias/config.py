from dataclasses import dataclass
from typing import ClassVar

from peftlab.config.checks import check_field
from peftlab.config.sections import MethodConfig

LAYERS = ("fc1", "fc2", "both")


@dataclass(frozen=True)
class MlpBiasConfig(MethodConfig):
    """the biases of each block's MLP (fc1, fc2 or both), and the head"""

    name: str = "mlp_bias"
    layers: str = "both"  # which MLP Linears' biases train: fc1, fc2 or both
    quantizable: ClassVar[bool] = False
    unquantizable_reason: ClassVar[str] = "which trains the base's own biases in place"
    merges: ClassVar[str] = "in place"  # for `peftlab methods`

    def describe(self) -> str:
        """The paper's sentence on this configuration (MethodConfig.describe): what it trains."""
        which = "both Linears" if self.layers == "both" else f"the {self.layers} Linear"
        return f"MLP-bias tuning trains only the biases of {which} of every block's MLP, and the classifier head."

    def __post_init__(self):
        super().__post_init__()
        check_field(self.layers in LAYERS, "method.layers", self.layers, "one of " + ", ".join(LAYERS))
