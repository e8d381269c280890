"""What every tuner offers the training recipe: the model, its trainable weights and the hooks;
and ``apply_tuner``, which builds one from the registry (``peftlab.tuners.TUNERS``, or a plugin's)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peftlab.config.schema import RunConfig
from peftlab.config.sections import MethodConfig, QuantConfig
from peftlab.models.families import check_family, prepare
from peftlab.quant.bases import base_weight_bytes, check_quant, is_quantized_linear, load_pending
from peftlab.tuners.modules import choose_paths
from peftlab.tuners.plugins import method_spec
from peftlab.tuners.structural import is_head_param
from peftlab.utils.files import html_view, plain_view
from peftlab.utils.libraries import quiet_transformers


@dataclass(frozen=True)
class TunerContext:
    """What a tuner may need at build time, beyond its own config."""

    total_steps: int | None  # optimizer steps of the whole run (None: only checking the config)
    device: torch.device
    quant: QuantConfig

    @classmethod
    def for_checks(cls, cfg: RunConfig) -> TunerContext:
        return cls(total_steps=cfg.train.max_steps, device=torch.device("cpu"), quant=cfg.quant)


def logical_numel(param: torch.Tensor) -> int:
    """Elements of the weight a parameter stands for (bitsandbytes packs two 4-bit codes per byte)."""
    state = getattr(param, "quant_state", None)
    return state.shape.numel() if state is not None else param.numel()


class Tuner:
    """A model prepared for fine-tuning, with the method's hooks.

    The recipe calls, in plain sight, per micro-batch ``loss = loss + tuner.regularization()``;
    per optimizer step ``tuner.after_backward(step, skip)`` on the raw (unscaled, unclipped)
    gradients, where ``skip`` says the fp16 scaler will skip this step, and
    ``tuner.after_step(step)`` after ``optimizer.step()`` and before ``zero_grad()``. The
    checkpoint holds ``tuner.state_dict()``. A method that needs none of it keeps the no-ops.
    """

    name = "base"
    is_adapter = False  # adapters can be merged into the base weights
    exact_quantized_merge = False  # the quantized merge keeps the codes and adds no error (QA-LoRA)
    run_dir = None  # the run folder a finished run's tuner was rebuilt from (``load_trained``)

    def __init__(self, model: nn.Module, head: str):
        self.model = model
        self.head = head

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """A method that edits the optimizer's state (e.g. resets the moments of pruned ranks) keeps it."""
        return None

    def regularization(self) -> torch.Tensor | float:
        return 0.0

    def after_backward(self, step: int, skip: bool) -> None:
        return None

    def after_step(self, step: int) -> None:
        return None

    def ranks(self) -> dict | None:
        """Per-module ranks for result.json (low-rank methods): ``{"final": {module: rank}, ...}``."""
        return None

    def importance_records(self) -> list[dict]:
        """The history written to ``importance.jsonl``: one record per module per reallocation."""
        return []

    def warnings(self) -> list[str]:
        """What result.json's ``warnings`` says of the method's run, in words (AdaLoRA: its schedule fitted
        to a run too short for it)."""
        return []

    def state_dict(self) -> dict:
        """The method's own training state (moving averages, masks, schedules): tensors and plain values."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"method {self.name!r} keeps no training state, but the checkpoint holds {sorted(state)}")

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def trained_in_place(self) -> dict[str, nn.Parameter]:
        """The base's own parameters that train, outside the head (BitFit's biases, full fine-tuning's
        body). An adapter method's trainable parameters outside the head are its own (LoRA's, SSF's)."""
        if self.is_adapter:
            return {}
        return {n: p for n, p in self.trainable_parameters().items() if not is_head_param(n, self.head)}

    def param_groups(self, lr: float, weight_decay: float, head_lr: float, head_weight_decay: float) -> list[dict]:
        """AdamW groups: head vs the rest; no weight decay on biases, norms and embeddings (ndim < 2)."""
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in self.trainable_parameters().items():
            key = (is_head_param(name, self.head), param.ndim >= 2)
            groups.setdefault(key, []).append(param)
        result = []
        for (is_head, decays), params in sorted(groups.items()):
            wd = (head_weight_decay if is_head else weight_decay) if decays else 0.0
            result.append(
                {
                    "params": params,
                    "lr": head_lr if is_head else lr,
                    "weight_decay": wd,
                    "name": ("head" if is_head else "body") + ("" if decays else "_no_decay"),
                }
            )
        return result

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().contiguous() for n, p in self.trainable_parameters().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = self.trainable_parameters()
        missing = params.keys() - state.keys()
        unexpected = state.keys() - params.keys()
        if missing or unexpected:
            raise ValueError(
                f"trainable weights do not match: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
            )
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(state[name])

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """What ``adapter.safetensors`` holds: the trainable weights."""
        return self.trainable_state_dict()

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.load_trainable_state_dict(state)

    def peft_adapter(self) -> tuple[dict, dict[str, torch.Tensor]] | None:
        """(adapter_config.json, adapter_model.safetensors) for ``peft.PeftModel.from_pretrained``
        on the plain base model; None for a method PEFT cannot load: full, linear, qalora, bitfit, ln,
        difffit, ssf, the adapters and vpt never; vera, loha, lokr, oft and boft when they adapt q/k/v
        slices of timm's fused qkv, ia3 when a feed-forward scale sits on one (docs/run-directory.md)."""
        return None

    @property
    def quantized(self) -> bool:
        """True when the base holds quantized (bitsandbytes) layers."""
        return any(is_quantized_linear(m) for m in self.model.modules())

    def base_weight_bytes(self) -> dict[str, int]:
        """Bytes of the frozen base weights as stored, and the same weights in fp32."""
        return base_weight_bytes(self.model, {id(p) for p in self.trainable_parameters().values()})

    def parameter_counts(self) -> dict[str, int]:
        """Total and trainable parameters; a 4-bit weight counts its unpacked out x in elements."""
        total = sum(logical_numel(p) for n, p in self.model.named_parameters() if ".original_module." not in n)
        trainable = sum(p.numel() for p in self.trainable_parameters().values())
        return {"total": total, "trainable": trainable}

    def merged_model(self, quantized: bool = False) -> nn.Module | None:
        """A plain model with the adapters merged in (adapter methods only).

        On a quantized base, ``quantized=False`` gives fp32 weights dequant(W) + ΔW (exactly
        what the adapter computes) and ``quantized=True`` re-quantizes them (what deploys).
        """
        return None

    def merge_refusal(self) -> str | None:
        """Why an adapter that trained does not merge into the plain architecture (``merged_model`` is None
        and ``peftlab export --merged`` refuses), where the reason lies in the model; None otherwise."""
        return None

    def quantized_merge_facts(self, merged: nn.Module) -> dict:
        """What the method checks about its quantized merge ``merged``, for the merge check in result.json."""
        return {}

    def quantization_report(self) -> dict | None:
        """The method's own quantization (format, groups, error per layer) for result.json, or None."""
        return None

    def facts(self) -> tuple[str, list[tuple[str, str]]]:
        """(title, facts) of a notebook's view: the tuner, its method and run folder, the model it wraps, its
        trainable and total parameters, its base's storage and what to call for the model."""
        counts = self.parameter_counts()
        title = f"{type(self).__name__}: method {self.name}" + (f", run {self.run_dir}" if self.run_dir else "")
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model  # PEFT's
        architecture = (getattr(base, "pretrained_cfg", None) or {}).get("architecture")  # a timm model's name
        model = type(base).__name__ + (f" ({architecture})" if architecture else "")
        use = "tuner.model (a torch module)" + (
            ", tuner.merged_model() (the adapters merged)" if self.is_adapter else ""
        )
        return title, [
            ("model", model + (f" in a {type(self.model).__name__}" if base is not self.model else "")),
            ("trainable parameters", f"{counts['trainable']:,} of {counts['total']:,}"),
            ("base", "quantized (bitsandbytes)" if self.quantized else "not quantized"),
            ("use", use),
        ]

    def __repr__(self) -> str:
        return plain_view(*self.facts())

    def _repr_html_(self) -> str:
        return html_view(*self.facts())


def check_config(method: MethodConfig, model: nn.Module, ctx: TunerContext) -> None:
    """Checks that need the model (targets and patterns, quantization), without changing it."""
    check_family(model, method.name)
    method_spec(method.name).check(model, method, ctx)
    check_quant(ctx.quant, model)


def planned_ranks(method: MethodConfig, model: nn.Module) -> dict[str, int] | None:
    """The rank each module starts with (low-rank methods; None for the others)."""
    ranks = method_spec(method.name).ranks
    return ranks(model, method) if ranks else None


def apply_tuner(model: nn.Module, method: MethodConfig, ctx: TunerContext) -> Tuner:
    """``method`` applied to ``model`` (checked first), in ``ctx`` (the run's length, device, quantization)."""
    check_config(method, model, ctx)
    prepare(model)  # a fused-bias qkv (BEiT, EVA) called as a module, so an adapter on it is reached
    tuner = method_spec(method.name).apply(model, method, ctx)
    load_pending(tuner.model)  # a Linear left in its file that the method did not quantize (peftlab.quant.load)
    choose_paths(tuner.model)  # the base frozen: each SplitQKV's forward decided (tuners.modules)
    quiet_transformers()  # PEFT imports transformers, which logs to stderr on its own
    return tuner
