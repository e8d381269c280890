"""A DialoGPT-shaped model (the GPT-2 causal LM DialoGPT is, at a size this machine trains) loads by its hub name,
``microsoft/DialoGPT-medium``, from a local hub cache laid out as huggingface_hub writes it, with the hub offline
(issue 89, item 3's first step): transformers' own ``from_pretrained`` reads the same cache, and a peftlab LoRA
run of it as a causal LM records the repository and the commit it trained from."""

from __future__ import annotations

import hashlib

import pytest
import torch
from hubcache import COMMIT, lay_out_snapshot, use_cache
from testkit import hf_text_dir, write_instruction_task

from peftlab.config.schema import load_config
from peftlab.models.hf_config import is_decoder, read_hf_config
from peftlab.models.hub import hub_model_dir
from peftlab.training.run import train

DIALOGPT = "microsoft/DialoGPT-medium"


@pytest.fixture
def dialogpt(tmp_path, monkeypatch):
    """(cache, files) of a tiny GPT-2 causal LM with its tokenizer, cached as DialoGPT-medium's snapshot."""
    torch.manual_seed(0)
    folder = hf_text_dir(tmp_path / "dialogpt", "gpt2", causal=True)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    lay_out_snapshot(tmp_path / "hub", DIALOGPT, files)
    use_cache(monkeypatch, tmp_path / "hub")
    return tmp_path / "hub", files


@pytest.mark.e2e
def test_a_dialogpt_shaped_lm_loads_by_its_hub_name_offline(dialogpt, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(DIALOGPT)  # the hub is offline: the cache or nothing
    tokenizer = AutoTokenizer.from_pretrained(DIALOGPT)
    assert type(model).__name__ == "GPT2LMHeadModel" and tokenizer.eos_token is not None
    assert is_decoder(read_hf_config(hub_model_dir(DIALOGPT)))  # a decoder: pairs and turns joined by EOS

    task = write_instruction_task(tmp_path / "data", train=16, test=8)
    cfg = load_config(
        overrides={
            "model": {"source": "hf-text", "task": "causal-lm", "name": DIALOGPT, "pretrained": "hub"},
            "method": {"name": "lora", "r": 2},
            "data": {"name": "instructions", "root": str(task), "max_length": 64},
            "train": {"max_steps": 2, "batch_size": 8, "eval_batch_size": 16},
        }
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    provenance = result["provenance"]
    assert (provenance["base_hub_repo"], provenance["base_hub_revision"]) == (DIALOGPT, COMMIT)
    assert provenance["base_sha256"] == hashlib.sha256(dialogpt[1]["model.safetensors"]).hexdigest()
    assert result["metrics"]["test_perplexity"] > 1.0
