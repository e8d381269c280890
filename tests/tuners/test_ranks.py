"""Rank allocation as pure functions, and LoRA's static per-module rank strategies."""

import json
import random

import pytest
from testkit import TINY_MODEL

from peftlab.config.schema import load_config
from peftlab.tuners import ranks
from peftlab.tuners.params import check_against_model, count_parameters
from peftlab.utils.errors import ConfigError


def test_proportional_sums_to_the_budget_within_bounds():
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 30)
        lo = rng.randint(1, 4)
        hi = rng.randint(lo, 40)
        budget = rng.randint(n * lo, n * hi)
        weights = [rng.choice([0.0, rng.random(), rng.random() * 1e6]) for _ in range(n)]
        result = ranks.proportional(weights, budget, lo, hi)
        assert sum(result) == budget, (weights, budget, lo, hi, result)
        assert all(lo <= r <= hi for r in result)


def test_proportional_follows_the_weights():
    result = ranks.proportional([4.0, 3.0, 2.0, 1.0], 40, 1, 40)
    assert result == [16, 12, 8, 4]
    assert ranks.proportional([100.0, 1.0, 1.0], 12, 2, 6) == [6, 3, 3]  # capped, the rest shared


@pytest.mark.parametrize("allocation", ["proportional", "threshold", "top_k"])
def test_equal_importance_gives_uniform_ranks(allocation):
    importance = [0.37] * 8
    result = {
        "proportional": lambda: ranks.proportional(importance, 32, 1, 16),
        "threshold": lambda: ranks.threshold(importance, 32, 1, 16, 0.25),
        "top_k": lambda: ranks.top_k(importance, 32, 1, 16),
    }[allocation]()
    assert result == [4] * 8


def test_threshold_moves_rank_from_the_low_quantile_to_the_rest():
    result = ranks.threshold([1, 2, 3, 4, 5, 6, 7, 8], 32, 1, 16, 0.25)
    assert result[:2] == [1, 1] and result[2:] == [5] * 6 and sum(result) == 32


def test_top_k_gives_the_most_important_the_max_rank():
    result = ranks.top_k([5, 1, 8, 2, 7, 3, 4, 6], 64, 4, 16)
    assert result[2] == 16 and result[4] == 16  # the two most important
    assert sum(result) == 64 and min(result) == 4
    assert ranks.top_k([5, 1, 8, 2], 16, 2, 8, k=1) == [4, 2, 8, 2]  # k=1; the rest to the next in line


STANDARD = [f"blocks.{b}.attn.qkv.{p}" for b in range(4) for p in "qv"]
ALL = [f"blocks.{b}.{m}" for b in range(2) for m in ("attn.qkv.q", "attn.qkv.v", "attn.proj", "mlp.fc1", "mlp.fc2")]


def test_static_strategies_shape_the_ranks_at_the_same_budget():
    decay = ranks.static_ranks("linear_decay", STANDARD, 64, 1, 64)
    increase = ranks.static_ranks("linear_increase", STANDARD, 64, 1, 64)
    uniform = ranks.static_ranks("uniform", STANDARD, 64, 1, 64)
    assert set(uniform.values()) == {8}
    for allocation in (decay, increase, uniform):
        assert sum(allocation.values()) == 64
    by_block = lambda a: [a[f"blocks.{b}.attn.qkv.q"] for b in range(4)]
    assert by_block(decay) == sorted(by_block(decay), reverse=True) and by_block(decay)[0] > by_block(decay)[-1]
    assert by_block(increase) == sorted(by_block(increase)) and by_block(increase)[0] < by_block(increase)[-1]
    heavy = ranks.static_ranks("attention_heavy", ALL, 80, 1, 80)
    assert heavy["blocks.0.attn.qkv.q"] == 2 * heavy["blocks.0.mlp.fc1"]
    capped = ranks.static_ranks("linear_decay", STANDARD, 64, 4, 10)
    assert min(capped.values()) >= 4 and max(capped.values()) <= 10 and sum(capped.values()) == 64


