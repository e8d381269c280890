"""Sentence pairs as the model reads them (peftlab.data.text.pairs): a decoder's two texts with its separator
between, decoded back; an encoder's with its tokenizer's own template; cutting keeps the separator."""

import json

import pytest
from testkit import text_tokenizer

from peftlab.config.schema import load_config
from peftlab.data.text.pairs import longest_first
from peftlab.data.text.tokens import build_text_data
from peftlab.training.bases.text_base import train_tokenizer
from peftlab.utils.errors import ConfigError

PAIRS = [("The cat sat.", "Dogs bark."), ("A bird sings in the old tree by the river.", "It rains.")]


def pair_task(root, pairs=PAIRS):
    root.mkdir(exist_ok=True)
    for split in ("train", "test"):
        rows = [{"text": a, "second": b, "label": i % 2} for i, (a, b) in enumerate(pairs * 2)]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def pair_cfg(root, **data):
    data = {"name": "text", "root": str(root), "text_pair_column": "second", "max_length": 32, **data}
    return load_config(overrides={"data": data}).data


def gpt2_tokenizer():
    """A byte-level BPE with GPT-2's <|endoftext|> (the tokenizer `peftlab pretrain` trains for a text base)."""
    return train_tokenizer([text for pair in PAIRS for text in pair] * 4, 300, 64)


def decoded(bundle, tokenizer, split="test", row=0) -> str:
    tokens = bundle.__dict__[split].tokens[row]
    return tokenizer.decode(tokens[0][tokens[1].bool()])


def test_a_decoder_pair_decodes_with_the_end_of_sequence_token_between(tmp_path):
    tokenizer = gpt2_tokenizer()
    config = {"model_type": "gpt2", "n_positions": 64, "vocab_size": len(tokenizer)}
    cfg = pair_cfg(pair_task(tmp_path / "pairs"))
    bundle = build_text_data(cfg, tokenizer, config, decoder=True)
    assert decoded(bundle, tokenizer) == "The cat sat.<|endoftext|>Dogs bark."
    assert bundle.info.pair_join == "the tokenizer's end-of-sequence token <|endoftext|>"
    spaced = build_text_data(pair_cfg(tmp_path / "pairs", pair_separator=" | "), tokenizer, config, decoder=True)
    assert (
        decoded(spaced, tokenizer) == "The cat sat. | Dogs bark."
        and spaced.info.pair_join == 'data.pair_separator " | "'
    )
    # the tokenizer's own pair handling, which an encoder keeps, runs a GPT-2 pair together
    assert decoded(build_text_data(cfg, tokenizer, config), tokenizer) == "The cat sat.Dogs bark."


def test_a_cut_pair_keeps_its_separator_and_cuts_as_transformers_cuts(tmp_path):
    tokenizer = gpt2_tokenizer()
    config = {"model_type": "gpt2", "n_positions": 64, "vocab_size": len(tokenizer)}
    bundle = build_text_data(pair_cfg(pair_task(tmp_path / "pairs"), max_length=8), tokenizer, config, decoder=True)
    text = decoded(bundle, tokenizer, row=1)
    assert text.count("<|endoftext|>") == 1 and text.endswith("<|endoftext|>It rains.")
    assert any(note.startswith("test: 2 of 4 examples cut") for note in bundle.info.notes)
    words = text_tokenizer()  # no special tokens: its pair is the two texts' tokens
    for a, b, room in [(9, 3, 8), (3, 9, 8), (6, 6, 7), (5, 8, 6), (2, 2, 4), (7, 1, 3)]:
        first, second = " ".join(f"w{i}" for i in range(a)), " ".join(f"w{20 + i}" for i in range(b))
        ours = longest_first(*(words(text)["input_ids"] for text in (first, second)), room)
        theirs = words(first, second, truncation="longest_first", max_length=room)["input_ids"]
        assert ours[0] + ours[1] == theirs, (a, b, room)


def templated(single: str, pair: str):
    """The word-level test tokenizer with a template of transformers' tokenizers (Llama's <s>, RoBERTa's)."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = text_tokenizer()
    specials = [("<s>", 0), ("</s>", 2)]
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    return tokenizer


def test_an_encoder_keeps_its_template_and_a_decoder_its_single_text_s_specials(tmp_path):
    pairs = [("w4 w5", "w6 w7")]
    cfg = pair_cfg(pair_task(tmp_path / "pairs", pairs))
    config = {"model_type": "roberta", "max_position_embeddings": 66, "pad_token_id": 1, "vocab_size": 64}
    roberta = templated("<s> $A </s>", "<s> $A </s> </s> $B:1 </s>:1")
    bundle = build_text_data(cfg, roberta, config)
    assert decoded(bundle, roberta) == "<s> w4 w5 </s> </s> w6 w7 </s>"
    assert bundle.info.pair_join == "the tokenizer's pair template <s> A </s> </s> B </s>"
    with pytest.raises(
        ConfigError, match="the model is an encoder, whose tokenizer joins a pair with its own template"
    ):
        build_text_data(pair_cfg(tmp_path / "pairs", pair_separator="|"), roberta, config)
    llama = templated("<s> $A", "<s> $A <s> $B:1")  # Llama's: <s> before each text
    config = {"model_type": "llama", "vocab_size": 64}
    assert decoded(build_text_data(cfg, llama, config, decoder=True), llama) == "<s> w4 w5 </s> w6 w7"


def test_a_separator_for_single_texts_is_refused_in_the_config():
    with pytest.raises(ConfigError, match="data.pair_separator.*null unless the data is sentence pairs"):
        load_config(overrides=["data.name=glue/sst2", "data.root=/data", "data.pair_separator=|"])
    assert (
        load_config(overrides=["data.name=glue/rte", "data.root=/data", "data.pair_separator="]).data.pair_separator
        == ""
    )
