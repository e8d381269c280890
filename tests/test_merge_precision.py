"""The merge check runs at full fp32 precision whatever train.tf32 says (peftlab.training.runtime.full_fp32).

On an H100, TF32 (train.tf32's default) moved a ViT's logits by 1.3e-4 against full fp32, and every GPU
run failed its merge check (tolerance 1e-4): the check measured TF32, not the merge. A CPU runs no TF32,
but torch keeps the same flags on every machine, so these tests read them where the GPU would use them.
"""

import pytest
import torch
from testkit import TINY_MODEL, needs_fashion_mnist

from peftlab.config.schema import load_config
from peftlab.training import evaluate
from peftlab.training.runtime import FP32_SETTINGS, fp32_setting, full_fp32, legacy_setting, tf32_allowed
from peftlab.tuners.base import TunerContext
from peftlab.tuners.build import build_tuned


def settings() -> dict:
    """Every precision setting torch keeps, as its two APIs read them (None where the older refuses)."""
    return {
        "legacy matmul": legacy_setting(torch.get_float32_matmul_precision),
        "legacy cublas": legacy_setting(lambda: torch.backends.cuda.matmul.allow_tf32),
        "legacy cudnn": legacy_setting(lambda: torch.backends.cudnn.allow_tf32),
        **{name: fp32_setting(name).fp32_precision for name in FP32_SETTINGS},
    }


@pytest.fixture
def run_with_tf32():
    """What a run with train.tf32 true (runtime.set_tf32) and a looser matmul precision leaves set;
    torch's settings as they were afterwards."""
    saved = settings()
    torch.set_float32_matmul_precision("medium")  # TF32 on cuBLAS, bf16 matmuls on oneDNN (CPUs)
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.set_float32_matmul_precision(saved["legacy matmul"])
    torch.backends.cudnn.allow_tf32 = saved["legacy cudnn"]
    for name in FP32_SETTINGS:
        fp32_setting(name).fp32_precision = saved[name]
    assert settings() == saved