def test_empirical_reads_the_last_allocation_of_an_importance_file(tmp_path):
    lines = [{"kind": "budget", "step": 5, "budget": 16, "rank_sum": 16}]
    lines += [{"kind": "rank", "step": 5, "module": m, "importance": 1.0, "rank": 2} for m in STANDARD]
    lines += [
        {"kind": "rank", "step": 9, "module": m, "importance": float(i + 1), "rank": 2} for i, m in enumerate(STANDARD)
    ]
    (tmp_path / "importance.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    importance = ranks.read_importance(tmp_path)
    assert importance[STANDARD[-1]] == 8.0
    allocation = ranks.static_ranks("empirical", STANDARD, 36, 1, 36, importance)
    assert allocation[STANDARD[-1]] == 8 and allocation[STANDARD[0]] == 1
    with pytest.raises(ConfigError, match="no importance for adapted module"):
        ranks.static_ranks("empirical", STANDARD + ["blocks.9.mlp.fc1"], 36, 1, 36, importance)
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ConfigError, match="line 1 is not JSON"):
        ranks.read_importance(tmp_path / "bad.jsonl")


def lora(**method):
    return load_config(
        overrides={"model": {**TINY_MODEL, "num_classes": 5}, "method": {"name": "lora", "r": 4, **method}}
    )


@pytest.mark.parametrize("strategy", ["uniform", "linear_decay", "linear_increase", "attention_heavy"])
def test_strategies_compare_at_an_equal_number_of_trainable_parameters(strategy):
    # q and v slices all have d inputs and d outputs: each rank costs 2d parameters
    reference = count_parameters(lora())["trainable"]
    cfg = lora(rank_strategy=strategy)
    assert count_parameters(cfg)["trainable"] == reference
    planned = check_against_model(cfg)
    assert sum(planned.values()) == 4 * len(planned)


def test_static_ranks_reach_peft_and_the_result(tmp_path):
    from peftlab.training.run import train

    cfg = load_config(
        overrides={
            "model": TINY_MODEL,
            "method": {"name": "lora", "r": 4, "rank_strategy": "linear_decay"},
            "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32},
            "train": {"epochs": 1, "batch_size": 32, "log_every": 1},
        }
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    final = result["ranks"]["final"]
    assert final == {
        "blocks.0.attn.qkv.q": 5,
        "blocks.0.attn.qkv.v": 5,
        "blocks.1.attn.qkv.q": 3,
        "blocks.1.attn.qkv.v": 3,
    }
    from safetensors.torch import load_file

    adapter = load_file(str(tmp_path / "run" / "adapter.safetensors"))
    assert adapter["base_model.model.blocks.0.attn.qkv.q.lora_A.weight"].shape[0] == 5
    assert adapter["base_model.model.blocks.1.attn.qkv.v.lora_B.weight"].shape[1] == 3


def test_rank_options_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="method.rank_pattern and method.rank_strategy"):
        lora(rank_strategy="linear_decay", rank_pattern={"blocks.0.attn.qkv.q": 2})
    with pytest.raises(ConfigError, match="method.importance_from"):
        lora(rank_strategy="empirical")
    with pytest.raises(ConfigError, match="below min_rank"):
        check_against_model(lora(rank_budget=3, min_rank=1))
    with pytest.raises(ConfigError, match="method.max_rank"):
        lora(min_rank=4, max_rank=2)


def test_swin_blocks_are_counted_across_stages_so_linear_decay_decays_over_depth():
    """Swin's layers.S.blocks.M: stage 1's first block follows stage 0's last, not block 1 of the model."""
    from peftlab.tuners.ranks import block_indices, static_weights

    names = [f"layers.{s}.blocks.{m}.attn.qkv.q" for s, depth in enumerate((2, 2, 3)) for m in range(depth)]
    assert block_indices(names) == list(range(7))
    assert static_weights("linear_decay", names) == [7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    assert block_indices(["blocks.3.attn.qkv.v", "model.vit.layers.5.attention.q_proj"]) == [3, 5]


def test_gpt2_blocks_and_roles_are_read_from_its_names():
    """GPT-2's transformer.h.N and Conv1D names: linear_decay decays over its blocks, attention_heavy counts
    the attention output (attn.c_proj) as attention and the MLP's c_proj as the MLP's."""
    from peftlab.tuners.ranks import block_indices, module_type, static_weights

    names = [
        f"model.transformer.h.{b}.{part}"
        for b in range(2)
        for part in ("attn.c_attn.q", "attn.c_attn.v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ]
    assert block_indices(names) == [0] * 5 + [1] * 5
    assert [module_type(n) for n in names[:5]] == ["q", "v", "proj", "fc1", "fc2"]
    assert module_type("transformer.h.0.attn.c_attn") == "qkv"
    assert static_weights("linear_decay", names) == [2.0] * 5 + [1.0] * 5
    assert static_weights("attention_heavy", names) == [2.0, 2.0, 2.0, 1.0, 1.0] * 2
