"""AdaLoRA wired into the recipe, and peftlab's importance controllers (method ``adaptive``)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from testkit import TINY_MODEL, needs_fashion_mnist, train_with_hooks

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.tuners.base import TunerContext, apply_tuner

NUM_CLASSES = 5


def make(method, total_steps=20, model=TINY_MODEL, **options):
    cfg = load_config(overrides={"model": model, "method": {"name": method, **options}})
    torch.manual_seed(0)
    base = build_backbone(cfg.model, NUM_CLASSES)
    return apply_tuner(base, cfg.method, TunerContext(total_steps, torch.device("cpu"), cfg.quant))


def batch(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % NUM_CLASSES


def run(tuner, steps, lr=1e-2, each_step=None):
    """The recipe's order of hooks, on one fixed batch."""
    return train_with_hooks(tuner, steps, *batch(), lr=lr, each_step=each_step)


def assert_merge_equals_adapter(tuner):
    tuner.model.eval()
    x, _ = batch(4, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(tuner.merged_model().eval()(x), tuner.model(x), rtol=1e-5, atol=1e-5)


# --- AdaLoRA ----------------------------------------------------------------------------


def test_adalora_orthogonal_regulariser_is_peft_s_to_the_bit_with_its_factors_found_once():
    """PEFT's own sum (AdaLoraModel.forward: ||P P^T - I||_F over every lora_A, ||P^T P - I||_F over every
    lora_B, averaged, times orth_reg_weight), against the tuner's, which walks the parameters once."""
    tuner = make("adalora", orth_reg_weight=0.3, init_r=4, target_r=2)
    with torch.no_grad():
        for name, param in tuner.model.named_parameters():
            if "lora_" in name:
                param.normal_()  # B starts at zero: every term would be the same

    def peft_sum():
        total, count = 0.0, 0
        for n, p in tuner.model.named_parameters():
            if ("lora_A" in n or "lora_B" in n) and "default" in n:
                cov = p @ p.T if "lora_A" in n else p.T @ p
                total = total + torch.norm(cov - torch.eye(*cov.size()), p="fro")
                count += 1
        return 0.3 * total / count

    assert torch.equal(tuner.regularization(), peft_sum())
    with torch.no_grad():
        for name, param in tuner.model.named_parameters():
            if "lora_A" in name:
                param.mul_(2)  # trained in place, as the optimizer does: the cached factors see it
    assert torch.equal(tuner.regularization(), peft_sum())


def test_adalora_orthogonal_regulariser_changes_the_loss_and_the_gradients():
    grads, losses = {}, {}
    for weight in (0.0, 0.5):
        tuner = make("adalora", orth_reg_weight=weight, init_r=4, target_r=2)
        x, y = batch()
        loss = F.cross_entropy(tuner.model(x), y) + tuner.regularization()
        loss.backward()
        losses[weight] = loss.item()
        grads[weight] = {
            n: p.grad.clone()
            for n, p in tuner.model.named_parameters()
            if ("lora_A" in n or "lora_B" in n) and p.grad is not None
        }
    assert losses[0.5] > losses[0.0]
    assert grads[0.0].keys() == grads[0.5].keys() and grads[0.0]
    for name in grads[0.0]:
        assert not torch.allclose(grads[0.0][name], grads[0.5][name]), name


@pytest.mark.parametrize(
    "targets,model",
    [("standard", TINY_MODEL), ([r"blocks\.\d+\.attn\.qkv"], TINY_MODEL), ("standard", "hf")],
    ids=["timm-qv-slices", "timm-whole-qkv", "hf-vit"],
)
def test_adalora_reaches_its_target_budget_and_keeps_the_mask(targets, model, hf_dir):
    model = {"source": "hf", "path": str(hf_dir)} if model == "hf" else model
    tuner = make(
        "adalora", total_steps=20, model=model, target_modules=targets, init_r=6, target_r=3, tinit=2, tfinal=5
    )
    modules = len(tuner.targets)
    pruned_after_final = []

    def check(step, tuner, optimizer):
        if step > 15:  # after the final allocation (20 - 5): masked entries must stay at zero
            pruned_after_final.append(
                sum(int((p == 0).sum()) for n, p in tuner.model.named_parameters() if "lora_E" in n)
            )

    run(tuner, 20, each_step=check)
    final = tuner.ranks()
    assert final["sum"] == 3 * modules == final["budget"]
    assert len(set(final["final"].values())) >= 1 and max(final["final"].values()) <= 6
    assert pruned_after_final and all(n == 3 * modules for n in pruned_after_final)
    budgets = [r["budget"] for r in tuner.importance_records() if r["kind"] == "budget"]
    assert budgets[0] <= 6 * modules and budgets[-1] == 3 * modules and budgets == sorted(budgets, reverse=True)
    assert_merge_equals_adapter(tuner)
    # the saved adapter is resized to the kept ranks, and loads back
    state = tuner.adapter_state_dict()
    e_sizes = {k: v.shape[0] for k, v in state.items() if "lora_E" in k}
    assert sum(e_sizes.values()) == 3 * modules
    counts = tuner.parameter_counts()
    assert counts["trainable"] == sum(v.numel() for v in state.values())
    fresh = make(
        "adalora", total_steps=20, model=model, target_modules=targets, init_r=6, target_r=3, tinit=2, tfinal=5
    )
    fresh.load_adapter_state_dict(state)
    fresh.model.eval()
    tuner.model.eval()
    x, _ = batch(4, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(fresh.model(x), tuner.model(x))


def test_adalora_refuses_a_quantized_base_and_phases_that_leave_no_step_in_any_run():
    from peftlab.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="quant"):
        load_config(overrides={"model": TINY_MODEL, "method": {"name": "adalora"}, "quant": {"mode": "nf4"}})
    with pytest.raises(ConfigError, match=r"method.tfinal=0.5 is invalid: expected a fraction below 1 - method.tinit"):
        load_config(overrides={"method": {"name": "adalora", "tinit": 0.5, "tfinal": 0.5}})
    load_config(overrides={"method": {"name": "adalora", "tinit": 0.5, "tfinal": 0.4}})  # steps: fitted, never refused


@pytest.mark.parametrize(
    "options, steps, phases, fitted",
    [
        ({}, 10, (1, 2), None),  # the defaults' fractions of a run that holds them
        ({}, 1, (0, 0), "it scores them by step 1's own gradients"),
        ({}, 2, (0, 0), None),
        ({"tinit": 5, "tfinal": 5}, 11, (5, 5), None),
        ({"tinit": 5, "tfinal": 5}, 10, (4, 4), "fitted in proportion to 4 + 4 (a run of 11 steps or more keeps"),
        ({"tinit": 100, "tfinal": 200}, 50, (16, 32), "= 100 + 200 steps leave no step to prune ranks in a run of 50"),
        ({"tinit": 1, "tfinal": 1}, 1, (0, 0), "to 0 + 0 (a run of 3 steps or more keeps them); the final allocation"),
        ({"tinit": 0.45, "tfinal": 0.45}, 2, (0, 0), "1 + 1 steps leave no step to prune ranks in a run of 2 "),
    ],
)
def test_adalora_fits_its_schedule_to_a_run_too_short_for_it_and_says_how(options, steps, phases, fitted):
    """It was a KeyError from PEFT's rank allocator at one step (issue 65), and a refusal where the integer
    phases outgrew the run. PEFT accepts every fitted schedule (tinit < total_step - tfinal)."""
    from peft import AdaLoraConfig

    from peftlab.tuners.adalora.model import schedule

    cfg = load_config(overrides={"method": {"name": "adalora", **options}}).method
    plan = schedule(cfg, steps)
    assert (plan.tinit, plan.tfinal, plan.total_step) == (*phases, steps)
    assert (plan.fitted is None) if fitted is None else (fitted in plan.fitted), plan.fitted
    AdaLoraConfig(tinit=plan.tinit, tfinal=plan.tfinal, total_step=steps, target_modules=["x"])
    for total in range(1, 40):  # every length: a step for the final allocation, after the warm-up
        plan = schedule(cfg, total)
        assert 0 <= plan.tinit < plan.final_allocation <= total


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_adalora_at_a_step_or_two_prunes_to_its_target_budget(steps):
    tuner = make("adalora", total_steps=steps, init_r=6, target_r=3)
    run(tuner, steps)
    ranks = tuner.ranks()
    assert ranks["sum"] == ranks["budget"] == 3 * len(tuner.targets)
    allocation = ranks["schedule"]["final_allocation"]  # steps - round(0.2 steps): tfinal's default fraction
    assert allocation == {1: 1, 2: 2, 3: 2}[steps]
    final = [r for r in tuner.importance_records() if r["kind"] == "rank" and r["step"] == allocation]
    assert len(final) == len(tuner.targets) and all(r["importance"] > 0 for r in final)
    assert bool(tuner.warnings()) == (steps == 1)


# --- the importance controllers ----------------------------------------------------------------


@pytest.mark.parametrize("importance", ["magnitude", "grad_norm", "fisher", "sensitivity"])
@pytest.mark.parametrize("allocation", ["proportional", "threshold", "top_k"])
def test_controller_keeps_the_budget_and_the_bounds(importance, allocation):
    tuner = make(
        "adaptive",
        total_steps=12,
        r=4,
        max_rank=8,
        min_rank=2,
        importance=importance,
        allocation=allocation,
        warmup=2,
        interval=2,
        final_step=10,
        target_modules="all-linear",
    )
    budget = 4 * len(tuner.targets)
    sums = []

    def check(step, tuner, optimizer):
        ranks = tuner.current_ranks()
        assert all(2 <= r <= 8 for r in ranks.values())
        if step >= 2:
            sums.append(sum(ranks.values()))
        for module, mask in tuner.masks.items():  # masked ranks are exactly zero, moments too
            a, b = tuner.factors(module)
            assert not a[~mask].any() and not b[:, ~mask].any()
            for moment in ("exp_avg", "exp_avg_sq"):
                if a in optimizer.state:
                    assert not optimizer.state[a][moment][~mask].any()

    run(tuner, 12, each_step=check)
    assert sums and max(sums) <= budget
    assert tuner.ranks()["sum"] <= budget
    steps = sorted({r["step"] for r in tuner.importance_records()})
    assert steps == [2, 4, 6, 8, 10]  # warm-up, interval and the final step
    assert_merge_equals_adapter(tuner)


def test_equal_importance_gives_uniform_ranks_and_an_important_module_gains_rank(monkeypatch):
    tuner = make("adaptive", total_steps=10, r=4, max_rank=8, warmup=2, interval=2, final_step=8)
    modules = tuner.targets
    monkeypatch.setattr(tuner, "importance", lambda: {m: 1.0 for m in modules})
    run(tuner, 4)
    assert set(tuner.current_ranks().values()) == {4}
    favourite = modules[1]
    monkeypatch.setattr(tuner, "importance", lambda: {m: 10.0 if m == favourite else 1.0 for m in modules})
    for step in (4, 5):  # the next allocation (step 6)
        tuner.after_step(step)
    ranks = tuner.current_ranks()
    assert ranks[favourite] > 4 and all(ranks[m] < 4 for m in modules if m != favourite)
    assert sum(ranks.values()) == 4 * len(modules)


def test_a_revived_rank_starts_from_zero_update_and_fresh_moments(monkeypatch):
    tuner = make("adaptive", total_steps=10, r=4, max_rank=8, warmup=2, interval=2, final_step=8)
    modules = tuner.targets
    weights = {m: 1.0 for m in modules}
    weights[modules[0]] = 0.01
    monkeypatch.setattr(tuner, "importance", lambda: dict(weights))
    optimizer = run(tuner, 2)  # step 2: modules[0] drops to min_rank
    assert tuner.current_ranks()[modules[0]] == 1
    weights[modules[0]] = 1.0
    a, b = tuner.factors(modules[0])
    with torch.no_grad():
        before = b @ a
        tuner.after_step(3)  # step 4: uniform again, ranks come back
        after = b @ a
    assert tuner.current_ranks()[modules[0]] == 4
    torch.testing.assert_close(before, after)  # B's revived columns are zero: the update does not jump
    assert a[tuner.masks[modules[0]]].abs().sum(dim=1).min() > 0  # fresh rows of A
    assert not optimizer.state[a]["exp_avg"][~tuner.masks[modules[0]]].any()


def test_resized_adapter_loads_into_plain_peft_lora():
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    from peftlab.tuners.modules import replace_modules, split_qkv

    tuner = make(
        "adaptive",
        total_steps=10,
        r=4,
        max_rank=8,
        importance="fisher",
        warmup=2,
        interval=2,
        final_step=6,
        lora_alpha=8.0,
    )
    run(tuner, 10)
    final = tuner.ranks()
    assert len(set(final["final"].values())) > 1  # the controller moved ranks
    state = tuner.adapter_state_dict()
    assert tuner.parameter_counts()["trainable"] == sum(v.numel() for v in state.values())

    torch.manual_seed(0)
    plain = build_backbone(load_config(overrides={"model": TINY_MODEL}).model, NUM_CLASSES)
    replace_modules(plain, [f"blocks.{i}.attn.qkv" for i in range(2)], split_qkv)
    plain = get_peft_model(
        plain,
        LoraConfig(
            r=4,
            lora_alpha=8.0,
            target_modules=list(final["final"]),
            modules_to_save=["head"],
            rank_pattern=final["peft_rank_pattern"],
            alpha_pattern=final["peft_alpha_pattern"],
        ),
    )
    result = set_peft_model_state_dict(plain, state)
    assert not result.unexpected_keys
    plain.eval()
    tuner.model.eval()
    x, _ = batch(4, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), tuner.model(x), rtol=1e-5, atol=1e-5)
    # and back into peftlab's own controller (export rebuilds the model this way)
    again = make("adaptive", total_steps=None, r=4, max_rank=8, importance="fisher", lora_alpha=8.0)
    again.load_adapter_state_dict(copy.deepcopy(state))
    again.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), tuner.model(x))
    assert again.current_ranks() == final["final"]


