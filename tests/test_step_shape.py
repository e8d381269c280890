"""The training step shaped for a GPU, counted on the CPU (STYLE.md 16; issue 61): every aten op a
forward and backward dispatch is a kernel launch on a GPU, and every ``aten._local_scalar_dense`` (what
``.item()``, ``float()`` and a Python branch on a tensor go through) a host sync that stalls it. A
``TorchDispatchMode`` sees both on any device."""

import collections

import pytest
import torch
from testkit import TINY_MODEL
from torch.utils._python_dispatch import TorchDispatchMode

from peftlab.config.schema import load_config
from peftlab.training.runtime import autocast, before_compile
from peftlab.training.step import NonFinite, Optimization, training_step, warmup_cosine
from peftlab.tuners.base import TunerContext
from peftlab.tuners.build import build_tuned

NUM_CLASSES = 5


class Dispatched(TorchDispatchMode):
    """The aten ops dispatched while it is on, by name."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def tuned(method: dict, **train):
    cfg = load_config(overrides={"model": TINY_MODEL, "method": method, "train": {"max_steps": 20, **train}})
    tuner, _ = build_tuned(cfg.model, cfg.method, NUM_CLASSES, TunerContext.for_checks(cfg), seed=0)
    return tuner


def forward_backward_ops(model, images) -> collections.Counter:
    """The ops of one forward and backward in train mode, after one untimed (caches filled), the
    gradients cleared as an optimizer's ``zero_grad`` leaves them."""
    model.train()
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        with Dispatched() as seen:
            model(images).sum().backward()
    return seen.ops


def test_lora_on_the_q_and_v_slices_costs_at_most_two_ops_a_block_more_than_peft_on_the_whole_qkv():
    """peftlab's LoRA (the standard preset: q and v of timm's fused qkv, split) against PEFT's own LoRA
    on the whole fused qkv, both with the head trained: one product for both A's and one batched for
    both B's keep the split free (it cost 8 ops a block more: slices, copies, a product pair each)."""
    import peft
    import timm

    images = torch.randn(2, 3, TINY_MODEL["img_size"], TINY_MODEL["img_size"])
    ours = forward_backward_ops(tuned({"name": "lora", "r": 4}).model, images)
    options = {k: v for k, v in TINY_MODEL.items() if k != "name"}
    torch.manual_seed(0)
    base = timm.create_model(TINY_MODEL["name"], pretrained=False, num_classes=NUM_CLASSES, **options)
    whole = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["qkv"], modules_to_save=["head"])
    theirs = forward_backward_ops(peft.get_peft_model(base, whole), images)
    blocks = TINY_MODEL["depth"]
    assert sum(ours.values()) <= sum(theirs.values()) + 2 * blocks, (sum(ours.values()), sum(theirs.values()))
    assert ours["bmm"] == 2 * blocks and ours["mm"] < theirs["mm"]  # the B's batched, the A's in one product


def optimization(tuner) -> Optimization:
    """What a GPU run steps with: fused AdamW (train.fused_adamw's default on CUDA), clipping, fp32."""
    optimizer = torch.optim.AdamW(tuner.param_groups(1e-3, 0.01, 1e-3, 0.01), fused=True)
    tuner.attach_optimizer(optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(20, 0.1))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    trainable = list(tuner.trainable_parameters().values())
    return Optimization(optimizer, scheduler, scaler, trainable, "fp32", 1.0, torch.device("cpu"))


# built-in methods' steps read nothing back from the device (not here: LoHa's and LoKr's PEFT layers, which
# draw their module dropout on the CPU and branch on it, a host read there but no wait for a device)
SYNC_FREE = [
    {"name": "lora", "r": 4},
    {"name": "adaptive", "warmup": 10},  # the controller scores every step, allocates from step 10
    {"name": "dora", "r": 4},
    {"name": "adalora", "init_r": 4, "target_r": 2, "deltaT": 10},  # steps 3 and 4 score, none allocates
    {"name": "qalora", "r": 4},
    {"name": "vpt"},
    {"name": "houlsby"},
    {"name": "ssf"},
    {"name": "bitfit"},
    {"name": "ia3"},
    {"name": "full"},
]


@pytest.mark.parametrize("method", SYNC_FREE, ids=lambda m: m["name"])
def test_a_training_step_waits_for_the_device_nowhere(method):
    """``training_step`` away from log and evaluation points (no monitor; NonFinite records on the device):
    no ``aten._local_scalar_dense`` in any of its steps. The controller and AdaLoRA read their scores
    only where they allocate ranks or a checkpoint saves them; AdaLoRA allocates (every step between tinit
    and tfinal by default, deltaT 1: PEFT's ``mask_to_budget`` reads a threshold) only at deltaT's steps."""
    tuner = tuned(method)
    opt, nonfinite = optimization(tuner), NonFinite(torch.device("cpu"), "fp32")
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4) % NUM_CLASSES
    syncs = []
    for step in range(4):
        with Dispatched() as seen:
            training_step(tuner.model, tuner, [(images, labels)], opt, step=step, n_micro=1, nonfinite=nonfinite)
        syncs.append(seen.ops["_local_scalar_dense"])
    assert syncs == [0] * 4


# DoRA is not here: PEFT's DoRA layer asks its weight's class for its module name (peft.utils.integrations.
# dequantize_module_weight, str.startswith), which dynamo cannot trace: 16 breaks in this model
COMPILES_WHOLE = [
    {"name": "lora", "r": 4},
    {"name": "adalora", "init_r": 4, "target_r": 2},
    {"name": "adaptive"},
    {"name": "qalora", "r": 4},
    {"name": "vpt"},
    {"name": "houlsby"},
    {"name": "ssf"},
    {"name": "bitfit"},
]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", COMPILES_WHOLE, ids=lambda m: m["name"])
def test_the_forward_and_backward_compile_into_one_graph(method, precision):
    """``torch._dynamo.explain`` of the loss, the tuner's regularization and the backward: one graph, no
    break (LoRA's fused q/k/v step included: an autograd.Function that dynamo traces forward and back),
    in fp32 and under bf16 autocast, after an eager step has filled the caches as ``train.compile``'s
    ``before_compile`` does (a cache key of data pointers broke the graph there, and under autocast the
    whole frame ran eagerly: compiled LoRA was slower than eager on an H100)."""
    tuner = tuned(method)
    model = tuner.model.train()
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4) % NUM_CLASSES

    def step(images, labels):
        with autocast(precision, torch.device("cpu")):
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels) + tuner.regularization()
        loss.backward()
        return loss

    step(images, labels)  # eager: every cache filled
    before_compile(model)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(step)(images, labels)
    torch._dynamo.reset()
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


def test_compiled_lora_computes_the_eager_outputs_and_gradients():
    """Under torch.compile (AOTAutograd, functionalized, as inductor receives it: ``aot_eager``) the fused
    q/k/v step traces forward and backward: its writes into the output go through views that compile can
    functionalize (a write through ``as_strided`` cannot be)."""
    tuner = tuned({"name": "lora", "r": 4})
    model = tuner.model.train()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # zero at the start, and so would every A's gradient be
                param.normal_(0, 0.2)
    images = torch.randn(4, 3, 32, 32)

    def outputs_and_grads():
        out = model(images).square().sum()
        out.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad(set_to_none=True)
        return [out.detach(), *grads]

    eager = outputs_and_grads()
    torch._dynamo.reset()
    model.compile(backend="aot_eager")
    compiled = outputs_and_grads()
    torch._dynamo.reset()
    assert len(compiled) == len(eager)
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want)
