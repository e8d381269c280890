"""MLP-bias tuning, a method outside peftlab: only the biases of each block's MLP (and the head) train.

The registry line peftlab reads through the ``peftlab.methods`` entry point; no torch is imported here.
"""

from peftlab.tuners import TunerSpec
from peftlab_mlpbias.config import MlpBiasConfig

METHOD = TunerSpec(MlpBiasConfig, "peftlab_mlpbias.model")
