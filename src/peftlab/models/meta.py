"""Models built for their shapes alone, on the meta device (``shapes_only``): a config's checks, its parameter
counts, its input and patch grid, a hub checkpoint's keys.

A meta tensor holds no values, yet the in-place writes that initialise a model's weights (timm's ``trunc_normal_``,
``torch.nn.init``'s, transformers' ``_init_weights``) still run on it through torch's Python references: the default
study's ViT took 80 CPU ms to build on the meta device with them and 18 without, twice in every run's checks
(benchmarks/README.md, "Meta builds without their initialisation"). Inside ``shapes_only`` each ``VALUE_WRITES`` call
on a meta tensor returns it as it is; every call that makes or shapes a tensor runs.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode

# the in-place writes of weight initialisation: values only, never a shape
VALUE_WRITES = frozenset(
    "uniform_ normal_ erfinv_ mul_ add_ sub_ div_ clamp_ clamp_min_ clamp_max_ zero_ fill_ copy_ exp_ sqrt_ abs_ "
    "neg_ bernoulli_ random_ exponential_ log_normal_ addcmul_ addcdiv_".split()
)


class NoValues(TorchFunctionMode):
    """Each ``VALUE_WRITES`` call on a meta tensor returns the tensor as it is; all else runs."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in VALUE_WRITES and args and getattr(args[0], "is_meta", False):
            return args[0]
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def shapes_only():
    """Tensors made inside on the meta device, their initialisation skipped: a model for its shapes."""
    with torch.device("meta"), NoValues():
        yield
