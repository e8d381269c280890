"""The backbone families peftlab adapts, and what the methods need to know of each.

timm's ViT relatives differ exactly where PEFT methods touch them. ``VisionTransformer`` (ViT, DeiT,
DeiT-III, DINOv2 with or without registers, CLIP and SigLIP towers) calls one fused ``attn.qkv``
Linear. ``Eva`` (EVA-02) has separate ``q_proj`` / ``k_proj`` / ``v_proj`` Linears and a SwiGLU MLP
(``mlp.fc1_g``, ``mlp.fc1_x``), or a fused qkv. ``Beit`` and a fused ``Eva`` keep the q and v biases
outside the Linear and call ``F.linear(x, qkv.weight, bias)``: a module that wraps ``qkv`` is never
called, so an adapter on it would train nothing. ``SwinTransformer`` nests its blocks in stages
(``layers.N.blocks.M``). A distilled DeiT has two heads (``head``, ``head_dist``).

``canonical_names`` maps a model's Linears to the names the target presets are written in
(``blocks.N.attn.qkv.{q,k,v}``, ``blocks.N.attn.proj``, ``blocks.N.mlp.{fc1,fc2}``), so ``standard``
means q and v on every family. ``prepare`` makes a fused-bias qkv call its Linear as a module (timm's
own ``qkv_bias_separate`` switch: the same sum, the bias added after the product).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from peftlab.models.blocks import block_indices
from peftlab.utils.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Family:
    name: str
    # fused: one qkv Linear called as a module; fused-bias: q/v biases outside it (prepare() makes
    # the Linear a called module); separate: q_proj, k_proj, v_proj
    attention: str
    supported: str = ""  # why peftlab cannot adapt the family ("" when it can)


VIT = Family("vit", "fused")
EVA = Family("eva", "separate")
EVA_FUSED = Family("eva", "fused-bias")
BEIT = Family("beit", "fused-bias")
SWIN = Family("swin", "fused")
OTHER = Family("other", "fused")
# transformers' ViT, DeiT, DINOv2 and CLIP vision towers: separate q, k and v Linears in each layer
HF = Family("hf", "separate")
DISTILLED = Family(
    "deit-distilled",
    "fused",
    "a distilled DeiT has two heads (head, head_dist) averaged at inference; peftlab trains one head: "
    "use the same model without distillation (deit_*_patch16_224), or a distilled one's weights in it",
)


def family_key(family: Family) -> str:
    """The family's name and attention (two EVA layouts share a name): its key in ``FAMILIES``."""
    return f"{family.name}/{family.attention}"


FAMILIES = {family_key(f): f for f in (VIT, EVA, EVA_FUSED, BEIT, SWIN, OTHER, HF, DISTILLED)}

# (separate projection, canonical name); fc1_g and fc1_x (SwiGLU) are both the MLP's first layer
ALIASES = {"q_proj": "qkv.q", "k_proj": "qkv.k", "v_proj": "qkv.v", "fc1_g": "fc1", "fc1_x": "fc1"}
# an HF layer's Linears (after ``layer.N.``, ``layers.N.`` or GPT-2's ``h.N.``) by canonical name: transformers 5
# names the vision models' as Llama does (``attention.q_proj``; CLIP ``self_attn.q_proj``, ``out_proj``),
# transformers 4 as BERT does (``attention.attention.query``, ``attention.output.dense``, ``intermediate.dense``,
# ``output.dense``). Text: Llama ``self_attn.{q,k,v,o}_proj`` and a gated MLP (``gate_proj`` and ``up_proj``
# both its first layer, ``down_proj``), BERT and RoBERTa ``attention.self.{query,key,value}``, GPT-2 its
# fused ``attn.c_attn`` split into q, k, v (peftlab.tuners.modules), ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``
HF_ALIASES = {
    **dict.fromkeys(
        ("attention.q_proj", "self_attn.q_proj", "attention.attention.query", "attention.self.query", "attn.c_attn.q"),
        "attn.qkv.q",
    ),
    **dict.fromkeys(
        ("attention.k_proj", "self_attn.k_proj", "attention.attention.key", "attention.self.key", "attn.c_attn.k"),
        "attn.qkv.k",
    ),
    **dict.fromkeys(
        ("attention.v_proj", "self_attn.v_proj", "attention.attention.value", "attention.self.value", "attn.c_attn.v"),
        "attn.qkv.v",
    ),
    **dict.fromkeys(
        ("attention.o_proj", "self_attn.out_proj", "self_attn.o_proj", "attention.output.dense", "attn.c_proj"),
        "attn.proj",
    ),
    **dict.fromkeys(("mlp.fc1", "intermediate.dense", "mlp.gate_proj", "mlp.up_proj", "mlp.c_fc"), "mlp.fc1"),
    **dict.fromkeys(("mlp.fc2", "output.dense", "mlp.down_proj", "mlp.c_proj"), "mlp.fc2"),
}
HF_LAYER = re.compile(r"^.*\.(?:layers?|h)\.(\d+)\.(.+)$")


