"""Monitors on the 2-block ViT: adapter rank use against a direct SVD, gradient flow before
clipping, the flags, the frozen-base hash, convergence and health on known curves."""

import math

import pytest
import torch
import torch.nn.functional as F
from testkit import TINY_MODEL

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.training.monitors.adapters import adapter_statistics, lora_factors, lora_layers, rank_use
from peftlab.training.monitors.convergence import convergence
from peftlab.training.monitors.cost import model_monitor_cost
from peftlab.training.monitors.frozen import frozen_hash
from peftlab.training.monitors.gradients import GradientFlow, group_name
from peftlab.training.monitors.health import health
from peftlab.training.monitors.run import Monitors, summarize
from peftlab.tuners.base import TunerContext, apply_tuner


def make(method="lora", quant=None, **options):
    cfg = load_config(
        overrides={"model": TINY_MODEL, "method": {"name": method, **options}, **({"quant": quant} if quant else {})}
    )
    torch.manual_seed(0)
    return apply_tuner(build_backbone(cfg.model, 5), cfg.method, TunerContext.for_checks(cfg))


def batch(n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 5, (n,), generator=g)


def perturb_lora_b(model, std=0.2):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, std)


def monitors_for(tuner, **kwargs):
    options = {"log_every": 10, "eval_every": None, "total_steps": 100, "clip_grad": None, **kwargs}
    return Monitors(tuner.model, tuner.trainable_parameters(), **options)


def test_group_names_drop_peft_wrappers_and_keep_lora_a_and_b_apart():
    assert group_name("base_model.model.blocks.3.attn.qkv.q.lora_A.default.weight") == "blocks.3.attn.qkv.q.lora_A"
    assert group_name("base_model.model.blocks.3.attn.qkv.q.lora_B.default.weight") == "blocks.3.attn.qkv.q.lora_B"
    assert group_name("base_model.model.head.modules_to_save.default.bias") == "head"
    assert group_name("blocks.0.mlp.fc1.weight") == "blocks.0.mlp.fc1"
    assert group_name("cls_token") == "cls_token"


@pytest.mark.parametrize("targets, r", [("standard", 4), ("all-linear", 3)])
def test_rank_use_matches_a_direct_svd_of_the_scaled_update(targets, r):
    tuner = make(r=r, lora_alpha=2 * r + 1, target_modules=targets)
    perturb_lora_b(tuner.model)
    layers = lora_layers(tuner.model)
    names = [name for name, _, _ in layers]
    if targets == "standard":  # timm's split q/v slices, k untouched
        assert names == ["blocks.0.attn.qkv.q", "blocks.0.attn.qkv.v", "blocks.1.attn.qkv.q", "blocks.1.attn.qkv.v"]
    else:
        assert len(names) == 2 * 6
    stats = adapter_statistics(lora_factors(layers))
    for name, module, adapter in layers:
        delta = module.scaling[adapter] * module.lora_B[adapter].weight @ module.lora_A[adapter].weight
        expected = torch.linalg.svdvals(delta.detach().double())
        assert torch.allclose(
            torch.tensor(stats[name]["singular_values"], dtype=torch.float64), expected[:r], rtol=1e-4, atol=1e-6
        ), name
        assert expected[r:].abs().max() < 1e-5  # the update has rank <= r
        assert stats[name]["norm_update"] == pytest.approx(float(delta.detach().norm()), rel=1e-4)
        assert stats[name]["norm_A"] == pytest.approx(float(module.lora_A[adapter].weight.detach().norm()), rel=1e-5)
        assert 1.0 <= stats[name]["effective_rank"] <= r and 1 <= stats[name]["rank90"] <= r
        assert 1.0 <= stats[name]["stable_rank"] <= r


def test_rank_use_counts_the_ranks_a_controller_left_and_finds_qalora_layers():
    """Rank use divides by the ranks in use: a controller's pruned rows of A are not counted, and
    QA-LoRA's own layers (a plain lora_A over the group-pooled input) are monitored too."""
    from peftlab.training.monitors.adapters import rank_ratio

    tuner = make("adaptive", r=4, max_rank=8)
    perturb_lora_b(tuner.model)
    layers = lora_layers(tuner.model)
    first = layers[0][1]
    with torch.no_grad():  # prune 5 of the 8 built ranks of the first module, as the controller does
        first.lora_A["default"].weight[3:] = 0
        first.lora_B["default"].weight[:, 3:] = 0
    stats = adapter_statistics(lora_factors(layers))
    assert stats[layers[0][0]]["r"] == 8 and stats[layers[0][0]]["r_allocated"] == 3
    assert all(s["r_allocated"] == 8 for name, s in stats.items() if name != layers[0][0])
    assert rank_ratio(stats[layers[0][0]]) == pytest.approx(stats[layers[0][0]]["effective_rank"] / 3)

    qalora = make("qalora", r=4, group_size=8)
    perturb_lora_b(qalora.model)
    layers = lora_layers(qalora.model)
    assert [name for name, _, _ in layers] == [
        "blocks.0.attn.qkv.q",
        "blocks.0.attn.qkv.v",
        "blocks.1.attn.qkv.q",
        "blocks.1.attn.qkv.v",
    ]
    stats = adapter_statistics(lora_factors(layers))
    for name, module, _ in layers:
        delta = module.scaling * module.lora_B.weight @ module.lora_A.weight  # out x (in / group)
        expected = torch.linalg.svdvals(delta.detach().double())[:4]
        assert torch.allclose(
            torch.tensor(stats[name]["singular_values"], dtype=torch.float64), expected, rtol=1e-4, atol=1e-6
        ), name
        assert stats[name]["r"] == stats[name]["r_allocated"] == 4