def inside_state() -> dict:
    return {
        "tf32": tf32_allowed(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "fp32_precision": {name: fp32_setting(name).fp32_precision for name in ("cuda.matmul", "cudnn.conv")},
        "onednn_matmul": torch.backends.mkldnn.matmul.fp32_precision,
    }


FULL_FP32 = {
    "tf32": False,
    "matmul_precision": "highest",
    "fp32_precision": {"cuda.matmul": "ieee", "cudnn.conv": "ieee"},
    "onednn_matmul": "ieee",
}


def tiny_lora():
    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": "lora", "r": 2}})
    tuner, _ = build_tuned(cfg.model, cfg.method, 3, TunerContext.for_checks(cfg), seed=0)
    return tuner


def test_the_merge_check_computes_with_tf32_off_though_the_run_set_it_on(run_with_tf32, monkeypatch):
    """The merges and every forward of the check (adapter and merged) see TF32 off and the precision
    "highest"; result.json records it; the run's settings are back afterwards."""
    tuner = tiny_lora()
    seen = []
    spy = lambda module, inputs: seen.append((type(module).__name__, inside_state()))
    tuner.model.register_forward_pre_hook(spy)
    merged_model = tuner.merged_model

    def merge_spied(*args, **kwargs):
        seen.append(("merge", inside_state()))
        merged = merged_model(*args, **kwargs)
        merged.register_forward_pre_hook(spy)
        return merged

    monkeypatch.setattr(tuner, "merged_model", merge_spied)
    assert tf32_allowed() and torch.get_float32_matmul_precision() == "medium"
    before = settings()
    dataset = list(zip(torch.randn(4, 3, 32, 32), torch.arange(4) % 3))
    check = evaluate.check_merge(tuner, dataset, torch.device("cpu"), repeats=1)
    assert check["ok"] and check["tf32"] is False and check["matmul_precision"] == "highest"
    assert [name for name, _ in seen][:1] == ["merge"] and len(seen) >= 5  # merge, reference, diff, timings
    assert all(state == FULL_FP32 for _, state in seen), seen
    assert settings() == before


def test_the_run_settings_are_restored_when_the_check_raises(run_with_tf32, monkeypatch):
    before = settings()

    def fails(*args):
        assert inside_state() == FULL_FP32
        raise RuntimeError("out of memory")

    monkeypatch.setattr(evaluate, "compare_merged", fails)
    with pytest.raises(RuntimeError, match="out of memory"):
        evaluate.check_merge(None, [], torch.device("cpu"))
    assert settings() == before
    assert tf32_allowed() and torch.get_float32_matmul_precision() == "medium"


@pytest.mark.parametrize(
    "set_up",
    [
        lambda: None,
        lambda: torch.set_float32_matmul_precision("high"),
        lambda: setattr(torch.backends.cudnn, "allow_tf32", False),
        lambda: setattr(torch.backends.cuda.matmul, "fp32_precision", "tf32"),  # the newer API only
        lambda: setattr(torch.backends, "fp32_precision", "tf32"),  # the generic level, which "none" inherits
        lambda: setattr(torch.backends.cudnn.conv, "fp32_precision", "ieee"),
    ],
)
def test_full_fp32_restores_any_setting_and_forces_full_precision_in_each(run_with_tf32, set_up):
    set_up()
    before = settings()
    with full_fp32():
        assert inside_state() == FULL_FP32
    assert settings() == before


@needs_fashion_mnist()
@pytest.mark.parametrize(
    "test, merged_test",
    [(True, "always"), (True, "auto"), (False, "always")],
    ids=["final-run", "exact-merge", "trial"],
)
def test_a_run_merges_once_at_full_fp32_and_checks_the_model_it_tested_merged(tmp_path, monkeypatch, test, merged_test):
    """A run's end merges its adapter once, with TF32 off, and the merge check compares that very model (the one
    the merged test pass scored) with the adapter; a tuning trial merges once too, and checks it on val. An fp32
    LoRA's merge is exact: under train.merged_test auto it is checked, and not tested merged."""
    from peftlab.training import outcome
    from peftlab.training.run import train
    from peftlab.tuners.peft_injection import PeftTuner

    merges, checked = [], []
    merged_model, check_merge = PeftTuner.merged_model, outcome.check_merge

    def merge_counted(self, quantized=False):
        merges.append(inside_state())
        return merged_model(self, quantized)

    def check_seen(*args, deployable=None, **kwargs):
        checked.append(deployable)
        return check_merge(*args, deployable=deployable, **kwargs)

    monkeypatch.setattr(PeftTuner, "merged_model", merge_counted)
    monkeypatch.setattr(outcome, "check_merge", check_seen)
    cfg = load_config(
        overrides={
            "model": TINY_MODEL,
            "method": {"name": "lora", "r": 2},
            "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32},
            "train": {"max_steps": 2, "batch_size": 16, "test": test, "merged_test": merged_test},
        }
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    assert merges == [FULL_FP32] and len(checked) == 1 and checked[0] is not None
    assert result["merge"]["ok"]
    assert (result["metrics"]["merged_test_top1"] is not None) is (test and merged_test == "always")


@pytest.mark.parametrize(
    "option, quantized, exact, dtype, check, tested",
    [
        ("auto", False, False, torch.float32, {"ok": True}, False),  # fp32 LoRA: exact, checked
        ("auto", True, True, torch.float32, {"ok": True, "requantized_ok": True}, False),  # QA-LoRA's zeros
        ("auto", True, False, torch.float32, {"ok": True}, True),  # QLoRA: re-quantized
        ("auto", False, False, torch.bfloat16, {"ok": True}, True),  # the merge rounds to bf16
        ("auto", False, False, torch.float32, {"ok": False}, True),  # the check found it off
        ("auto", True, True, torch.float32, {"ok": True, "requantized_ok": False}, True),
        ("always", False, False, torch.float32, {"ok": True}, True),
    ],
    ids=["fp32", "qalora", "qlora", "bf16", "check-off", "qalora-off", "always"],
)
def test_the_merged_model_is_tested_where_its_merge_rounds_or_its_check_fails(
    option, quantized, exact, dtype, check, tested
):
    from types import SimpleNamespace

    from peftlab.training.outcome import tests_merged

    tuner = SimpleNamespace(quantized=quantized, exact_quantized_merge=exact)
    deployable = torch.nn.Linear(4, 2).to(dtype)
    assert tests_merged(option, tuner, deployable, check) is tested
