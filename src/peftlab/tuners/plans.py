"""The methods checked and counted from a model's structure alone (``models.structure``): no torch.

    ranks = check_structure(cfg.model, cfg.method, structure, num_classes)   # validate's model checks
    counts = count_structure(cfg.model.name, cfg.method, structure, num_classes)   # peftlab params

A method in ``PLANS`` is checked and sized from its ``Plan``: its targets and ranks from the structure's
Linears (``tuners.structural.plan_targets``), its size from their shapes, timm's blocks, the LayerNorms.
The methods' live hooks call the same functions on ``structure_of(model)``, and a test counts each on
every family the long way (the method applied on the meta model), so a model record's answer is the
live model's. A method outside ``PLANS`` (its count needs its own modules, or PEFT's: the adaptive
method, QA-LoRA, FacT, LoKr, OFT, BOFT, the PEFT bridge, plugins) is applied on the meta
device to be counted, and its answers are recorded per method config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from peftlab.config.checks import check_field
from peftlab.config.sections import MethodConfig, ModelConfig, QuantConfig
from peftlab.models.families import refuse_family
from peftlab.models.structure import Param, Structure
from peftlab.tuners.adapter.config import ADAPTER_PLACES, AdapterConfig
from peftlab.tuners.convpass.config import ConvpassConfig
from peftlab.tuners.ia3.config import IA3MethodConfig, feedforward_targets
from peftlab.tuners.lora.config import LoraMethodConfig, module_ranks
from peftlab.tuners.repadapter.config import RepAdapterConfig
from peftlab.tuners.size_check import refuse_size
from peftlab.tuners.structural import (
    bound_total,
    check_timm_blocks,
    is_affine_name,
    is_bias_name,
    plan_targets,
    selected_size,
    target_shape,
)
from peftlab.tuners.targets import ModulesConfig
from peftlab.tuners.vpt.config import REFUSED, VPTConfig
from peftlab.utils.errors import ConfigError


def lora_ranks(structure: Structure, cfg: LoraMethodConfig) -> dict[str, int]:
    """The rank of every module LoRA would adapt; a budget the bounds cannot hold, a missing importance
    file, an unmatched pattern and a rank above what a module can hold are refused here."""
    ranks = module_ranks(cfg, plan_targets(structure, cfg)[1])
    for name, rank in ranks.items():
        shape = target_shape(structure, name)
        if rank > min(shape):  # B A of a d_out x d_in module has rank at most min(d_in, d_out): the rest is dead weight
            if cfg.static_allocation:  # the strategy shares a budget: the budget (or r x modules) gave it
                key = f"method.rank_budget={cfg.rank_budget}" if cfg.rank_budget is not None else f"method.r={cfg.r}"
            else:
                key = f"method.r={cfg.r}" if rank == cfg.r else "method.rank_pattern"
            raise ConfigError(
                f"{key} gives {name} rank {rank}, above the {min(shape)} its {shape[0]} x {shape[1]} weight can hold "
                f"(min of its in and out features): expected a rank <= {min(shape)}"
            )
    return ranks


def lora_size(structure: Structure, cfg: LoraMethodConfig) -> int:
    """r x (in + out) per adapted module: PEFT's ``lora_A`` (r x in) and ``lora_B`` (out x r)."""
    return sum(rank * sum(target_shape(structure, name)) for name, rank in lora_ranks(structure, cfg).items())


def dora_size(structure: Structure, cfg: LoraMethodConfig) -> int:
    """LoRA's and one magnitude per output row of each adapted module (PEFT's ``lora_magnitude_vector``)."""
    targets = plan_targets(structure, cfg)[1]
    return lora_size(structure, cfg) + sum(target_shape(structure, name)[1] for name in targets)


def each_target(per_target: Callable[[int, int, MethodConfig], int]):
    """The size of a method that adds ``per_target(in, out, cfg)`` parameters to each module it adapts."""

    def size(structure: Structure, cfg: ModulesConfig) -> int:
        return sum(per_target(*target_shape(structure, name), cfg) for name in plan_targets(structure, cfg)[1])

    return size


def targets_only(structure: Structure, cfg: ModulesConfig) -> None:
    plan_targets(structure, cfg)


