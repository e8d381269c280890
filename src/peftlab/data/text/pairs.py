"""Sentence pairs (MRPC, RTE, QNLI, ``data.text_pair_column``) as the model reads them.

An encoder's tokenizer joins a pair with its own template (BERT's ``[CLS] A [SEP] B [SEP]``), which
``tokens.tokenize`` keeps. A decoder's (GPT-2's) joins it with nothing between: "The cat sat." and "Dogs bark."
would read "The cat sat.Dogs bark.". A decoder's pair is therefore one sequence, as the tokenizer makes a single
text (Llama's ``<s>`` first), with a separator between the texts: the tokenizer's end-of-sequence token, as
GPT-2 separates the documents it was pretrained on, or ``data.pair_separator``'s text. Longer pairs are cut as
an encoder's are (the tokenizers library's ``longest_first``), the texts' ends and never the separator.
"""

from __future__ import annotations

import json

from peftlab.utils.errors import ConfigError, DataError


def pair_join(tokenizer, cfg, decoder: bool) -> tuple[list[int] | None, str]:
    """(the separator's token ids, None where the tokenizer's own pair template joins the texts; how the
    pair is joined, in words: result.json's ``provenance.data.pair_join`` and the protocol card's)."""
    separator = cfg.pair_separator
    if not decoder:
        if separator is not None:
            raise ConfigError(
                f"data.pair_separator={separator!r}: the model is an encoder, whose tokenizer joins a pair with its "
                f"own template ({template(tokenizer)}): expected null"
            )
        return None, f"the tokenizer's pair template {template(tokenizer)}"
    if separator is None:
        if tokenizer.eos_token_id is None:
            raise DataError(
                "a sentence pair for a decoder is joined by its tokenizer's end-of-sequence token, and this "
                "tokenizer has none: set data.pair_separator (the text between the two texts)"
            )
        return [tokenizer.eos_token_id], f"the tokenizer's end-of-sequence token {tokenizer.eos_token}"
    if separator == "":
        return [], 'nothing (data.pair_separator "")'
    return tokenizer(separator, add_special_tokens=False)["input_ids"], f"data.pair_separator {json.dumps(separator)}"


def template(tokenizer) -> str:
    """The tokenizer's pair template with A and B for the texts, e.g. ``[CLS] A [SEP] B [SEP]``."""
    a, b = (tokenizer(text, add_special_tokens=False)["input_ids"] for text in ("a", "b"))
    ids = tokenizer("a", "b")["input_ids"]
    at = find(ids, a, 0)
    after = find(ids, b, at + len(a)) if at >= 0 else -1
    if after < 0:  # the template changes the texts' own tokens: named by its special tokens alone
        return "(" + " ".join(tokenizer.convert_ids_to_tokens(ids)) + " around the texts)"
    shown = [
        *tokenizer.convert_ids_to_tokens(ids[:at]),
        "A",
        *tokenizer.convert_ids_to_tokens(ids[at + len(a) : after]),
    ]
    return " ".join([*shown, "B", *tokenizer.convert_ids_to_tokens(ids[after + len(b) :])])


def find(ids: list[int], part: list[int], start: int) -> int:
    """The first index from ``start`` where ``part`` stands in ``ids``; -1 where it does not."""
    for at in range(start, len(ids) - len(part) + 1):
        if ids[at : at + len(part)] == part:
            return at
    return -1


def single_template(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single text (GPT-2: none; Llama: ``<s>``)."""
    plain, ids = tokenizer("a", add_special_tokens=False)["input_ids"], tokenizer("a")["input_ids"]
    at = find(ids, plain, 0)
    return (ids[:at], ids[at + len(plain) :]) if at >= 0 else ([], [])


def decoder_pairs(first: list[str], second: list[str], separator: list[int], tokenizer, cfg, split: str):
    """(each pair's token ids: the single text's special tokens around first + separator + second, at most
    data.max_length; the indices of the pairs cut). With data.truncation=false a longer pair is an error."""
    before, after = single_template(tokenizer)
    room = cfg.max_length - len(before) - len(separator) - len(after)
    if room < 2:
        raise ConfigError(
            f"data.max_length={cfg.max_length} leaves {max(room, 0)} tokens for a pair's two texts after its "
            f"{len(separator)} separator and {len(before) + len(after)} special tokens: expected at least 2"
        )
    rows, cut = [], []
    encoded = zip(*(tokenizer(texts, add_special_tokens=False)["input_ids"] for texts in (first, second)), strict=True)
    for index, (a, b) in enumerate(encoded):
        if len(a) + len(b) > room:
            if not cfg.truncation:
                raise DataError(
                    f"data.truncation=false: {split} example {index} has {len(a) + len(b) + cfg.max_length - room} "
                    f"tokens, more than data.max_length={cfg.max_length}"
                )
            a, b = longest_first(a, b, room)
            cut.append(index)
        rows.append(before + a + separator + b + after)
    return rows, cut


def longest_first(a: list[int], b: list[int], room: int) -> tuple[list[int], list[int]]:
    """``a`` and ``b`` cut to ``room`` tokens together as the tokenizers library cuts a pair (``longest_first``):
    the longer text to what the shorter leaves; where both must be cut, each to half, the one that was longer
    (the second on a tie) keeping an odd token."""
    short, long = sorted((len(a), len(b)))
    long = short if short > room else max(short, room - short)
    if short + long > room:
        short, long = room // 2, room - room // 2
    return (a[:long], b[:short]) if len(a) > len(b) else (a[:short], b[:long])
