"""Importance-based rank controllers on PEFT LoRA layers (method ``adaptive``).

Mechanics. Every adapted module is a plain PEFT LoRA layer built at ``max_rank`` with a rank
mask over the rows of A and the columns of B. A pruned rank has its row of A, its column of B
and their AdamW moments set to zero; from then on its gradients are exactly zero (each factor's
gradient is multiplied by the other, zero, factor), so AdamW leaves it at zero without any
per-step masking: masked parameters receive no update and the forward pass is untouched (the
fused q/k/v path of ``SplitQKV`` still applies). A rank that comes back gets a fresh row of A
(PEFT's Kaiming-uniform bound, from a generator seeded by the step and the module) and a zero
column of B, so the model's function does not jump, and its moments start from zero.

Importance per module, over its active LoRA parameters (``after_backward``, on the raw
gradients; skipped on steps the fp16 scaler skips):
- ``magnitude``: ||scaling · B A||_F, the size of the module's update (taken at allocation time);
- ``grad_norm``: moving average of ||grad||_2 / sqrt(n) (n: active parameters);
- ``fisher``: moving average of sum(grad²) / n, the diagonal empirical Fisher per parameter;
- ``sensitivity``: AdaLoRA's score, the mean over parameters of the smoothed |p · grad| times
  its smoothed deviation (uncertainty).
Allocation (``peftlab.tuners.ranks``): proportional, threshold or top_k within the budget.
Inside a module, the ranks pruned first are those with the smallest ||B[:, i]|| · ||A[i, :]||.

At the end the adapter file is resized to the kept ranks; it loads into a plain PEFT
``LoraConfig`` with the ``rank_pattern`` / ``alpha_pattern`` that ``ranks()`` reports (the
alpha keeps each module's scaling lora_alpha / r).
"""

from __future__ import annotations

import math
import re
import zlib

import torch
from torch import nn

from peftlab.config.checks import resolve_steps
from peftlab.tuners import ranks as allocate
from peftlab.tuners.adaptive.config import AdaptiveConfig
from peftlab.tuners.base import TunerContext
from peftlab.tuners.lora.model import LoraTuner
from peftlab.tuners.peft_injection import inject, plan_injection, plan_targets
from peftlab.utils.errors import ConfigError

ADAPTER = "default"


def budget_of(cfg: AdaptiveConfig, n_modules: int) -> int:
    return cfg.budget if cfg.budget is not None else cfg.r * n_modules


def check_budget(cfg: AdaptiveConfig, n_modules: int) -> None:
    budget = budget_of(cfg, n_modules)
    allocate.check_budget(budget, n_modules, cfg.min_rank, cfg.built_rank, "method.budget")
    if budget > n_modules * cfg.built_rank:
        raise ConfigError(
            f"method.budget={budget} exceeds max_rank x adapted modules = "
            f"{cfg.built_rank} x {n_modules}; raise method.max_rank or lower the budget"
        )


class Schedule:
    """When the controller allocates: steps counted from 1 (the step just taken)."""

    def __init__(self, cfg: AdaptiveConfig, total_steps: int):
        self.warmup = resolve_steps(cfg.warmup, total_steps, "method.warmup")
        self.interval = max(1, resolve_steps(cfg.interval, total_steps, "method.interval"))
        self.final = resolve_steps(cfg.final_step, total_steps, "method.final_step")
        if not self.warmup <= self.final <= total_steps:
            raise ConfigError(
                f"method.warmup ({self.warmup} steps) <= method.final_step ({self.final}) <= the run's "
                f"{total_steps} steps is required"
            )

    def due(self, step: int) -> bool:
        return self.warmup <= step <= self.final and (step - self.warmup) % self.interval == 0


