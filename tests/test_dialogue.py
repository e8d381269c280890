"""DialoGPT's turn format (``data.prompt_format: dialogue``: the turn, EOS, the reply, EOS, the loss on the reply
alone) and a finished causal LM's greedy generations (generations.jsonl): on a tiny random GPT-2 and the word-level
test tokenizer, made GPT-2's way (one token both begins and ends a text)."""

import json

import numpy as np
import pytest
import torch
from testkit import hf_text_dir, hf_text_model, text_tokenizer

from peftlab.config.schema import config_hash, load_config
from peftlab.data.text.files import TextSamples
from peftlab.data.text.tokens import ALPACA_PROMPT_NO_INPUT, IGNORED, tokenize_for_lm
from peftlab.models.backbones import HFCausalLM
from peftlab.training.evaluate import MAX_NEW_TOKENS, PROMPTS, generations
from peftlab.training.run import train
from peftlab.training.run_result import GENERATIONS
from peftlab.utils.errors import ConfigError

EXCHANGES = [("w4 w5 w6", "", "w7 w8"), ("w9", "w10 w11", "w12"), ("w13 w14", "", "w15 w16 w17"), ("w18", "", "w19")]


def gpt2_tokenizer():
    tokenizer = text_tokenizer()
    tokenizer.bos_token = tokenizer.eos_token  # GPT-2's <|endoftext|> is both: no token before the first turn
    return tokenizer


def data_cfg(*overrides, max_length=16):
    return load_config(
        None, ["data.name=instructions", "data.root=/none", f"data.max_length={max_length}", *overrides]
    ).data


def test_a_dialogue_example_is_turn_eos_reply_eos_with_the_loss_on_the_reply_alone():
    tokenizer = gpt2_tokenizer()
    samples = TextSamples(EXCHANGES[:2], np.zeros(2, dtype=np.int64))
    dataset, cut, dropped = tokenize_for_lm(samples, tokenizer, data_cfg("data.prompt_format=dialogue"), "train", 64)
    assert (cut, dropped) == (0, 0)
    decoded = [tokenizer.decode(row[0, : int(row[1].sum())]) for row in dataset.tokens]
    assert decoded == ["w4 w5 w6 </s> w7 w8 </s>", "w9 w10 w11 </s> w12 </s>"]  # an input: the turn's next line
    eos = tokenizer.eos_token_id
    targets = dataset.labels[0]
    assert (targets[:3] == IGNORED).all()  # the turn and its EOS: no loss (position t predicts token t + 1)
    assert targets[3:6].tolist() == tokenizer.convert_tokens_to_ids(["w7", "w8"]) + [eos]  # the reply and its EOS
    assert (targets[6:] == IGNORED).all()  # nor on the padding
    alpaca, _, _ = tokenize_for_lm(samples, tokenizer, data_cfg(max_length=64), "train", 64)
    prompt = tokenizer(ALPACA_PROMPT_NO_INPUT.format(instruction="w4 w5 w6"), add_special_tokens=False)["input_ids"]
    reply = tokenizer.convert_tokens_to_ids(["w7", "w8"]) + [eos]
    assert alpaca.tokens[0, 0, : len(prompt) + 3].tolist() == prompt + reply  # the default: Alpaca's, no turn EOS


def test_the_prompt_format_keeps_alpaca_run_ids_and_is_for_instructions_only():
    base = ["model.source=hf-text", "model.path=/m", "model.task=causal-lm", "data.name=instructions", "data.root=/d"]
    plain, alpaca, dialogue = (
        config_hash(load_config(None, base + extra))
        for extra in ([], ["data.prompt_format=alpaca"], ["data.prompt_format=dialogue"])
    )
    assert plain == alpaca != dialogue
    with pytest.raises(ConfigError, match="data.prompt_format.*alpaca unless data.name is 'instructions'"):
        load_config(None, ["data.name=text", "data.root=/d", "data.prompt_format=dialogue"])


def test_greedy_generations_are_transformers_own_greedy_search():
    torch.manual_seed(0)
    model, tokenizer = hf_text_model("gpt2", causal=True).eval(), gpt2_tokenizer()
    samples = TextSamples(EXCHANGES, np.zeros(len(EXCHANGES), dtype=np.int64))
    dataset, _, _ = tokenize_for_lm(samples, tokenizer, data_cfg("data.prompt_format=dialogue"), "val", 64)
    rows = generations(HFCausalLM(model), dataset, tokenizer, 64, torch.device("cpu"))
    assert [row["prompt"] for row in rows] == ["w4 w5 w6", "w9 w10 w11", "w13 w14", "w18"][:PROMPTS]
    assert [row["reference"] for row in rows] == ["w7 w8", "w12", "w15 w16 w17", "w19"][:PROMPTS]
    for row, item in zip(rows, EXCHANGES, strict=False):
        prompt = torch.tensor([tokenizer(item[0] + " " + item[1], add_special_tokens=False)["input_ids"] + [2]])
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=2,
            pad_token_id=1,
        )
        new = out[0, prompt.shape[1] :].tolist()
        new = new[: new.index(2)] if 2 in new else new
        assert row["reply"] == tokenizer.decode(new, skip_special_tokens=True) and row["new_tokens"] == len(new)
        assert row["stopped"] == ("eos" if len(new) < MAX_NEW_TOKENS else "max_new_tokens")


def test_a_finished_causal_lm_run_writes_its_greedy_replies_to_the_validation_prompts(tmp_path):
    torch.manual_seed(0)
    model_dir = hf_text_dir(tmp_path / "model", "gpt2", causal=True)
    root = tmp_path / "dialogue"
    root.mkdir()
    for split, items in (("train", EXCHANGES * 4), ("validation", EXCHANGES[::-1]), ("test", EXCHANGES)):
        lines = [json.dumps({"instruction": a, "input": b, "output": c}) for a, b, c in items]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    overrides = {
        "model": {"source": "hf-text", "path": str(model_dir), "task": "causal-lm"},
        "method": {"name": "lora", "r": 2},
        "data": {"name": "instructions", "root": str(root), "max_length": 48, "prompt_format": "dialogue"},
        "train": {"max_steps": 2, "batch_size": 8, "lr": 1e-2},
    }
    result = train(load_config(overrides=overrides), tmp_path / "run", progress=False)
    assert result["status"] == "completed"
    rows = [json.loads(line) for line in (tmp_path / "run" / GENERATIONS).read_text().splitlines()]
    assert [row["prompt"] for row in rows] == ["w18", "w13 w14", "w9 w10 w11", "w4 w5 w6"][:PROMPTS]
    assert all(row["stopped"] in ("eos", "max_new_tokens", "max_length") for row in rows)
    trial = load_config(overrides={**overrides, "train": {**overrides["train"], "test": False}})
    assert train(trial, tmp_path / "trial", progress=False)["status"] == "completed"
    assert not (tmp_path / "trial" / GENERATIONS).exists()  # a tuning trial's choice is on validation alone
