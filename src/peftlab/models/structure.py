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

from peftlab.models.blocks import block_names
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
class Block:
    name: str  # ``blocks.N``, Swin's ``layers.S.blocks.M``
    module: str  # its class's module and name: what ``tuners.structural.check_timm_blocks`` knows
    kind: str
    dim: int | None  # the width of the tokens it reads and writes (``norm1``'s)


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
    shown_class: str  # the class a refusal names (an HF wrapper's inner model)
    blocks: tuple[Block, ...]  # a timm model's transformer blocks (none for another model)
    embed_dim: int | None  # a timm model's ``embed_dim``
    norms: tuple[tuple[str, int, bool], ...]  # every nn.LayerNorm: name, width, whether it has a weight
    patch_channels: int | None  # the patch embedding convolution's (``patch_embed.proj``) output channels
    modules: tuple[tuple[str, str], ...]  # every module's name and class name
    grid: tuple[int, int] | None  # ``patch_embed.grid_size``
    num_prefix_tokens: int | None  # a timm ViT's class, register and distillation tokens
    dynamic_img_size: bool

    def module_class(self, name: str) -> str | None:
        return dict(self.modules).get(name)

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
            "shown_class": self.shown_class,
            "blocks": [[b.name, b.module, b.kind, b.dim] for b in self.blocks],
            "embed_dim": self.embed_dim,
            "norms": [list(norm) for norm in self.norms],
            "patch_channels": self.patch_channels,
            "modules": [list(m) for m in self.modules],
            "grid": None if self.grid is None else list(self.grid),
            "num_prefix_tokens": self.num_prefix_tokens,
            "dynamic_img_size": self.dynamic_img_size,
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
                shown_class=str(body["shown_class"]),
                blocks=tuple(Block(str(n), str(m), str(k), optional(d)) for n, m, k, d in body["blocks"]),
                embed_dim=optional(body["embed_dim"]),
                norms=tuple((str(n), int(w), bool(a)) for n, w, a in body["norms"]),
                patch_channels=optional(body["patch_channels"]),
                modules=tuple((str(n), str(c)) for n, c in body["modules"]),
                grid=None if body["grid"] is None else (int(body["grid"][0]), int(body["grid"][1])),
                num_prefix_tokens=optional(body["num_prefix_tokens"]),
                dynamic_img_size=bool(body["dynamic_img_size"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a model structure: {err}") from None


def optional(value) -> int | None:
    return None if value is None else int(value)


def structure_of(model: nn.Module) -> Structure:
    """``model``'s structure (a meta model's too: shapes only)."""
    from torch import nn

    from peftlab.models.backbones import head_prefix, trains_head
    from peftlab.models.families import family_of, unused_modules

    head = head_prefix(model)
    inner = getattr(model, "model", None)  # peftlab's wrapper of a transformers model: a refusal names that
    patch_embed = getattr(model, "patch_embed", None)
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
        shown_class=type(inner if isinstance(inner, nn.Module) else model).__name__,
        blocks=tuple(
            Block(name, type(block).__module__, type(block).__name__, width(getattr(block, "norm1", None)))
            for name in (block_names(model) if type(model).__module__.startswith("timm.") else ())
            for block in [model.get_submodule(name)]
        ),
        embed_dim=getattr(model, "embed_dim", None),
        norms=tuple(
            (name, m.normalized_shape[-1], m.weight is not None)
            for name, m in model.named_modules()
            if isinstance(m, nn.LayerNorm)
        ),
        patch_channels=getattr(getattr(patch_embed, "proj", None), "out_channels", None),
        modules=tuple((name, type(m).__name__) for name, m in model.named_modules()),
        grid=None if getattr(patch_embed, "grid_size", None) is None else tuple(patch_embed.grid_size),
        num_prefix_tokens=getattr(model, "num_prefix_tokens", None),
        dynamic_img_size=bool(getattr(model, "dynamic_img_size", False)),
    )


def width(norm) -> int | None:
    shape = getattr(norm, "normalized_shape", None)
    return shape[0] if shape else None
