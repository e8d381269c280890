"""A model's structure: what the config checks and the parameter counts read of a model, as plain data.

    structure = structure_of(model)           # from a (meta) nn.Module: torch, once
    structure = Structure.from_body(body)     # from a model record's JSON: no torch

A ``Structure`` holds the model's class and family, its head (the module's name, its parameters, whether
a method trains it), its parameter total, and every ``nn.Linear`` in the order ``named_modules`` yields
them (name, in and out features, whether it is a plain ``nn.Linear``), every module's own parameters (their
sizes, whether the module is a LayerNorm) and the modules its forward never calls. The target plans, the size bound
and the counts of the methods that are counted from a plan (``tuners.structural``) read only this, on
the live model (``structure_of``) and from a record alike: the record is the same answer, never a
second truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from peftlab.models.families import FAMILIES, Family, family_key

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Linear:
    name: str
    in_features: int
    out_features: int
    plain: bool  # ``type(module) is nn.Linear``: what quantization replaces (not a subclass)


@dataclass(frozen=True)
class Param:
    module: str
    name: str  # its name in the module (``bias``, ``q_bias``)
    numel: int
    layernorm: bool  # its module is an ``nn.LayerNorm`` (or a subclass: timm's)


@dataclass(frozen=True)
class Structure:
    model_class: str
    family: Family
    head: str  # the classifier module's name (``head_prefix``)
    trains_head: bool  # False for a causal LM's vocabulary projection
    total: int  # parameters of the whole model
    head_size: int  # parameters of the head module
    linears: tuple[Linear, ...]
    params: tuple[Param, ...]  # every module's own parameters, in ``named_modules`` order
    unused: tuple[str, ...]  # modules the forward never calls (``families.unused_modules``)

    def linear(self, name: str) -> Linear:
        for linear in self.linears:
            if linear.name == name:
                return linear
        raise KeyError(name)

    def to_body(self) -> dict:
        return {
            "model_class": self.model_class,
            "family": family_key(self.family),
            "head": self.head,
            "trains_head": self.trains_head,
            "total": self.total,
            "head_size": self.head_size,
            "linears": [[m.name, m.in_features, m.out_features, m.plain] for m in self.linears],
            "params": [[p.module, p.name, p.numel, p.layernorm] for p in self.params],
            "unused": list(self.unused),
        }

    @classmethod
    def from_body(cls, body: dict) -> Structure:
        """The structure a record holds (a ValueError for one of another layout: the caller rebuilds it)."""
        try:
            return cls(
                model_class=str(body["model_class"]),
                family=FAMILIES[body["family"]],
                head=str(body["head"]),
                trains_head=bool(body["trains_head"]),
                total=int(body["total"]),
                head_size=int(body["head_size"]),
                linears=tuple(Linear(str(n), int(i), int(o), bool(p)) for n, i, o, p in body["linears"]),
                params=tuple(Param(str(m), str(n), int(k), bool(ln)) for m, n, k, ln in body["params"]),
                unused=tuple(str(name) for name in body["unused"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a model structure: {err}") from None


def structure_of(model: nn.Module) -> Structure:
    """``model``'s structure (a meta model's too: shapes only)."""
    from torch import nn

    from peftlab.models.backbones import head_prefix, trains_head
    from peftlab.models.families import family_of, unused_modules

    head = head_prefix(model)
    # the head's parameters as named_parameters names them, each once: a head tied to the token embeddings
    # (GPT-2's LM head) holds none of its own, as the live counts (``tuners.params``) say
    head_size = sum(p.numel() for name, p in model.named_parameters() if name.startswith(f"{head}."))
    return Structure(
        model_class=type(model).__name__,
        family=family_of(model),
        head=head,
        trains_head=trains_head(model),
        total=sum(p.numel() for p in model.parameters()),
        head_size=head_size,
        linears=tuple(
            Linear(name, m.in_features, m.out_features, type(m) is nn.Linear)
            for name, m in model.named_modules()
            if isinstance(m, nn.Linear)
        ),
        params=tuple(
            Param(name, param_name, param.numel(), isinstance(m, nn.LayerNorm))
            for name, m in model.named_modules()
            for param_name, param in m.named_parameters(recurse=False)
        ),
        unused=tuple(unused_modules(model)),
    )
