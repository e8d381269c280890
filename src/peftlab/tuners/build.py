"""The model of a run, built in one call: ``build_tuned`` is what the recipe and ``load_trained`` call.

The order is fixed, because every random draw depends on it: the size check (meta device, no draw),
the seed, the base (``peftlab.quant.load.build_base``: quantized while loading when the run quantizes),
then the method (``apply_tuner``: LoRA's initialisation draws here). A run, its resume and its export
therefore build the same random base and the same adapters.
"""

from __future__ import annotations

from collections.abc import Callable

from peftlab.config.sections import MethodConfig, ModelConfig
from peftlab.models.backbones import base_provenance, enable_grad_checkpointing
from peftlab.quant.load import build_base
from peftlab.tuners.base import Tuner, TunerContext, apply_tuner
from peftlab.tuners.params import check_model_size
from peftlab.utils.seed import seed_everything


def build_tuned(
    model_cfg: ModelConfig,
    method: MethodConfig,
    num_classes: int,
    ctx: TunerContext,
    *,
    seed: int,
    grad_checkpointing: bool = False,
    after_check: Callable[[], object] | None = None,
) -> tuple[Tuner, dict]:
    """``method`` applied to ``model_cfg``'s backbone, on the CPU, and the base's provenance record (the
    weights file it was loaded from, before the tuner wraps it). The base is quantized as ``ctx.quant``
    says. ``after_check`` is called once the size check passes, before anything is built: the recipe
    takes its memory baseline there, after the imports the check may make (PEFT's, for a method counted
    by applying it)."""
    check_model_size(model_cfg, method, num_classes)  # on the meta device: a refusal allocates nothing
    if after_check is not None:
        after_check()
    seed_everything(seed)  # a base without a weights file is the same random model each time
    model = build_base(model_cfg, ctx.quant, method, num_classes)
    base = base_provenance(model_cfg, model)
    if grad_checkpointing:
        enable_grad_checkpointing(model)
    return apply_tuner(model, method, ctx), base