def family_of(model: nn.Module) -> Family:
    """The family of a timm model, ``HF`` for a transformers one (``OTHER`` for a class peftlab does not know)."""
    kind = type(model).__name__
    if any(cls.__name__ == "HFLogits" for cls in type(model).__mro__):  # its text and prompt-learning subclasses
        return HF
    if kind == "VisionTransformerDistilled":
        return DISTILLED
    if kind == "Eva":
        fused = any(getattr(block.attn, "qkv", None) is not None for block in model.blocks)
        return EVA_FUSED if fused else EVA
    return {"VisionTransformer": VIT, "Beit": BEIT, "SwinTransformer": SWIN}.get(kind, OTHER)


# modules a family's classifier holds but its forward never calls: transformers' CLIP classifier
# mean-pools the last hidden states, and post_layernorm normalizes only the pooled output it drops
UNUSED = {"CLIPForImageClassification": ("model.vision_model.post_layernorm",)}


def unused_modules(model: nn.Module) -> tuple[str, ...]:
    """Names of the modules ``model``'s forward never calls (a method that selects the base's own
    parameters leaves theirs frozen: they would count as trained and never change)."""
    inner = getattr(model, "model", None) if family_of(model) is HF else None
    return UNUSED.get(type(inner).__name__, ())


def check_family(model: nn.Module, method: str) -> None:
    """A ConfigError naming the family and why, when peftlab cannot adapt it."""
    refuse_family(family_of(model), type(model).__name__, method)


def refuse_family(family: Family, model_class: str, method: str) -> None:
    """``check_family`` of a model of class ``model_class`` in ``family`` (its structure's: no torch)."""
    if family.supported:
        raise ConfigError(f"method.name={method!r} on {model_class} ({family.name}): {family.supported}")


def prepare(model: nn.Module) -> None:
    """Make every fused-bias qkv (BEiT, fused EVA) a Linear its attention calls as a module."""
    if family_of(model).attention != "fused-bias":
        return
    for module in model.modules():
        if hasattr(module, "qkv_bias_separate") and getattr(module, "q_bias", None) is not None:
            module.qkv_bias_separate = True


def canonical_name(name: str) -> str:
    """``blocks.0.attn.v_proj`` -> ``blocks.0.attn.qkv.v``: the name a preset matches."""
    head, _, last = name.rpartition(".")
    return f"{head}.{ALIASES[last]}" if last in ALIASES and head else name


def canonical_names(names: list[str], family: Family) -> dict[str, list[str]]:
    """Canonical name -> the model's module names it stands for. Swin's blocks are numbered across
    stages (stage 1's first block is ``blocks.<depth of stage 0>``), so ``blocks.\\d+`` reaches all; an HF
    model's ``layer.N.attention.q_proj`` (or ``attention.attention.query``) is ``blocks.N.attn.qkv.q``."""
    if family is HF:
        aliases: dict[str, list[str]] = {}
        for name in names:
            match = HF_LAYER.match(name)
            key = f"blocks.{match[1]}.{HF_ALIASES[match[2]]}" if match and match[2] in HF_ALIASES else name
            aliases.setdefault(key, []).append(name)
        return aliases
    if family is SWIN:
        numbered: dict[str, list[str]] = {}
        for name, block in zip(names, block_indices(names), strict=True):
            match = re.match(r"^layers\.\d+\.blocks\.\d+\.(.*)$", name)
            numbered.setdefault(f"blocks.{block}.{match[1]}" if match else name, []).append(name)
        return numbered
    canonical: dict[str, list[str]] = {}
    for name in names:
        canonical.setdefault(canonical_name(name), []).append(name)
    return canonical
