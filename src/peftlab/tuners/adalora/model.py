"""AdaLoRA (Zhang et al., ICLR 2023) through PEFT's ``AdaLoraModel``, wired into the recipe.

PEFT leaves two things to the training loop that a timm model never gets done for it
(peft 0.21, ``tuners/adalora/model.py``):
- the orthogonal regulariser is added only in ``AdaLoraModel.forward`` when the output has
  a ``.loss`` (a timm model returns logits): here it is ``regularization()``, the same sum;
- ``update_and_allocate(global_step)`` must be called after ``optimizer.step()`` and before
  ``zero_grad()`` on every step, also after the final budget is reached, when it re-applies
  the mask (pruned ``lora_E`` entries would regrow through AdamW otherwise): here it is
  ``after_step``. Steps are counted from 1 so that the last step equals ``total_step`` and the
  final allocation (``global_step == total_step - tfinal``) happens even with ``tfinal = 0``.

The schedule fits any run (``schedule``): PEFT needs the warm-up and the final phase to leave the
final allocation a step of its own (``tinit < total_step - tfinal``); where the run's steps do not
hold them, both shrink in proportion, and result.json says so (``ranks.schedule``, ``warnings``).
PEFT scores the ranks only on the steps before the final allocation; a one-step run has none, so
there the allocation scores them by its own step's gradients instead of failing on no score at all.

The adapter file holds the adapter resized to the kept ranks (PEFT's own resizing on save);
loading infers the kept ranks from the shapes.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from peftlab.config.checks import resolve_steps
from peftlab.tuners.adalora.config import AdaLoraMethodConfig
from peftlab.tuners.base import TunerContext
from peftlab.tuners.lora.model import LoraTuner
from peftlab.tuners.peft_injection import inject, plan_injection, plan_targets

ADAPTER = "default"
NOMINAL_STEPS = 1000  # total_step when the model is built only to be checked or to load weights


@dataclass(frozen=True)
class Schedule:
    """AdaLoRA's phases in optimizer steps, counted from 1: steps 1..tinit at init_r, the budget falling
    to the final allocation at step ``total_step - tfinal``, then tfinal steps at the kept ranks."""

    tinit: int
    tfinal: int
    deltaT: int
    total_step: int
    fitted: str | None = None  # how and why it differs from the config's, in words; None when it does not

    @property
    def final_allocation(self) -> int:
        return self.total_step - self.tfinal

    def record(self) -> dict:
        """result.json's ``ranks.schedule``."""
        return {
            "tinit": self.tinit,
            "tfinal": self.tfinal,
            "deltaT": self.deltaT,
            "total_step": self.total_step,
            "final_allocation": self.final_allocation,
            "fitted": self.fitted,
        }


def schedule(cfg: AdaLoraMethodConfig, total_steps: int) -> Schedule:
    """The config's tinit and tfinal in optimizer steps, fitted to a run of ``total_steps`` where it is too
    short for them: PEFT requires ``tinit + tfinal <= total_steps - 1`` (a step for the final allocation)."""
    asked = (
        resolve_steps(cfg.tinit, total_steps, "method.tinit"),
        resolve_steps(cfg.tfinal, total_steps, "method.tfinal"),
    )
    tinit, tfinal = asked
    notes = []
    if tinit + tfinal > total_steps - 1:
        room = total_steps - 1
        tinit, tfinal = asked[0] * room // sum(asked), asked[1] * room // sum(asked)
        keeps = (
            f" (a run of {sum(asked) + 1} steps or more keeps them)"
            if isinstance(cfg.tinit, int) and isinstance(cfg.tfinal, int)
            else ""
        )
        notes.append(
            f"method.tinit + method.tfinal = {asked[0]} + {asked[1]} steps leave no step to prune ranks in a run "
            f"of {total_steps} optimizer steps: fitted in proportion to {tinit} + {tfinal}{keeps}"
        )
    if total_steps - tfinal == 1:
        notes.append(
            "the final allocation is at step 1, with no step before it to score the ranks: "
            "it scores them by step 1's own gradients"
        )
    return Schedule(tinit, tfinal, cfg.deltaT, total_steps, "; ".join(notes) or None)


def module_of(param_name: str) -> str:
    """``blocks.0.attn.qkv.q.lora_E.default`` (or without ``.default``) -> ``blocks.0.attn.qkv.q``."""
    return re.sub(r"\.lora_[ABE](\.default)?$", "", param_name)


