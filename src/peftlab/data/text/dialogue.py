"""A dialogue-format instruction task from Debian's fortunes, offline: ``peftlab data fortunes-dialogue``.

Each exchange is one quote of the fortunes task's four categories (computers, men-women, politics, science) split
after its first sentence: the first sentence is the user's turn, the rest of the quote the reply. A fortune that
runs on past its first sentence mostly answers, turns or caps it ("Standards are crucial." / "And the best thing
about standards is: there are so many to choose from!"), so the reply is conditioned on the turn as a chatbot's
is; a reader sees a set-up and its punch line. Debian ships no dialogue set, and its few question-and-answer
fortunes (riddles' "Q: ... A: ..."; about a hundred) are in the pretraining corpus (``fortunes-corpus`` leaves out
only the task's categories): these four categories are the English text the fortunes LM never saw.

A quote's trailing attribution (" -- Author", the last " -- " when an upper-case name or a quotation mark follows)
is dropped; the split is at the first sentence end (., ? or ! and a space before an upper-case letter or a
digit; not after a title such as "Mr." or an initial) that leaves the turn MIN_WORDS words or more, and the quote
is left out when the reply after it is shorter than that. Where that first sentence would hold two items of a
numbered list ("(1) ... (2) ..."), the list is the reply and what comes before it the turn (left out where that is
under MIN_WORDS words).
Quotes longer than ``fortunes.MAX_CHARS``, repeated, or in two categories are left out, as the task leaves them.

The folder is one ``data.name: instructions`` reads (Alpaca's rows, ``input`` empty): train.jsonl,
validation.jsonl and test.jsonl, rows {"instruction": turn, "input": "", "output": reply}, a seeded permutation
(VALIDATION_FRACTION and TEST_FRACTION of the exchanges), and manifest.json. A run takes it in DialoGPT's turn
format with ``data.prompt_format: dialogue`` (``tokens.dialogue_turns``): turn EOS reply EOS.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from peftlab.data.text.fortunes import (
    MANIFEST_FORMAT,
    MAX_CHARS,
    FortunesOutput,
    task_quotes,
    task_source,
    write_folder,
)
from peftlab.utils.errors import DataError

MIN_WORDS = 3
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.2
MIN_EXCHANGES = 10  # at least one validation and one test exchange
ATTRIBUTION = re.compile(r"\s+--\s*(?=[A-Z\"'])(?!.* -- )[^\n]{1,120}$")
SENTENCE_END = re.compile(r"(?<=[.?!])([\"')\]]*)\s+(?=[\"'(\[]?[A-Z0-9])")  # its closing quote stays the turn's
TITLE = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|vs|etc|e\.g|i\.e|U\.S|[A-Z])\.)$")
ITEM = re.compile(r"(?<!\S)\(\d{1,3}\)(?=\s)")  # a numbered list's marker: "(1) ", "(101) "


def split_exchange(quote: str) -> tuple[str, str] | None:
    """(turn, reply) of a normalised quote: its first sentence (of MIN_WORDS words or more) and the rest,
    attribution dropped; None where there is no such sentence or the rest is under MIN_WORDS words."""
    body = ATTRIBUTION.sub("", quote).strip()
    for end in SENTENCE_END.finditer(body):
        turn, reply = body[: end.end(1)].strip(), body[end.end() :].strip()
        if TITLE.search(turn) or len(turn.split()) < MIN_WORDS:
            continue
        if len(ITEM.findall(turn)) >= 2:  # a sentence end inside a numbered list: the list is the reply
            return list_exchange(body)
        return (turn, reply) if len(reply.split()) >= MIN_WORDS else None
    return None


def list_exchange(body: str) -> tuple[str, str] | None:
    """(what comes before a numbered list, the list) where that is a turn of MIN_WORDS words or more, else None:
    "101 USES FOR A DEAD MICROPROCESSOR (1) Scarecrow ... (8) ... . . . (99) ..." split at its ellipsis put eight
    items in the user's turn."""
    first = ITEM.search(body)
    turn = body[: first.start()].strip() if first else ""
    if len(turn.split()) < MIN_WORDS:
        return None
    return turn, body[first.start() :].strip()


def write_fortunes_dialogue(
    out: str | Path | None = None, categories=None, seed: int = 0, directory: str | Path | None = None
) -> FortunesOutput:
    """Write the dialogue folder ``out`` (default: <data cache>/fortunes/dialogue): train.jsonl, validation.jsonl
    and test.jsonl of Alpaca rows, and manifest.json. ``categories``: names ("a,b,c" or a sequence), or None for
    the fortunes task's four, which the fortunes corpus (the text base's pretraining data) leaves out."""
    names, folder, read = task_source(out, "dialogue", categories, seed, directory)
    quotes, _, dropped = task_quotes(read)
    exchanges = [pair for pair in map(split_exchange, quotes) if pair is not None]
    if len(exchanges) < MIN_EXCHANGES:
        raise DataError(
            f"fortune categories {','.join(names)}: {len(exchanges)} quotes of more than one sentence, fewer than "
            f"{MIN_EXCHANGES}: choose others with --categories"
        )
    order = np.random.default_rng(seed).permutation(len(exchanges))
    n_test, n_val = round(TEST_FRACTION * len(order)), round(VALIDATION_FRACTION * len(order))
    parts = {"test": order[:n_test], "validation": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    files = {
        f"{split}.jsonl": "".join(
            json.dumps({"instruction": exchanges[i][0], "input": "", "output": exchanges[i][1]}, ensure_ascii=False)
            + "\n"
            for i in sorted(index.tolist())
        ).encode()
        for split, index in parts.items()
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "what": "fortunes-dialogue",
        "categories": list(names),
        "seed": seed,
        "max_chars": MAX_CHARS,
        "min_words": MIN_WORDS,
        "sizes": {f"{split}.jsonl": len(index) for split, index in parts.items()},
        "quotes_not_split": len(quotes) - len(exchanges),  # one sentence, or a side under MIN_WORDS
        "dropped": dropped,
        "sources": {name: category.sha256 for name, category in read.items()},
    }
    return write_folder(folder, files, manifest, f"seed {seed}, categories {','.join(names)}")