def ia3_size(structure: Structure, cfg: IA3MethodConfig) -> int:
    """One vector per target: of its input's width for a feed-forward module, of its output's otherwise."""
    targets = plan_targets(structure, cfg)[1]
    feedforward = feedforward_targets(cfg, targets, structure.family)
    return sum(target_shape(structure, t)[0 if t in feedforward else 1] for t in targets)


def selecting(select: Callable[[Param], bool], what: str, method: str):
    """The check of a selective method: a ConfigError when ``select`` keeps nothing."""

    def check(structure: Structure, cfg: MethodConfig) -> None:
        if not selected_size(structure, select):
            raise ConfigError(
                f"method.name={method!r} needs a model with {what}; {structure.model_class} has none outside the head"
            )

    return check


def biases(p: Param) -> bool:
    return is_bias_name(p.name)


def layernorms(p: Param) -> bool:
    return p.layernorm and is_affine_name(p.name)


def check_vpt(structure: Structure, cfg: VPTConfig) -> None:
    check_timm_blocks(structure, "vpt")
    if structure.model_class in REFUSED:
        raise ConfigError(f"method.name='vpt' on {structure.model_class}: {REFUSED[structure.model_class]}")


def vpt_size(structure: Structure, cfg: VPTConfig) -> int:
    """``prompt_tokens`` x d prompts before the first block, and before every other one when deep."""
    return cfg.prompt_tokens * structure.embed_dim * (len(structure.blocks) if cfg.deep else 1)


def adapter_size(structure: Structure, cfg: AdapterConfig) -> int:
    """A bottleneck (d -> b -> d, with biases) at each of the method's places in every block."""
    places = len(ADAPTER_PLACES[cfg.name])
    return sum(places * (2 * b.dim * cfg.bottleneck + cfg.bottleneck + b.dim) for b in structure.blocks)


def check_ssf(structure: Structure, cfg: MethodConfig) -> None:
    check_timm_blocks(structure, "ssf")
    for name, _, affine in structure.norms:
        if not affine and not name.startswith(structure.head):
            raise ConfigError(
                f"method.name='ssf' scales each LayerNorm's affine weight, but {name} has none "
                "(elementwise_affine=False)"
            )


def ssf_size(structure: Structure, cfg: MethodConfig) -> int:
    """A scale and a shift of every output channel of each Linear and LayerNorm outside the head, and
    of the patch embedding's convolution."""
    widths = [m.out_features for m in structure.linears if not m.name.startswith(structure.head)]
    widths += [width for name, width, _ in structure.norms if not name.startswith(structure.head)]
    return 2 * (sum(widths) + (structure.patch_channels or 0))


DIFFFIT_BRANCHES = {"attn": "proj", "mlp": "fc2"}  # a block's residual branches and the Linear each ends in


def check_difffit(structure: Structure, cfg: MethodConfig) -> None:
    linears = {m.name for m in structure.linears}
    for name in check_timm_blocks(structure, "difffit"):
        for branch, output in DIFFFIT_BRANCHES.items():
            if f"{name}.{branch}.{output}" not in linears:
                raise ConfigError(
                    f"method.name='difffit' folds its scale into {name}.{branch}.{output}, which is "
                    f"not an nn.Linear in {structure.module_class(f'{name}.{branch}')}"
                )


def difffit_size(structure: Structure, cfg: MethodConfig) -> int:
    """A scale (gamma) per output channel of each block's ``attn.proj`` and ``mlp.fc2``."""
    return sum(
        structure.linear(f"{b.name}.{branch}.{output}").out_features
        for b in structure.blocks
        for branch, output in DIFFFIT_BRANCHES.items()
    )


def check_convpass(structure: Structure, cfg: ConvpassConfig) -> None:
    names = check_timm_blocks(structure, "convpass")
    windowed = structure.blocks[0].kind == "SwinTransformerBlock"
    if windowed or structure.grid is None or structure.num_prefix_tokens is None:
        raise ConfigError(
            f"method.name='convpass' convolves the patch grid of a ViT-like model; {structure.model_class}'s "
            "attention sees windows, not the grid (Swin's variant is not implemented)"
        )
    if structure.dynamic_img_size:
        raise ConfigError("method.name='convpass' needs a fixed patch grid; this model has dynamic_img_size set")
    width = min(b.dim for b in structure.blocks if b.name in names)
    check_field(cfg.dim <= width, "method.dim", cfg.dim, f"at most the blocks' width {width} (a bottleneck)")