class AdaptiveTuner(LoraTuner):
    name = "adaptive"

    def __init__(self, model: nn.Module, head: str, cfg: AdaptiveConfig, targets: list[str], total_steps: int | None):
        super().__init__(model, head, {t: cfg.built_rank for t in targets}, "adaptive")
        self.cfg = cfg
        self.targets = targets
        self.budget = budget_of(cfg, len(targets))
        self.schedule = Schedule(cfg, total_steps) if total_steps else None  # None: built to load weights
        self.layers = {t: model.base_model.model.get_submodule(t) for t in targets}
        # bookkeeping on the CPU, also when the model is built on the meta device (parameter counts)
        self.masks = {t: torch.ones(cfg.built_rank, dtype=torch.bool, device="cpu") for t in targets}
        self.scores = {t: 0.0 for t in targets}  # moving averages (grad_norm, fisher)
        # each step's sums per module, on the device until scores() reads them (one wait, at allocation or save)
        self.pending: list[dict[str, torch.Tensor]] = []
        self.sens: dict[str, list[torch.Tensor]] = {}  # sensitivity: per-parameter averages
        self.history: list[dict] = []
        self.optimizer: torch.optim.Optimizer | None = None

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """The controller zeroes the moments of the ranks it prunes."""
        self.optimizer = optimizer

    def factors(self, module: str) -> tuple[nn.Parameter, nn.Parameter]:
        layer = self.layers[module]
        return layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight  # (R, in), (out, R)

    def active_params(self, module: str) -> int:
        a, b = self.factors(module)
        return int(self.masks[module].sum()) * (a.shape[1] + b.shape[0])

    # --- importance ------------------------------------------------------------------------
    def after_backward(self, step: int, skip: bool) -> None:
        """This step's sums of each module (grad_norm, fisher: the squared gradients; sensitivity: the
        smoothed scores of A and of B), kept on the device: the step never waits for it."""
        if skip or self.schedule is None or step + 1 > self.schedule.final or self.cfg.importance == "magnitude":
            return
        sums = {}
        with torch.no_grad():
            for module in self.targets:
                a, b = self.factors(module)
                if a.grad is None or b.grad is None:
                    continue
                if self.cfg.importance == "sensitivity":
                    sums[module] = self._sensitivity(module, (a, b))
                else:
                    sums[module] = (a.grad.pow(2).sum() + b.grad.pow(2).sum()).reshape(1)
        self.pending.append(sums)

    def _sensitivity(self, module: str, params: tuple[nn.Parameter, nn.Parameter]) -> torch.Tensor:
        """AdaLoRA's smoothed sensitivity x uncertainty: its sums over A and over B, (2,) on the device."""
        if module not in self.sens:
            self.sens[module] = [torch.zeros_like(p) for p in params for _ in range(2)]
        ipt_a, unc_a, ipt_b, unc_b = self.sens[module]
        sums = []
        for p, ipt, unc in ((params[0], ipt_a, unc_a), (params[1], ipt_b, unc_b)):
            current = (p * p.grad).abs()
            ipt.mul_(self.cfg.beta).add_(current, alpha=1 - self.cfg.beta)
            unc.mul_(self.cfg.beta2).add_((current - ipt).abs(), alpha=1 - self.cfg.beta2)
            sums.append((ipt * unc).sum())
        return torch.stack(sums)

    def scores_now(self) -> dict[str, float]:
        """The importance scores with every pending step folded in, in Python floats (one wait for the
        device), in the order the steps came: the moving averages (grad_norm, fisher) or the latest
        sensitivity averaged over the module's active parameters (the masks change only after this)."""
        if self.pending:
            flat = torch.cat([t.float() for sums in self.pending for t in sums.values()]).tolist()
            beta, position = self.cfg.beta, 0
            active = {module: max(1, self.active_params(module)) for module in self.targets}
            for sums in self.pending:
                for module, t in sums.items():
                    values, position = flat[position : position + t.numel()], position + t.numel()
                    n = active[module]
                    if self.cfg.importance == "sensitivity":
                        self.scores[module] = (0.0 + values[0] + values[1]) / n
                        continue
                    value = math.sqrt(values[0] / n) if self.cfg.importance == "grad_norm" else values[0] / n
                    self.scores[module] = beta * self.scores[module] + (1 - beta) * value
            self.pending = []
        return dict(self.scores)

    def importance(self) -> dict[str, float]:
        if self.cfg.importance != "magnitude":
            return self.scores_now()
        result = {}
        with torch.no_grad():
            for module in self.targets:
                a, b = self.factors(module)
                scaling = self.layers[module].scaling[ADAPTER]
                # ||B A||_F² = trace((BᵀB)(A Aᵀ)): r x r products instead of out x in
                result[module] = scaling * math.sqrt(max(0.0, float(((b.T @ b) * (a @ a.T)).sum())))
        return result

    # --- allocation ------------------------------------------------------------------------
    def after_step(self, step: int) -> None:
        step += 1
        if self.schedule is None or not self.schedule.due(step):
            return
        importance = self.importance()
        values = [importance[m] for m in self.targets]
        if not all(math.isfinite(v) for v in values):
            values = [v if math.isfinite(v) else 0.0 for v in values]
        cfg, n = self.cfg, len(self.targets)
        if cfg.allocation == "proportional":
            new = allocate.proportional(values, self.budget, cfg.min_rank, cfg.built_rank)
        elif cfg.allocation == "threshold":
            new = allocate.threshold(values, self.budget, cfg.min_rank, cfg.built_rank, cfg.quantile)
        else:
            new = allocate.top_k(values, self.budget, cfg.min_rank, cfg.built_rank, cfg.top_k)
        assert len(new) == n
        for module, rank in zip(self.targets, new):
            self._set_rank(module, rank, step)
        for module, value in zip(self.targets, values):
            self.history.append(
                {
                    "kind": "rank",
                    "step": step,
                    "module": module,
                    "importance": value,
                    "rank": int(self.masks[module].sum()),
                }
            )

    def _set_rank(self, module: str, rank: int, step: int) -> None:
        mask = self.masks[module]
        active = int(mask.sum())
        a, b = self.factors(module)
        with torch.no_grad():
            if rank < active:  # prune the weakest active ranks
                strength = b.norm(dim=0) * a.norm(dim=1)
                strength[~mask] = math.inf
                drop = torch.argsort(strength, stable=True)[: active - rank]
                mask[drop] = False
                a[drop] = 0
                b[:, drop] = 0
                self._zero_moments(a, drop, dim=0)
                self._zero_moments(b, drop, dim=1)
            elif rank > active:  # revive masked ranks: fresh A rows, zero B columns
                back = torch.nonzero(~mask).flatten()[: rank - active]
                mask[back] = True
                seed = zlib.crc32(f"{module}:{step}".encode())
                generator = torch.Generator().manual_seed(seed)
                bound = 1.0 / math.sqrt(a.shape[1])  # PEFT's kaiming_uniform_(a=sqrt(5)) bound
                fresh = (torch.rand(len(back), a.shape[1], generator=generator) * 2 - 1) * bound
                a[back] = fresh.to(a.device, a.dtype)
                b[:, back] = 0
                self._zero_moments(a, back, dim=0)
                self._zero_moments(b, back, dim=1)

    def _zero_moments(self, param: nn.Parameter, index: torch.Tensor, dim: int) -> None:
        if self.optimizer is None:
            raise RuntimeError("AdaptiveTuner.attach_optimizer(optimizer) must be called before training")
        for moment in self.optimizer.state.get(param, {}).values():
            if isinstance(moment, torch.Tensor) and moment.shape == param.shape:
                moment.index_fill_(dim, index.to(moment.device), 0.0)

    # --- state, results, files ---------------------------------------------------------------
    def current_ranks(self) -> dict[str, int]:
        return {m: int(self.masks[m].sum()) for m in self.targets}

    def importance_records(self) -> list[dict]:
        return list(self.history)

    def ranks(self) -> dict:
        final = self.current_ranks()
        return {
            "strategy": f"adaptive:{self.cfg.importance}/{self.cfg.allocation}",
            "sum": sum(final.values()),
            "modules": len(final),
            "budget": self.budget,
            "initial": {t: self.cfg.built_rank for t in self.targets},
            "final": final,
            "peft_rank_pattern": {re.escape(m): r for m, r in final.items()},
            "peft_alpha_pattern": {re.escape(m): self.cfg.lora_alpha * r / self.cfg.r for m, r in final.items()},
        }

    def state_dict(self) -> dict:
        return {
            "masks": {m: mask.clone() for m, mask in self.masks.items()},
            "scores": self.scores_now(),
            "sens": {m: [t.clone() for t in v] for m, v in self.sens.items()},
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        for module, mask in state["masks"].items():
            self.masks[module].copy_(mask)
        self.scores, self.pending = dict(state["scores"]), []
        self.sens = {m: [t.clone() for t in v] for m, v in state["sens"].items()}
        self.history = list(state["history"])

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapter resized to the kept ranks (rows of A, columns of B)."""
        state = super().adapter_state_dict()
        for module in self.targets:
            keep = self.masks[module]
            key = f"base_model.model.{module}.lora_"
            state[key + "A.weight"] = state[key + "A.weight"][keep].contiguous()
            state[key + "B.weight"] = state[key + "B.weight"][:, keep].contiguous()
        return state

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """A resized adapter: kept ranks first, the rest masked at zero."""
        padded = dict(state)
        for module in self.targets:
            key = f"base_model.model.{module}.lora_"
            if key + "A.weight" not in state:
                continue  # the mismatch is reported by the load below
            a, b = state[key + "A.weight"], state[key + "B.weight"]
            kept, built = a.shape[0], self.cfg.built_rank
            if not self.cfg.min_rank <= kept <= built:
                raise ValueError(f"adapter rank {kept} of {module} is outside [{self.cfg.min_rank}, {built}]")
            padded[key + "A.weight"] = torch.cat([a, a.new_zeros(built - kept, a.shape[1])])
            padded[key + "B.weight"] = torch.cat([b, b.new_zeros(b.shape[0], built - kept)], dim=1)
            self.masks[module] = torch.arange(built) < kept
        super().load_adapter_state_dict(padded)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters that the kept ranks hold (plus the head)."""
        counts = super().parameter_counts()
        pruned = sum(
            (self.cfg.built_rank - int(self.masks[m].sum())) * sum(s for s in self._sizes(m)) for m in self.targets
        )
        return {**counts, "trainable": counts["trainable"] - pruned}

    def _sizes(self, module: str) -> tuple[int, int]:
        a, b = self.factors(module)
        return a.shape[1], b.shape[0]


def check(model: nn.Module, cfg: AdaptiveConfig, ctx: TunerContext) -> None:
    _, targets = plan_targets(model, cfg)
    check_budget(cfg, len(targets))
    if ctx.total_steps is not None:
        Schedule(cfg, ctx.total_steps)


def ranks(model: nn.Module, cfg: AdaptiveConfig) -> dict[str, int]:
    return {t: cfg.built_rank for t in plan_targets(model, cfg)[1]}


def apply(model: nn.Module, cfg: AdaptiveConfig, ctx: TunerContext) -> AdaptiveTuner:
    from peft import LoraConfig  # peft (and transformers): not for checks

    plan = plan_injection(model, cfg)
    check_budget(cfg, len(plan.targets))
    built = cfg.built_rank
    config = LoraConfig(
        r=built,
        lora_alpha=cfg.lora_alpha * built / cfg.r,  # scaling lora_alpha / r at any rank
        lora_dropout=cfg.lora_dropout,
        init_lora_weights=True if cfg.init == "default" else cfg.init,
        target_modules=plan.target_modules,
        modules_to_save=plan.modules_to_save,
        bias="none",
    )
    return AdaptiveTuner(inject(model, plan, ctx, config), plan.head, cfg, plan.targets, ctx.total_steps)