class AdaLoraTuner(LoraTuner):
    name = "adalora"

    def __init__(self, model: nn.Module, head: str, cfg: AdaLoraMethodConfig, targets: list[str], phases: Schedule):
        super().__init__(model, head, {t: cfg.init_r for t in targets}, "adalora")
        self.cfg = cfg
        self.targets = targets
        self.schedule = phases
        self.budget = cfg.init_r * len(targets)
        self.history: list[dict] = []
        self._importance: dict[str, float] = {}
        self._orthogonal: list[tuple[bool, nn.Parameter]] | None = None  # orthogonal_factors, found once
        self._eyes: dict[tuple, torch.Tensor] = {}  # identity, by size, dtype and device

    @property
    def adalora(self):
        return self.model.base_model  # peft's AdaLoraModel

    @property
    def config(self):
        return self.adalora.peft_config[ADAPTER]

    def regularization(self) -> torch.Tensor | float:
        """PEFT's orthogonal regulariser: mean over lora_A, lora_B of ||P·Pᵀ − I||_F, times its weight."""
        if self.cfg.orth_reg_weight == 0:
            return 0.0
        total = 0.0
        factors = self.orthogonal_factors()
        for is_a, param in factors:
            cov = param @ param.T if is_a else param.T @ param
            total = total + torch.linalg.matrix_norm(cov - self.identity(cov))
        return self.cfg.orth_reg_weight * total / max(len(factors), 1)

    def orthogonal_factors(self) -> list[tuple[bool, nn.Parameter]]:
        """(is it an A, the parameter) of every lora_A and lora_B, in the model's order, found once: a walk
        of ``named_parameters()`` every step cost the host more than the regulariser's products (issue 61)."""
        if self._orthogonal is None:
            self._orthogonal = [
                ("lora_A" in name, param)
                for name, param in self.adalora.model.named_parameters()
                if ("lora_A" in name or "lora_B" in name) and ADAPTER in name
            ]
        return self._orthogonal

    def identity(self, cov: torch.Tensor) -> torch.Tensor:
        """The identity of ``cov``'s size, dtype and device, made once."""
        key = (cov.shape[0], cov.dtype, cov.device)
        if key not in self._eyes:
            self._eyes[key] = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        return self._eyes[key]

    def after_step(self, step: int) -> None:
        global_step = step + 1
        allocator = self.adalora.rankallocator
        budget, due = allocator.budget_schedule(global_step)
        final = global_step == self.schedule.final_allocation
        if final and global_step == 1:  # PEFT scores only the steps before the final allocation: there are none
            allocator.update_ipt(self.adalora.model)
        # the scores are read from the device only where a record (or a checkpoint) needs them, not every
        # step; the final allocation clears them, so they are read before it
        if final and allocator.exp_avg_ipt:
            self._importance = self._module_importance(allocator)
        self.adalora.update_and_allocate(global_step)
        if due and allocator.exp_avg_ipt:
            self._importance = self._module_importance(allocator)
        if due or final:
            self._record(global_step, budget if not final else allocator.target_bgt)

    def _module_importance(self, allocator) -> dict[str, float]:
        """Mean AdaLoRA score (smoothed sensitivity x uncertainty) of each module's A, E and B entries
        (one wait for the device)."""
        names = list(allocator.exp_avg_ipt)
        scores = [allocator._element_score(name) for name in names]
        totals = torch.stack([score.sum() for score in scores]).tolist()
        sums: dict[str, list[float]] = {}
        for name, score, total in zip(names, scores, totals):
            entry = sums.setdefault(module_of(name), [0.0, 0])
            entry[0] += total
            entry[1] += score.numel()
        return {module: total / count for module, (total, count) in sums.items()}

    def latest_importance(self) -> dict[str, float]:
        """Each module's importance as of the last step: read now while AdaLoRA scores, else the last read."""
        allocator = self.adalora.rankallocator
        return self._module_importance(allocator) if allocator.exp_avg_ipt else dict(self._importance)

    def current_ranks(self) -> dict[str, int]:
        pattern = self.config.rank_pattern
        if not pattern:
            return {t: self.cfg.init_r for t in self.targets}
        return {module_of(k): int(sum(bool(x) for x in v)) for k, v in pattern.items()}

    def _record(self, step: int, budget: int) -> None:
        ranks = self.current_ranks()
        last = {r["module"]: r["rank"] for r in self.history if r["kind"] == "rank"}
        changed = [m for m in self.targets if last.get(m) != ranks[m]]
        if budget != self.budget or not self.history:
            self.history.append(
                {"kind": "budget", "step": step, "budget": int(budget), "rank_sum": sum(ranks.values())}
            )
            self.budget = int(budget)
        if changed or step == self.schedule.final_allocation:
            for module in self.targets:
                self.history.append(
                    {
                        "kind": "rank",
                        "step": step,
                        "module": module,
                        "importance": self._importance.get(module),
                        "rank": ranks[module],
                    }
                )

    def importance_records(self) -> list[dict]:
        return list(self.history)

    def ranks(self) -> dict:
        final = self.current_ranks()
        return {
            "strategy": "adalora",
            "sum": sum(final.values()),
            "modules": len(final),
            "budget": self.cfg.target_r * len(self.targets),
            "initial": {t: self.cfg.init_r for t in self.targets},
            "final": final,
            "schedule": self.schedule.record(),
        }

    def warnings(self) -> list[str]:
        return [f"AdaLoRA's schedule: {self.schedule.fitted}"] if self.schedule.fitted else []

    def state_dict(self) -> dict:
        allocator = self.adalora.rankallocator
        pattern = self.config.rank_pattern
        return {
            "ipt": dict(allocator.ipt),
            "exp_avg_ipt": dict(allocator.exp_avg_ipt),
            "exp_avg_unc": dict(allocator.exp_avg_unc),
            "rank_pattern": {k: [bool(x) for x in v] for k, v in pattern.items()} if pattern else None,
            "budget": self.budget,
            "history": list(self.history),
            "importance": self.latest_importance(),
        }

    def load_state_dict(self, state: dict) -> None:
        allocator = self.adalora.rankallocator
        allocator.ipt, allocator.exp_avg_ipt = dict(state["ipt"]), dict(state["exp_avg_ipt"])
        allocator.exp_avg_unc = dict(state["exp_avg_unc"])
        self.config.rank_pattern = state["rank_pattern"]
        self.budget, self.history = state["budget"], list(state["history"])
        self._importance = dict(state["importance"])

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        with warnings.catch_warnings():  # AdaLoRA may prune a module to rank 0: PEFT takes that for a bad shard
            warnings.filterwarnings("ignore", message=".*LoRA tensor\\(s\\) have invalid shape")
            return super().adapter_state_dict()

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """A saved adapter is resized to its kept ranks: size the model's layers to match first."""
        pattern = {}
        for key, value in state.items():
            if key.endswith(".lora_E") or key.endswith(f".lora_E.{ADAPTER}"):
                name = module_of(key.removeprefix("base_model.model."))
                kept = value.shape[0]
                pattern[f"{name}.lora_E"] = [True] * kept + [False] * (self.cfg.init_r - kept)
        if pattern:
            self.config.rank_pattern = pattern
        super().load_adapter_state_dict(state)
        self._orthogonal = None  # the factors are found again (a load may have replaced them)

    def parameter_counts(self) -> dict[str, int]:
        """What the saved adapter holds: the kept ranks of A, E and B, and the head."""
        counts = super().parameter_counts()
        ranks = self.current_ranks()
        pruned = 0
        for module in self.targets:
            layer = self.adalora.model.get_submodule(module)
            a = layer.lora_A[ADAPTER]
            pruned += (a.shape[0] - ranks[module]) * (layer.in_features + layer.out_features + 1)
        return {**counts, "trainable": counts["trainable"] - pruned}