def test_rank_use_of_known_spectra():
    assert rank_use([1.0, 1.0, 1.0, 1.0]) == pytest.approx({"effective_rank": 4.0, "rank90": 4, "stable_rank": 4.0})
    assert rank_use([3.0, 0.0, 0.0]) == pytest.approx({"effective_rank": 1.0, "rank90": 1, "stable_rank": 1.0})
    assert rank_use([0.0, 0.0]) == {"effective_rank": 0.0, "rank90": 0, "stable_rank": 0.0}
    # energies 9, 1: the first holds 90% exactly; p = (0.75, 0.25)
    use = rank_use([3.0, 1.0])
    assert use["rank90"] == 1 and use["stable_rank"] == pytest.approx(10 / 9)
    assert use["effective_rank"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


def test_at_init_the_update_is_zero_and_lora_a_gets_no_gradient_without_a_flag():
    tuner = make(r=4)
    monitor = monitors_for(tuner)
    images, labels = batch()
    F.cross_entropy(tuner.model(images), labels).backward()
    record = monitor.observe(1, 1.0)
    assert all(s["norm_update"] == 0.0 and s["effective_rank"] == 0.0 for s in record["adapters"].values())
    a_groups = [g for g in record["grad"] if g.endswith("lora_A")]
    assert a_groups and all(record["grad"][g] == 0.0 for g in a_groups)  # dL/dA = 0 while B = 0
    assert all(record["grad"][g[:-1] + "B"] > 0 for g in a_groups)
    assert record["flags"] == []
    assert record["frozen_base"] == monitor.frozen_start["sha256"]


def test_gradient_norms_are_taken_before_clipping():
    tuner = make(r=4)
    perturb_lora_b(tuner.model)
    params = tuner.trainable_parameters()
    images, labels = batch()
    F.cross_entropy(tuner.model(images), labels).backward()
    raw = {name: float(p.grad.norm()) for name, p in params.items()}
    total = float(torch.nn.utils.clip_grad_norm_(list(params.values()), 1e-3))
    assert total > 1e-2  # it did clip
    record = monitors_for(tuner, clip_grad=1e-3).observe(1, total)
    for name, norm in raw.items():
        assert record["grad"][group_name(name)] == pytest.approx(norm, rel=1e-3) or "head" in name
    head = math.sqrt(sum(n * n for name, n in raw.items() if "head" in name))
    assert record["grad"]["head"] == pytest.approx(head, rel=1e-3)


def test_exploding_and_vanishing_flags_with_their_steps():
    flow = GradientFlow(factor=10.0, ratio=1e-8, min_history=5)
    steady = {"blocks.0.mlp.fc1": {"grad": 1.0, "weight": 10.0}}
    for step in range(1, 6):
        assert flow.update(step, steady) == []
    flags = flow.update(6, {"blocks.0.mlp.fc1": {"grad": 11.0, "weight": 10.0}})
    assert [(f["flag"], f["step"], f["median"]) for f in flags] == [("exploding", 6, 1.0)]
    flags = flow.update(7, {"blocks.0.mlp.fc1": {"grad": 0.0, "weight": 10.0}})
    assert [(f["flag"], f["step"]) for f in flags] == [("vanishing", 7)]
    flags = flow.update(8, {"blocks.0.mlp.fc1": {"grad": 1e-9, "weight": 10.0}})
    assert [f["flag"] for f in flags] == ["vanishing"]
    # a fresh group is not judged before it has a history
    assert flow.update(9, {"head": {"grad": 1e6, "weight": 1.0}}) == []


def train_two_steps(tuner) -> None:
    opt = torch.optim.SGD(list(tuner.trainable_parameters().values()), lr=0.1)
    images, labels = batch()
    for _ in range(2):
        F.cross_entropy(tuner.model(images), labels).backward()
        opt.step()
        opt.zero_grad()


def test_the_frozen_hash_sees_a_changed_frozen_weight_and_ignores_training():
    tuner = make(r=4)
    before = frozen_hash(tuner.model)
    assert before["tensors"] > 0
    train_two_steps(tuner)
    assert frozen_hash(tuner.model)["sha256"] == before["sha256"]
    with torch.no_grad():
        tuner.model.get_submodule("base_model.model.blocks.0.attn.qkv.k").weight[0, 0] += 1e-3
    assert frozen_hash(tuner.model)["sha256"] != before["sha256"]


@pytest.mark.parametrize("mode,statistic", [("nf4", "absmax"), ("int8", "SCB")])
def test_the_frozen_hash_sees_a_quantized_base_s_statistics_and_ignores_training(mode, statistic):
    """A 4-bit layer's absmax (nested: its codes and their own absmax) and an int8 layer's row
    scales are part of the frozen base: a change to them is a changed base, training is not."""
    pytest.importorskip("bitsandbytes")
    tuner = make(r=4, quant={"mode": mode})
    before = frozen_hash(tuner.model)
    train_two_steps(tuner)
    tuner.model.eval()
    with torch.no_grad():
        tuner.model(batch()[0])
    assert frozen_hash(tuner.model)["sha256"] == before["sha256"]
    layer = tuner.model.get_submodule("base_model.model.blocks.0.attn.qkv.k")  # frozen, not adapted
    with torch.no_grad():
        if statistic == "absmax":
            state = layer.weight.quant_state
            (state.state2.absmax if state.nested else state.absmax)[0] *= 2
        else:
            layer.state.SCB[0] *= 2  # its weight's until the first forward
    assert frozen_hash(tuner.model)["sha256"] != before["sha256"]


def test_full_fine_tuning_has_no_adapters_and_nothing_frozen():
    tuner = make("full")
    monitor = monitors_for(tuner)
    images, labels = batch()
    F.cross_entropy(tuner.model(images), labels).backward()
    record = monitor.observe(10, 1.0)
    assert record["adapters"] == {} and "blocks.1.mlp.fc2" in record["grad"] and "head" in record["grad"]
    sections = summarize(monitor, [record])
    assert sections["frozen_base"]["tensors"] == 0 and sections["frozen_base"]["equal"]
    assert sections["monitors"]["adapters_mean"] is None and sections["health"]["verdict"] == "stable"


def test_due_at_log_eval_and_last_steps():
    monitor = monitors_for(make(r=2), log_every=10, eval_every=25, total_steps=63)
    assert [s for s in range(1, 64) if monitor.due(s)] == [10, 20, 25, 30, 40, 50, 60, 63]


def evals(*points):
    return [{"kind": "eval", "step": s, "val_top1": v} for s, v in points]


def test_convergence_of_a_rising_and_a_flat_curve():
    rising = convergence(evals((25, 0.50), (50, 0.60), (75, 0.66), (100, 0.70)))
    assert not rising["converged"] and rising["gain_last_window"] == pytest.approx(0.04)
    assert rising["steps_to"] == {"90": 75, "95": 100, "99": 100} and rising["plateau_step"] == 100
    flat = convergence(evals((25, 0.50), (50, 0.697), (75, 0.698), (100, 0.70)))
    assert flat["converged"] and flat["plateau_step"] == 50 and flat["steps_to"]["95"] == 50
    single = convergence(evals((100, 0.7)))
    assert rising["converged"] is False and flat["converged"] is True
    assert single["converged"] is None and "eval_every" in single["reason"]  # no curve, no verdict
    none = convergence([])  # no validation split (data.trainval)
    assert none["converged"] is None and none["reason"] == "no evaluation on the validation split"


def test_health_verdicts():
    def record(step, *flags):
        return {"kind": "monitors", "step": step, "flags": [{"flag": f, "group": "head"} for f in flags]}

    assert health([record(10), record(20)])["verdict"] == "stable"
    warned = health([record(10), record(20, "vanishing"), record(30, "vanishing")])
    assert warned["verdict"] == "warnings" and warned["first_step"]["vanishing"] == 20
    assert warned["counts"] == {"exploding": 0, "vanishing": 2}
    assert health([record(s, "exploding") for s in (10, 20, 30)])["verdict"] == "unstable"
    assert health([record(10)], diverged=True)["verdict"] == "unstable"


def test_monitor_cost_measures_a_ratio_above_one():
    tuner = make(r=4)
    params = tuner.trainable_parameters()
    optimizer = torch.optim.AdamW(list(params.values()), lr=1e-3)
    images, labels = batch()

    def loss():
        return F.cross_entropy(tuner.model(images), labels)

    def step():
        loss().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    cost = model_monitor_cost(tuner.model, params, step, loss, repeats=2, log_every=5)
    assert cost["ratio"]["n"] == 2 and cost["ratio"]["min"] > 1.0 and cost["observe_seconds"] > 0
    assert cost["log_every"] == 5 and all(p.grad is None for p in params.values())
