"""The offline text base (peftlab.training.bases.text_base): a byte-level BPE tokenizer trained on a corpus, a
small GPT-2 trained from its config.json as a causal LM by the one recipe, saved as an HF model directory that
transformers loads and a downstream classification run adapts."""

import json

import pytest
import torch

from peftlab.config.schema import load_config
from peftlab.training.bases.pretrain import pretrain
from peftlab.utils.errors import UserError

WORDS = "the a cat dog sat ran on under mat log fast slow red blue small big home park".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A few hundred short texts in the data.name text layout (train.jsonl, test.jsonl)."""
    import numpy as np

    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for split, n in (("train", 300), ("test", 40)):
        rows = [json.dumps({"text": " ".join(rng.choice(WORDS, rng.integers(3, 9)))}) for _ in range(n)]
        (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def architecture(tmp_path_factory):
    import transformers as tf

    path = tmp_path_factory.mktemp("arch")
    tf.GPT2Config(
        vocab_size=300, n_positions=32, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0, pad_token_id=0
    ).save_pretrained(path)
    return path


def base_config(architecture, corpus, **model):
    return load_config(
        overrides={
            "name": "tiny-lm",
            "model": {"source": "hf-text", "task": "causal-lm", "path": str(architecture), **model},
            "data": {"name": "text", "root": str(corpus), "max_length": 16, "val_fraction": 0.1},
            "method": {"name": "full"},
            "train": {"max_steps": 8, "batch_size": 16, "lr": 3e-3, "eval_every": 8},
        }
    )


def test_the_base_is_an_hf_directory_transformers_loads_and_a_second_call_reuses(architecture, corpus, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftlab.training.export import load_trained

    out = tmp_path / "base"
    manifest = pretrain(base_config(architecture, corpus), out, progress=False)
    assert not manifest["cached"] and manifest["test_perplexity"] > 1
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == 300 and tokenizer.eos_token_id == tokenizer.pad_token_id == 0
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval()
    assert type(model.transformer.h[0].attn.c_attn).__name__ == "Conv1D"  # transformers' own layout
    ids = torch.tensor([tokenizer("the cat sat on the mat")["input_ids"]])
    with torch.no_grad():
        expected = load_trained(out / "run").model.eval()(torch.stack([ids, torch.ones_like(ids)], dim=1))
        torch.testing.assert_close(model(input_ids=ids).logits[:, :-1].transpose(1, 2), expected)
    sha = manifest["sha256"]
    again = pretrain(base_config(architecture, corpus), out, progress=False)
    assert again["cached"] and again["sha256"] == sha


def test_the_tokenizer_is_trained_the_same_way_on_the_same_texts(corpus):
    from peftlab.training.bases.text_base import train_tokenizer

    texts = [json.loads(line)["text"] for line in (corpus / "train.jsonl").read_text().splitlines()]
    first, second = train_tokenizer(texts, 300, 32), train_tokenizer(texts, 300, 32)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


def test_a_downstream_classifier_trains_from_the_base(architecture, corpus, tmp_path):
    from testkit import write_text_task

    from peftlab.training.run import train

    out = tmp_path / "base"
    pretrain(base_config(architecture, corpus), out, progress=False)
    task = tmp_path / "task"
    task.mkdir()
    for split in ("train", "test"):  # the words of the corpus, the labels of the task
        rows = [
            json.loads(line) for line in (write_text_task(tmp_path / "t") / f"{split}.jsonl").read_text().splitlines()
        ]
        lines = [
            json.dumps({"text": WORDS[i % len(WORDS)] + " " + WORDS[r["label"]], "label": r["label"]})
            for i, r in enumerate(rows)
        ]
        (task / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    cfg = load_config(
        overrides={
            "model": {"source": "hf-text", "path": str(out)},
            "data": {"name": "text", "root": str(task), "max_length": 16},
            "method": {"name": "lora", "r": 2},
            "train": {"max_steps": 2, "batch_size": 8},
        }
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    assert result["provenance"]["base_sha256"] == json.loads((out / "manifest.json").read_text())["sha256"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"task": "classification"}, "a text base is pretrained as a causal-lm"),
    ],
)
def test_a_text_base_that_cannot_be_trained_is_one_line(architecture, corpus, tmp_path, change, message):
    with pytest.raises(UserError, match=message) as caught:
        pretrain(base_config(architecture, corpus, **change), tmp_path / "base", progress=False)
    assert "\n" not in str(caught.value)


def test_a_vocabulary_the_corpus_cannot_fill_is_one_line(corpus, tmp_path):
    import transformers as tf

    tf.GPT2Config(
        vocab_size=60000, n_positions=32, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
    ).save_pretrained(tmp_path / "arch")
    with pytest.raises(UserError, match="vocab_size=60000, but the corpus gives a tokenizer of") as caught:
        pretrain(base_config(tmp_path / "arch", corpus), tmp_path / "base", progress=False)
    assert "\n" not in str(caught.value)
