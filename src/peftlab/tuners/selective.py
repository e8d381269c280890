"""Selective tuning: a method that trains a chosen subset of the base's own parameters, and the head.

BitFit selects the biases, LN tuning the LayerNorms' affine parameters, DiffFit both (beside its own
scales). Each is a predicate ``select(module_name, module, param_name)``; ``selected_names`` lists
what it keeps outside the head and ``train_only`` freezes everything else.
"""

from collections.abc import Callable

from torch import nn

from peftlab.models.backbones import head_prefix, trains_head
from peftlab.models.families import unused_modules
from peftlab.tuners.base import Tuner, is_head_param
from peftlab.tuners.structural import is_affine_name, is_bias_name


class SelectiveTuner(Tuner):
    """A tuner that trains a chosen subset of the base's own parameters (and the head)."""

    name = "selective"


def selected_names(model: nn.Module, select: Callable[[str, nn.Module, str], bool]) -> list[str]:
    """Names of the parameters outside the head that ``select(module_name, module, param_name)`` keeps,
    but none of a module the model never calls (``families.unused_modules``)."""
    head = head_prefix(model)
    unused = tuple(f"{name}." for name in unused_modules(model))
    names = []
    for module_name, module in model.named_modules():
        if f"{module_name}.".startswith(unused):
            continue
        for param_name, _ in module.named_parameters(recurse=False):
            name = f"{module_name}.{param_name}" if module_name else param_name
            if not is_head_param(name, head) and select(module_name, module, param_name):
                names.append(name)
    return names


def train_only(model: nn.Module, names: list[str]) -> None:
    """Freeze everything, then let ``names`` and the head train."""
    model.requires_grad_(False)
    params = dict(model.named_parameters())
    for name in names:
        params[name].requires_grad_(True)
    if trains_head(model):  # a causal LM's LM head stays frozen
        model.get_submodule(head_prefix(model)).requires_grad_(True)


def is_bias(module_name: str, module: nn.Module, param_name: str) -> bool:
    """``structural.is_bias_name``: a layer's bias, or BEiT's and EVA's q and v biases."""
    return is_bias_name(param_name)


def is_layernorm_affine(module_name: str, module: nn.Module, param_name: str) -> bool:
    return isinstance(module, nn.LayerNorm) and is_affine_name(param_name)