def convpass_size(structure: Structure, cfg: ConvpassConfig) -> int:
    """Beside ``attn`` and ``mlp`` of every block: d -> dim, a 3 x 3 convolution dim -> dim, dim -> d (biases)."""
    dim = cfg.dim
    return sum(2 * (2 * b.dim * dim + dim + 9 * dim * dim + dim + b.dim) for b in structure.blocks)


REPADAPTER_READERS = {"attn": (("qkv",), ("q_proj", "k_proj", "v_proj")), "mlp": (("fc1",), ("fc1_g", "fc1_x"))}


def readers(structure: Structure, branch: str, kind: str) -> list[str] | None:
    """The Linears of ``branch`` (a block's attn or mlp) that read its input; None for a layout not known."""
    linears = {m.name for m in structure.linears}
    for names in REPADAPTER_READERS[kind]:
        if all(f"{branch}.{name}" in linears for name in names):
            return list(names)
    return None


def check_repadapter(structure: Structure, cfg: RepAdapterConfig) -> None:
    check_timm_blocks(structure, "repadapter")
    for block in structure.blocks:
        check_field(
            block.dim % cfg.groups == 0,
            "method.groups",
            cfg.groups,
            f"a divisor of the blocks' width ({block.name}: {block.dim})",
        )
        for kind, choices in REPADAPTER_READERS.items():
            if readers(structure, f"{block.name}.{kind}", kind) is None:
                raise ConfigError(
                    f"method.name='repadapter' folds into the Linears that read {block.name}.{kind}'s input, and "
                    f"{structure.module_class(f'{block.name}.{kind}')} has none of "
                    f"{', '.join('/'.join(r) for r in choices)}"
                )


