"""Gradient checkpointing and bf16 for text runs (issue 89, item 6): checkpointing a decoder's blocks recomputes
them in backward and changes no gradient; a LoRA run of a GPT-2 classifier and of a causal LM trains with both on
the CPU (bf16 autocast, which torch supports there), and its merge check still runs in full fp32; a model that
cannot recompute its blocks is one line naming train.grad_checkpointing."""

from __future__ import annotations

import pytest
import torch
from testkit import hf_text_dir, hf_text_model, write_text_task

from peftlab.config.schema import load_config
from peftlab.models.backbones import HFTextLogits, enable_grad_checkpointing
from peftlab.training.evaluate import MERGE_TOLERANCE
from peftlab.training.run import train
from peftlab.utils.errors import ConfigError


def test_checkpointed_blocks_are_recomputed_and_give_the_same_gradients():
    torch.manual_seed(0)
    ids = torch.randint(4, 64, (3, 12))
    grads, calls = [], []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = HFTextLogits(hf_text_model("gpt2", num_classes=2)).train()
        for module in model.modules():  # dropout off: the two passes must see the same function
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        if checkpointed:
            enable_grad_checkpointing(model)
        count = []
        model.model.transformer.h[0].attn.register_forward_hook(lambda *_, count=count: count.append(1))
        model(ids).logsumexp(dim=1).sum().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        calls.append(len(count))
    assert calls == [1, 2]  # the checkpointed block's attention ran again in backward
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_a_model_that_cannot_checkpoint_is_refused_in_one_line(monkeypatch):
    model = HFTextLogits(hf_text_model("gpt2", num_classes=2))
    monkeypatch.setattr(type(model.model), "supports_gradient_checkpointing", False)
    with pytest.raises(ConfigError, match=r"^train.grad_checkpointing=true: transformers' GPT2ForSequence") as err:
        enable_grad_checkpointing(model)
    assert "\n" not in str(err.value)


@pytest.mark.e2e
@pytest.mark.parametrize("causal", [False, True], ids=["classifier", "causal-lm"])
def test_a_text_run_trains_in_bf16_with_checkpointing_and_checks_its_merge_in_fp32(tmp_path, causal):
    task = write_text_task(tmp_path / "task", train=24, test=12, num_classes=2)
    model = hf_text_dir(tmp_path / "gpt2", "gpt2", num_classes=2, causal=causal)
    cfg = load_config(
        overrides={
            "model": {"source": "hf-text", "path": str(model), "task": "causal-lm" if causal else "classification"},
            "method": {"name": "lora", "r": 4},
            "data": {"name": "text", "root": str(task), "val_fraction": 0.25, "max_length": 16},
            "train": {"max_steps": 3, "batch_size": 6, "lr": 3e-3, "precision": "bf16", "grad_checkpointing": True},
        }
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    assert result["provenance"]["dtype"] == "bf16" and result["config"]["train"]["grad_checkpointing"] is True
    merge = result["merge"]
    assert merge["ok"] and merge["tf32"] is False and merge["matmul_precision"] == "highest"
    # bf16 keeps 8 bits of mantissa: a check run under the training's autocast would differ by ~1e-2 of the largest
    # logit; in fp32 the merge moves it by rounding alone
    largest = merge["tolerance"] / MERGE_TOLERANCE
    assert merge["max_abs_diff"] <= 1e-5 * largest
