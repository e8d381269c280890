"""BOFT (Liu et al., ICLR 2024) through PEFT's ``BOFTConfig`` on the one injection path.

Each target's input is rotated by ``m`` butterfly factors (``boft_n_butterfly_factor``), each a
permuted block-diagonal orthogonal matrix whose ``b x b`` blocks are Cayley transforms of trained
skew-symmetric matrices (PEFT stores each block whole: ``m (in / b) b²`` numbers), and the output
is scaled by a trained vector (``out`` numbers, ``boft_s``). PEFT's ``init_weights=True`` starts
the blocks at zero and the scale at one: the identity. Merge and export: ``PeftTuner``'s.

Two facts about PEFT 0.21.2 (``peft/tuners/boft/layer.py``) shape this file:
- ``BOFTLayer.update_layer`` builds its permutation with ``torch.arange`` on the default device
  and indexes a matrix with those tensors; peftlab counts parameters on the meta device (inside
  ``with torch.device("meta")``, ``peftlab.tuners.params``), where that index calls ``.item()`` on a meta
  tensor ("Tensor.item() cannot be called on meta tensors"). The injection therefore runs with the
  CPU as the default device; PEFT moves the adapter to its base layer's device afterwards.
- More than one butterfly factor runs only with PEFT's CUDA extension ``fbd_cuda``, which PEFT
  compiles on first use (nvcc and ninja); where it does not load, PEFT warns and uses one factor
  whatever the config says. peftlab refuses ``boft_n_butterfly_factor > 1`` there instead.
- PEFT caches the extension in its module global ``_FBD_CUDA``, but a failed build caches None,
  which ``get_fbd_cuda`` reads as "not tried yet": every BOFT layer tries ``torch.utils.cpp_extension.load``
  again (seconds each, a build directory under ``~/.cache/torch_extensions``, torch's "No CUDA
  runtime is found" on stderr). Without CUDA the build cannot succeed, so ``no_fbd_cuda_without_cuda``
  caches False there (PEFT's ``if not get_fbd_cuda()`` reads it as unavailable) before PEFT is asked;
  with CUDA, PEFT builds and caches it as it does.
"""

from __future__ import annotations

import torch
from torch import nn

from peftlab.tuners.base import TunerContext
from peftlab.tuners.boft.config import BOFTMethodConfig
from peftlab.tuners.oft.model import in_features_of
from peftlab.tuners.peft_injection import PeftTuner, inject, plan_injection, plan_targets
from peftlab.utils.errors import ConfigError


class BOFTTuner(PeftTuner):
    name = "boft"


def no_fbd_cuda_without_cuda() -> None:
    """Without CUDA, mark PEFT's fbd_cuda as unavailable, so that no BOFT layer tries to compile it."""
    import peft.tuners.boft.layer as boft_layer

    if boft_layer._FBD_CUDA is None and not torch.cuda.is_available():
        boft_layer._FBD_CUDA = False  # not None: PEFT's "already tried"; falsy: PEFT's "unavailable"


def butterfly_available() -> bool:
    """Whether PEFT's CUDA extension for more than one butterfly factor loads (PEFT builds it on first call)."""
    from peft.tuners.boft.layer import get_fbd_cuda

    no_fbd_cuda_without_cuda()
    return bool(get_fbd_cuda())


def check(model: nn.Module, cfg: BOFTMethodConfig, ctx: TunerContext) -> None:
    """What PEFT refuses with a ValueError naming its own fields (a block size that does not divide
    in_features, PEFT's butterfly rule), in peftlab's words; and a butterfly PEFT would silently drop."""
    factors = cfg.boft_n_butterfly_factor
    if factors > 1 and not butterfly_available():
        raise ConfigError(
            f"method.boft_n_butterfly_factor={factors} is invalid: expected 1 on this machine: PEFT "
            "builds more butterfly factors only with its CUDA extension fbd_cuda, which does not load "
            "here (PEFT would silently use 1)"
        )
    field, value = (
        ("method.boft_block_size", cfg.boft_block_size)
        if cfg.boft_block_size
        else ("method.boft_block_num", cfg.boft_block_num)
    )
    _, targets = plan_targets(model, cfg)
    for name in targets:
        in_features = in_features_of(model, name)
        if in_features % value:
            raise ConfigError(
                f"{field}={value} is invalid: expected a divisor of the input width {in_features} "
                f"of every adapted module ({name})"
            )
        size = cfg.boft_block_size or in_features // cfg.boft_block_num
        if factors > 1 and (size % 2 or in_features % (size * 2 ** (factors - 1))):
            raise ConfigError(
                f"method.boft_n_butterfly_factor={factors} is invalid: expected an even block size "
                f"({size}) that times 2^{factors - 1} divides the input width {in_features} of every "
                f"adapted module ({name}), PEFT's butterfly rule"
            )


def apply(model: nn.Module, cfg: BOFTMethodConfig, ctx: TunerContext) -> BOFTTuner:
    from peft import BOFTConfig  # peft (and transformers): not for checks

    plan = plan_injection(model, cfg)
    config = BOFTConfig(
        boft_block_size=cfg.boft_block_size,
        boft_block_num=cfg.boft_block_num,
        boft_n_butterfly_factor=cfg.boft_n_butterfly_factor,
        boft_dropout=cfg.boft_dropout,
        init_weights=True,
        target_modules=plan.target_modules,
        modules_to_save=plan.modules_to_save,
        bias="none",
    )
    no_fbd_cuda_without_cuda()
    with torch.device("cpu"):  # not meta: PEFT indexes with tensors it makes on the default device (see above)
        return BOFTTuner(inject(model, plan, ctx, config), plan.head)
