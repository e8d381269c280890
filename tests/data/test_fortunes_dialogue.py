"""peftlab data fortunes-dialogue: a quote split after its first sentence into a user's turn and a reply, written
as Alpaca rows ``data.name: instructions`` reads, the same bytes for a seed; fixture files in tmp_path, one test
reads Debian's own."""

import json
from pathlib import Path

import pytest
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)

from peftlab.cli import main
from peftlab.config.schema import load_config
from peftlab.data.text.dialogue import split_exchange, write_fortunes_dialogue
from peftlab.data.text.fortunes import (
    DEBIAN_FORTUNES_DIR,
    DEFAULT_CATEGORIES,
    ENV_FORTUNES_DIR,
    command_arguments,
    read_quotes,
)
from peftlab.data.text.tasks import load_text_splits
from peftlab.utils.errors import DataError


@pytest.mark.parametrize(
    ("quote", "exchange"),
    [
        (
            "Computers are not intelligent. They only think they are.",
            ("Computers are not intelligent.", "They only think they are."),
        ),
        ("Is it fast? No, but it is cheap. -- Anon", ("Is it fast?", "No, but it is cheap.")),  # attribution dropped
        ('"Is it done?" he asked. "Not yet," she said.', ('"Is it done?" he asked.', '"Not yet," she said.')),
        (
            "Ask Mr. Smith about it. He wrote it all.",
            ("Ask Mr. Smith about it.", "He wrote it all."),
        ),  # no split at Mr.
        (
            "A hard day -- and longer than any night. That is life.",
            ("A hard day -- and longer than any night.", "That is life."),
        ),
        ('He said "Go home now." Then he left them all.', ('He said "Go home now."', "Then he left them all.")),
        ("One sentence only, with no reply at all.", None),
        ("Short one. A reply of many words here.", None),  # a turn under three words is no turn: no other end
        ("A turn of words. Too short.", None),  # the reply under three words
        ("What the world needs is more geniuses with humility. -- Jane Doe, 1987", None),  # one sentence and its author
        (
            "101 USES FOR A DEAD CHIP (1) Scarecrow for centipedes (2) Dead cat brush . . . (99) Window garden harrow",
            (
                "101 USES FOR A DEAD CHIP",
                "(1) Scarecrow for centipedes (2) Dead cat brush . . . (99) Window garden harrow",
            ),
        ),  # a numbered list is the reply, not split at its ellipsis
        (
            "(1) Never draw what you can copy. (2) Never copy what you can trace.",
            ("(1) Never draw what you can copy.", "(2) Never copy what you can trace."),
        ),
        ("Kinds: (1) Not enough (2) Too much. So it goes on and on.", None),  # one word before the list: no turn
    ],
)
def test_a_quote_splits_after_its_first_sentence_into_turn_and_reply(quote, exchange):
    assert split_exchange(quote) == exchange


def write_folder(root):
    """Two categories of multi-sentence quotes, a one-sentence one in each, and a quote both hold."""
    root.mkdir()
    for name in ("alpha", "beta"):
        quotes = [f"{name} turn number {i} here. And {name} reply number {i}." for i in range(12)]
        quotes += [f"Only {name} one sentence.", "Both hold this one. So it is left out."]
        (root / name).write_text("".join(f"{quote}\n%\n" for quote in quotes))
    return root


def test_the_dialogue_task_is_alpaca_rows_split_by_seed_that_instructions_reads(tmp_path):
    fortunes = write_folder(tmp_path / "fortunes")
    task = write_fortunes_dialogue(tmp_path / "task", ("alpha", "beta"), seed=0, directory=fortunes)
    assert task.written and task.sizes == {"test.jsonl": 5, "validation.jsonl": 2, "train.jsonl": 17}
    rows = {
        s: [json.loads(x) for x in (task.folder / f"{s}.jsonl").read_text().splitlines()]
        for s in ("train", "validation", "test")
    }
    every = [row for split in rows.values() for row in split]
    assert len({row["instruction"] for row in every}) == 24  # the splits are disjoint, every quote once
    for row in every:
        name, _, number = row["instruction"].removesuffix(" here.").partition(" turn number ")
        assert row == {
            "instruction": f"{name} turn number {number} here.",
            "input": "",
            "output": f"And {name} reply number {number}.",
        }
    manifest = json.loads((task.folder / "manifest.json").read_text())
    assert manifest["quotes_not_split"] == 2 and manifest["dropped"]["alpha"]["in_another_class"] == 1

    again = write_fortunes_dialogue(tmp_path / "task", ("beta", "alpha"), seed=0, directory=fortunes)
    assert not again.written  # the same arguments: nothing written
    other = write_fortunes_dialogue(tmp_path / "other", ("alpha", "beta"), seed=1, directory=fortunes)
    assert (other.folder / "test.jsonl").read_bytes() != (task.folder / "test.jsonl").read_bytes()
    assert command_arguments(task.folder) == ["fortunes-dialogue", "--seed", "0", "--categories", "alpha,beta"]

    cfg = load_config(None, ["data.name=instructions", f"data.root={task.folder}"]).data
    splits, info = load_text_splits(cfg)
    assert info.split_sizes == {"train": 17, "val": 2, "test": 5}  # validation.jsonl is val
    assert splits["val"].texts == [(r["instruction"], "", r["output"]) for r in rows["validation"]]
    assert info.task == {"what": "fortunes-dialogue", "categories": ["alpha", "beta"]}


def test_too_few_exchanges_is_one_line(tmp_path):
    fortunes = tmp_path / "fortunes"
    fortunes.mkdir()
    for name in ("alpha", "beta"):
        (fortunes / name).write_text("One sentence each.\n%\nAnother one sentence.\n%\n")
    with pytest.raises(DataError, match="0 quotes of more than one sentence, fewer than 10: choose others"):
        write_fortunes_dialogue(tmp_path / "task", ("alpha", "beta"), directory=fortunes)


def test_the_default_dialogue_task_from_debians_fortunes_through_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(ENV_FORTUNES_DIR, raising=False)
    assert main(["data", "fortunes-dialogue", "--out", str(tmp_path / "dialogue")]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'dialogue'}: test.jsonl ")
    manifest = json.loads((tmp_path / "dialogue" / "manifest.json").read_text())
    assert manifest["categories"] == list(DEFAULT_CATEGORIES) and sum(manifest["sizes"].values()) > 500
    quotes = set()
    for name in DEFAULT_CATEGORIES:  # every exchange is a quote of the task's categories, which the corpus leaves out
        quotes.update(read_quotes(Path(DEBIAN_FORTUNES_DIR) / name)[0])
    rows = [json.loads(x) for x in (tmp_path / "dialogue" / "test.jsonl").read_text().splitlines()]
    assert all(any(q.startswith(f"{r['instruction']} {r['output']}") for q in quotes) for r in rows[:20])
