"""A test method with training state of its own: LoRA whose regulariser follows a moving average.

Registered into ``peftlab.tuners.TUNERS`` (and its config into ``peftlab.config.methods.METHODS``) by the
tests that need it, so the resume test can show that ``tuner.state_dict()`` travels through the checkpoint:
if it did not, the resumed run's regulariser (and so its weights) would differ from the uninterrupted run's.
"""

from dataclasses import dataclass, fields

import torch

from peftlab.tuners import TunerSpec
from peftlab.tuners.lora.config import LoraMethodConfig
from peftlab.tuners.lora.model import LoraTuner
from peftlab.tuners.lora.model import apply as apply_lora
from peftlab.tuners.lora.model import check as check_lora


@dataclass(frozen=True)
class StatefulConfig(LoraMethodConfig):
    name: str = "stateful"


class StatefulTuner(LoraTuner):
    name = "stateful"

    def __init__(self, model, head):
        super().__init__(model, head)
        self.ema = torch.zeros(())  # moving average of the adapters' raw gradient norm
        self.steps = 0

    def lora_params(self):
        return [p for n, p in self.model.named_parameters() if "lora_" in n]

    def regularization(self):
        return 1e-2 * self.ema * sum((p**2).sum() for p in self.lora_params())

    def after_backward(self, step: int, skip: bool) -> None:
        norm = torch.nn.utils.get_total_norm([p.grad for p in self.lora_params() if p.grad is not None])
        self.ema = 0.5 * self.ema + 0.5 * norm.detach()

    def after_step(self, step: int) -> None:
        self.steps += 1

    def state_dict(self) -> dict:
        return {"ema": self.ema.clone(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.ema, self.steps = state["ema"].clone(), state["steps"]


def lora_part(cfg: StatefulConfig) -> LoraMethodConfig:
    return LoraMethodConfig(**{f.name: getattr(cfg, f.name) for f in fields(LoraMethodConfig) if f.name != "name"})


def check(model, cfg, ctx):
    check_lora(model, lora_part(cfg), ctx)


def apply(model, cfg, ctx):
    tuner = apply_lora(model, lora_part(cfg), ctx)
    return StatefulTuner(tuner.model, tuner.head)


SPEC = TunerSpec(StatefulConfig, "stateful_tuner")