def repadapter_size(structure: Structure, cfg: RepAdapterConfig) -> int:
    """Before ``attn`` and ``mlp`` of every block: conv_A d -> dim and the grouped conv_B dim -> d, with biases."""
    dim = cfg.dim
    return sum(2 * (b.dim * dim + dim + b.dim * dim // cfg.groups + b.dim) for b in structure.blocks)


def check_head(structure: Structure, cfg: MethodConfig) -> None:
    if not structure.trains_head:
        raise ConfigError(
            f"method.name={cfg.name!r} trains a classifier head alone: a causal LM has none to train "
            "(expected model.task classification)"
        )


@dataclass(frozen=True)
class Plan:
    """How a method is checked and sized from a structure. It trains the parameters it adds (less those
    ``frozen``), the base's own that ``selected`` counts (BitFit's biases), and the head; or, with
    ``trains_all``, every weight (full fine-tuning). ``is_adapter``: its own parameters are an adapter
    (reported as such; full, linear and the selective methods have none)."""

    check: Callable[[Structure, MethodConfig], object]  # raises ConfigError for what the model refuses
    added: Callable[[Structure, MethodConfig], int]  # the parameters it adds
    ranks: Callable[[Structure, MethodConfig], dict[str, int]] | None = None
    is_adapter: bool = True
    trains_all: bool = False
    frozen: Callable[[Structure, MethodConfig], int] = lambda structure, cfg: 0  # of those added, frozen ones
    selected: Callable[[Structure, MethodConfig], int] = lambda structure, cfg: 0  # trained in place (selective)


def nothing(structure: Structure, cfg: MethodConfig) -> int:
    return 0


PLANS = {
    "full": Plan(check=nothing, added=nothing, is_adapter=False, trains_all=True),
    "linear": Plan(check=check_head, added=nothing, is_adapter=False),
    "lora": Plan(check=lora_ranks, added=lora_size, ranks=lora_ranks),
    "dora": Plan(check=lora_ranks, added=dora_size, ranks=lora_ranks),
    # PEFT's AdaLoRA: A (r x in), E (r x 1) and B (out x r) at init_r, and a frozen rank count (1)
    "adalora": Plan(
        check=targets_only,
        added=each_target(lambda i, o, cfg: cfg.init_r * (i + o + 1) + 1),
        ranks=lambda structure, cfg: {t: cfg.init_r for t in plan_targets(structure, cfg)[1]},
        frozen=each_target(lambda i, o, cfg: 1),
    ),
    # PEFT's LoHa on a Linear: two Hadamard factors, each (out x r)(r x in)
    "loha": Plan(
        check=targets_only,
        added=each_target(lambda i, o, cfg: 2 * cfg.r * (i + o)),
        ranks=lambda structure, cfg: {t: cfg.r for t in plan_targets(structure, cfg)[1]},
    ),
    # PEFT's VeRA: the vectors d (r) and b (out) per target; the shared projections are frozen buffers
    "vera": Plan(check=targets_only, added=each_target(lambda i, o, cfg: cfg.r + o)),
    "ia3": Plan(check=ia3_size, added=ia3_size),
    # peftlab's own modules in timm's blocks
    "vpt": Plan(check=check_vpt, added=vpt_size),
    **{
        name: Plan(check=lambda structure, cfg: check_timm_blocks(structure, cfg.name), added=adapter_size)
        for name in ("houlsby", "pfeiffer", "adaptformer")
    },
    "ssf": Plan(check=check_ssf, added=ssf_size),
    "difffit": Plan(
        check=check_difffit,
        added=difffit_size,
        selected=lambda structure, cfg: selected_size(structure, lambda p: biases(p) or layernorms(p)),
    ),
    "convpass": Plan(check=check_convpass, added=convpass_size),
    "repadapter": Plan(check=check_repadapter, added=repadapter_size),
    # selective: the base's own biases, or its LayerNorms' affine parameters, trained in place
    "bitfit": Plan(
        check=selecting(biases, "bias terms", "bitfit"),
        added=nothing,
        is_adapter=False,
        selected=lambda structure, cfg: selected_size(structure, biases),
    ),
    "ln": Plan(
        check=selecting(layernorms, "affine LayerNorms", "ln"),
        added=nothing,
        is_adapter=False,
        selected=lambda structure, cfg: selected_size(structure, layernorms),
    ),
}


def planned(method: MethodConfig, quant: QuantConfig) -> Plan | None:
    """``method``'s plan, where its checks and counts need nothing but the structure (an unquantized base:
    a quantized one is checked against bitsandbytes' layers, live)."""
    plan = PLANS.get(method.name)
    return plan if plan is not None and quant.mode == "none" else None


def check_structure(
    model_cfg: ModelConfig, method: MethodConfig, structure: Structure, num_classes: int
) -> dict[str, int] | None:
    """``tuners.params.check_against_model`` of a planned method (``planned``) on ``structure``: the same
    refusals in the same order (the size bound, the family, the method's check, the applied size) and the
    same ranks."""
    plan = PLANS[method.name]
    refuse_size(model_cfg, method, num_classes, bound_total(structure, method))
    refuse_family(structure.family, structure.model_class, method.name)
    plan.check(structure, method)
    refuse_size(model_cfg, method, num_classes, structure.total + plan.added(structure, method))
    return plan.ranks(structure, method) if plan.ranks else None


def count_structure(model_name: str, method: MethodConfig, structure: Structure, num_classes: int) -> dict:
    """``tuners.params.count_parameters`` of a planned method on ``structure``."""
    plan = PLANS[method.name]
    refuse_family(structure.family, structure.model_class, method.name)
    plan.check(structure, method)
    added = plan.added(structure, method)
    head = structure.head_size if structure.trains_head or plan.trains_all else 0
    in_place = structure.total - head if plan.trains_all else plan.selected(structure, method)
    own = added - plan.frozen(structure, method)
    trainable = in_place + head + own
    total = structure.total + added
    return {
        "model": model_name,
        "method": method.name,
        "num_classes": num_classes,
        "total": total,
        "trainable": trainable,
        "trainable_ratio": trainable / total,
        "adapter": own if plan.is_adapter else None,
        "in_place": in_place,
        "head": head,
    }