def check(model: nn.Module, cfg: AdaLoraMethodConfig, ctx: TunerContext) -> None:
    plan_targets(model, cfg)  # the schedule fits any run length (schedule)


def ranks(model: nn.Module, cfg: AdaLoraMethodConfig) -> dict[str, int]:
    return {t: cfg.init_r for t in plan_targets(model, cfg)[1]}


def apply(model: nn.Module, cfg: AdaLoraMethodConfig, ctx: TunerContext) -> AdaLoraTuner:
    from peft import AdaLoraConfig  # peft (and transformers): not for checks

    plan = plan_injection(model, cfg)
    phases = schedule(cfg, ctx.total_steps or NOMINAL_STEPS)
    config = AdaLoraConfig(
        init_r=cfg.init_r,
        target_r=cfg.target_r,
        tinit=phases.tinit,
        tfinal=phases.tfinal,
        deltaT=cfg.deltaT,
        beta1=cfg.beta1,
        beta2=cfg.beta2,
        orth_reg_weight=cfg.orth_reg_weight,
        total_step=phases.total_step,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=plan.target_modules,
        modules_to_save=plan.modules_to_save,
        bias="none",
    )
    return AdaLoraTuner(inject(model, plan, ctx, config), plan.head, cfg, plan.targets, phases)