@pytest.mark.e2e
@needs_fashion_mnist()
@pytest.mark.parametrize(
    "method,options",
    [("adalora", {"init_r": 6, "target_r": 3}), ("adaptive", {"r": 4, "importance": "magnitude", "interval": 1})],
)
def test_trained_run_exports_a_merged_timm_model_with_its_accuracy(tmp_path, method, options):
    import timm
    from safetensors.torch import load_file

    from peftlab.data import build_data
    from peftlab.models.backbones import input_spec_for
    from peftlab.training.evaluate import evaluate
    from peftlab.training.export import export_merged
    from peftlab.training.run import train

    cfg = load_config(
        overrides={
            "model": TINY_MODEL,
            "method": {"name": method, **options},
            "data": {"name": "fashion_mnist", "train_subset": 128, "val_subset": 32, "test_subset": 64},
            "train": {"epochs": 2, "batch_size": 16, "log_every": 2, "merged_test": "always"},
        }
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    assert result["ranks"]["sum"] <= result["ranks"]["budget"] and result["merge"]["ok"]
    assert (tmp_path / "run" / "importance.jsonl").stat().st_size > 0
    export_merged(tmp_path / "run", tmp_path / "merged.safetensors")
    model = timm.create_model(
        TINY_MODEL["name"], num_classes=10, **{k: v for k, v in TINY_MODEL.items() if k != "name"}
    )
    model.load_state_dict(load_file(str(tmp_path / "merged.safetensors")), strict=True)
    spec = input_spec_for(cfg.model)
    data = build_data(cfg.data, img_size=spec.img_size, in_chans=spec.in_chans, mean=spec.mean, std=spec.std)
    top1 = evaluate(model.eval(), data.test, 64, torch.device("cpu"), "fp32", "test")["top1"]
    assert top1 == result["metrics"]["merged_test_top1"]


def test_adalora_that_would_prune_nothing_is_a_one_line_config_error():
    """init_r == target_r crashed in PEFT's budget (kthvalue k out of range) at the first reallocation."""
    from peftlab.config.schema import load_config
    from peftlab.utils.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"method.target_r=8 is invalid.*\[1, method.init_r - 1 = 7\].*method.name=lora"
    ):
        load_config(overrides={"method": {"name": "adalora", "init_r": 8, "target_r": 8}})
