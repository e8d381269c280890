"""``SplitQKV`` decides its forward when it is built, given adapters or frozen (STYLE.md 16; issue 74): the
path it holds is the one the former per-call choice took in each of its four situations, its outputs are
that path's, and a forward asks none of the questions again (a captured CUDA graph replays one path)."""

import pytest
import torch
from testkit import TINY_MODEL

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.tuners import modules
from peftlab.tuners.base import TunerContext, apply_tuner


def per_call_path(module: modules.SplitQKV, x: torch.Tensor) -> str:
    """The choice SplitQKV.forward made on every call before issue 74, step by step as it made it."""
    parts = (module.q, module.k, module.v)
    bases = [getattr(part, "base_layer", part) for part in parts]
    float_parts = all(modules.is_plain_float(part) for part in parts)
    stacked = None
    if not float_parts and modules.stackable(parts):
        stacked = modules.quantized_stack(bases, x)
    if not float_parts and stacked is None:
        return "concat"
    adapters = [modules.plain_lora(part) for part in parts]
    if modules.frozen_bases(bases) and all(a is not False for a in adapters):
        return "fused_lora" if stacked is None else "quantized_fused_lora"
    if stacked is not None:
        return "concat"
    return "one_linear"


def model_of(method: dict, quant: dict | None = None):
    overrides = {"model": TINY_MODEL, "method": method, **({"quant": quant} if quant else {})}
    cfg = load_config(overrides=overrides)
    torch.manual_seed(0)
    model = apply_tuner(build_backbone(cfg.model, 5), cfg.method, TunerContext.for_checks(cfg)).model
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: an update a wrong path would get wrong
            param.data.normal_(0, 0.1)
    return model.train()


def split_modules(model) -> list[modules.SplitQKV]:
    found = [m for m in model.modules() if isinstance(m, modules.SplitQKV)]
    assert found
    return found


SITUATIONS = [
    ({"name": "lora", "r": 4}, None, "fused_lora"),  # frozen float base, plain LoRA on q and v
    ({"name": "lora", "r": 4, "lora_dropout": 0.1}, None, "one_linear"),  # dropout: not plain LoRA
    ({"name": "dora", "r": 4}, None, "concat"),  # a LoRA variant: each slice's own forward
    ({"name": "lora", "r": 4}, {"mode": "nf4"}, "quantized_fused_lora"),  # a 4-bit base that stacks
]


@pytest.mark.parametrize("method, quant, path", SITUATIONS, ids=lambda v: str(v))
def test_the_path_decided_at_build_is_the_former_per_call_choice(method, quant, path):
    if quant:
        pytest.importorskip("bitsandbytes")
        pytest.importorskip("peftlab.quant.step")
    model = model_of(method, quant)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    seen = []
    for module in split_modules(model):
        module.register_forward_pre_hook(lambda m, args: seen.append((m.path, per_call_path(m, args[0]))))
    model(x).square().sum().backward()
    assert seen and all(held == former == path for held, former in seen), seen


def test_a_forward_asks_nothing_of_its_slices_and_runs_the_held_path(monkeypatch):
    model = model_of({"name": "lora", "r": 4})
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()  # the first call fills the frozen fused weight (checked frozen once)
    asked = []
    for name in ("is_plain_float", "frozen_bases", "stackable", "quantized_stack"):
        original = getattr(modules, name)
        monkeypatch.setattr(modules, name, lambda *a, _f=original, _n=name: asked.append(_n) or _f(*a))
    ran = []
    for name in modules.SplitQKV.PATHS:
        original = getattr(modules.SplitQKV, name)
        monkeypatch.setattr(modules.SplitQKV, name, lambda self, x, _f=original, _n=name: ran.append(_n) or _f(self, x))
    for _ in range(3):
        model(x).sum().backward()
    assert asked == [] and ran == ["fused_lora"] * 3 * len(split_modules(model))


def test_a_base_trained_after_its_path_was_chosen_fails_loudly_until_the_path_is_chosen_again():
    model = model_of({"name": "lora", "r": 4})
    x = torch.randn(2, 3, 32, 32)
    model(x)
    split = split_modules(model)[0]
    split.k.weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match="call choose_path"):
        model(x)
    model.train()  # decides again: the trained base takes the autograd path
    assert split.path == "one_linear"
    model(x).sum().backward()
    assert split.k.weight.grad is not None


def test_the_path_follows_an_injected_adapter_a_freeze_and_a_trained_base():
    import peft

    qkv = torch.nn.Linear(8, 24)
    module = modules.split_qkv(qkv)
    assert module.path == "one_linear"  # plain Linears whose weights train
    module.requires_grad_(False)
    assert module.choose_path() == "fused_lora"
    wrapped = peft.get_peft_model(torch.nn.Sequential(module), peft.LoraConfig(r=2, target_modules=["q", "v"]))
    inner = split_modules(wrapped)[0]
    assert type(inner.q).__name__ == "Linear" and hasattr(inner.q, "lora_A") and inner.path == "fused_lora"
    inner.q.base_layer.weight.requires_grad_(True)
    assert inner.train().path == "one_linear"  # train() decides again
    x = torch.randn(3, 8)
    assert per_call_path(inner, x) == "one_linear"
