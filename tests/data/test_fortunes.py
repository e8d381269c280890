"""peftlab data fortunes-task / fortunes-corpus: strfile's text format read into normalised quotes, a
stratified task that is the same bytes for a seed and never written over another, and a corpus that
holds none of the task's quotes. Fixture files in tmp_path; one test reads Debian's own."""

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)

from peftlab.cli import main
from peftlab.config.schema import load_config
from peftlab.data.text import fortunes
from peftlab.data.text.fortunes import (
    DEBIAN_FORTUNES_DIR,
    DEFAULT_CATEGORIES,
    ENV_FORTUNES_DIR,
    MAX_CHARS,
    fortunes_dir,
    list_categories,
    normalise,
    read_quotes,
    write_fortunes_corpus,
    write_fortunes_task,
)
from peftlab.data.text.tasks import load_text_splits
from peftlab.utils.errors import DataError, UserError

CLASSES = ("alpha", "beta", "gamma")
PER_CLASS = 20  # the fixture's smallest class: the task takes 20 of each, 4 of them test


def strfile(quotes: list[str], end: str = "%\n") -> str:
    """Quotes in strfile's text format: each followed by a line holding only %."""
    return "".join(f"{quote}\n{end}" for quote in quotes)


def class_quotes(name: str, n: int) -> list[str]:
    return [f"{name} quote number {i},\n\twrapped\n\t\t-- {name.title()} {i}" for i in range(n)]


@pytest.fixture
def folder(tmp_path):
    """A fortunes folder as Debian's packages leave it: English categories with .dat files and .u8 links,
    an Italian folder linked into the top one, offensive ROT13 files in off/, a LICENSE."""
    root = tmp_path / "fortunes"
    (root / "it").mkdir(parents=True)
    (root / "off").mkdir()
    sizes = {"alpha": 25, "beta": 20, "gamma": 30}
    for name, n in sizes.items():
        (root / name).write_text(strfile(class_quotes(name, n)))
        (root / f"{name}.dat").write_bytes(b"\x00\x00\x00\x02binary index")
        (root / f"{name}.u8").symlink_to(name)
    (root / "alpha").write_text((root / "alpha").read_text() + "x" * (MAX_CHARS + 1) + "\n%\nshared by two\n%\n")
    (root / "beta").write_text((root / "beta").read_text() + "shared by two\n%\n")
    (root / "other").write_text(strfile([*class_quotes("other", 6), "shared by two", class_quotes("alpha", 4)[3]]))
    (root / "more").write_text(strfile([class_quotes("other", 1)[0], "more's own"]))
    (root / "it" / "adams").write_text(strfile(["Ciao, e grazie per tutto il pesce."]))
    (root / "adams").symlink_to("it/adams")
    (root / "off" / "rude").write_text(strfile(["Guvf vf EBG13."]))
    (root / "LICENSE").write_text("a licence, not a category\n")
    return root


def digests(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("text", "quotes"),
    [
        ("one\n%\ntwo\n%\n", ["one", "two"]),
        ("one\n%\ntwo", ["one", "two"]),  # no % after the last quote, no newline at the end
        ("one\n%\ntwo\n", ["one", "two"]),
        ("one\r\n%\r\ntwo\r\n%\r\n", ["one", "two"]),  # CRLF
        ("%\none\n%\n%\n  \n%\ntwo\n%  \n", ["one", "two"]),  # empty quotes, a separator with trailing spaces
        ("%DCL-MEM-BAD, bad memory\n100%\n%\n", ["%DCL-MEM-BAD, bad memory 100%"]),  # only a lone % separates
        ("A\n\tB  C\n\t\t-- D\n", ["A B C -- D"]),  # line breaks and tab indents: one space
        ("an _\bunderlined word, *___\b\b\bbig*\x07 ding\n", ["an underlined word, *big* ding"]),  # overstrikes
        ("caf\u00e9 \u2014 na\u00efve\n", ["caf\u00e9 \u2014 na\u00efve"]),  # UTF-8 is read as written
    ],
)
def test_strfile_text_is_read_into_normalised_quotes(tmp_path, text, quotes):
    path = tmp_path / "category"
    path.write_bytes(text.encode())
    found, sha256 = read_quotes(path)
    assert found == quotes
    assert sha256 == hashlib.sha256(text.encode()).hexdigest()


def test_bad_files_are_one_line_naming_them(tmp_path):
    latin1 = tmp_path / "latin1"
    latin1.write_bytes(b"fine\n%\ncaf\xe9\n%\n")
    empty, separators = tmp_path / "empty", tmp_path / "separators"
    empty.write_bytes(b"")
    separators.write_text("%\n%\n")
    for path, needle in (
        (latin1, f"{latin1} line 3: not UTF-8 text (byte 10)"),
        (empty, f"{empty} is empty"),
        (separators, f"{separators}: no quotes: expected quotes separated by lines holding only %"),
        (tmp_path / "missing", f"missing file {tmp_path / 'missing'}"),
    ):
        with pytest.raises(DataError, match=f"^{re.escape(needle)}") as err:
            read_quotes(path)
        assert "\n" not in str(err.value)


def test_categories_per_language_leave_out_indexes_links_licences_and_offensive_ones(folder):
    assert list(list_categories(folder)) == ["alpha", "beta", "gamma", "more", "other"]
    assert list(list_categories(folder, "it")) == ["adams"]
    assert list_categories(folder, "de") == {}
    with pytest.raises(UserError, match="fortunes language 'fr': expected one of en, de, es, it"):
        list_categories(folder, "fr")


def test_the_folder_is_the_argument_else_the_environment_else_debians(folder, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_FORTUNES_DIR, raising=False)
    assert fortunes_dir() == Path(DEBIAN_FORTUNES_DIR)
    monkeypatch.setenv(ENV_FORTUNES_DIR, str(folder))
    assert fortunes_dir() == folder
    assert fortunes_dir(tmp_path) == tmp_path
    monkeypatch.setenv(ENV_FORTUNES_DIR, str(tmp_path / "none"))
    with pytest.raises(DataError, match=rf"no fortunes folder .*none \({ENV_FORTUNES_DIR}\): install Debian's"):
        fortunes_dir()


def test_the_task_is_stratified_capped_and_readable_as_data_name_text(folder, tmp_path):
    task = write_fortunes_task(tmp_path / "task", CLASSES, seed=0, directory=folder)
    assert task.written and task.sizes == {"train.jsonl": 48, "test.jsonl": 12}
    assert sorted(p.name for p in task.folder.iterdir()) == ["manifest.json", "test.jsonl", "train.jsonl"]
    train, test = rows(task.folder / "train.jsonl"), rows(task.folder / "test.jsonl")
    for split, per_class in ((train, PER_CLASS - 4), (test, 4)):
        assert sorted(row["label"] for row in split) == sorted(CLASSES * per_class)
    texts = [row["text"] for row in train + test]
    assert len(set(texts)) == len(texts)  # train and test disjoint
    assert all(text.startswith(row["label"]) for text, row in zip(texts, train + test, strict=True))
    assert "shared by two" not in texts and all(len(text) <= MAX_CHARS for text in texts)
    manifest = json.loads((task.folder / "manifest.json").read_text())
    assert manifest["dropped"]["alpha"] == {"longer_than_max_chars": 1, "repeated": 0, "in_another_class": 1}
    assert manifest["per_split"]["test"] == dict.fromkeys(CLASSES, 4) and manifest["per_class"] == PER_CLASS
    assert manifest["sources"]["beta"] == hashlib.sha256((folder / "beta").read_bytes()).hexdigest()

    cfg = load_config(None, ["data.name=text", f"data.root={task.folder}", "data.val_fraction=0.25"]).data
    splits, info = load_text_splits(cfg)
    assert info.class_names == list(CLASSES)
    assert info.split_sizes == {"train": 36, "val": 12, "test": 12}
    assert info.task == {"what": "fortunes-task", "categories": list(CLASSES)}  # the paper's words on the task


def test_a_seed_gives_the_same_bytes_and_another_seed_other_draws(folder, tmp_path):
    first, again, other = (
        write_fortunes_task(tmp_path / out, CLASSES, seed=seed, directory=folder)
        for out, seed in (("a", 3), ("b", 3), ("c", 4))
    )
    assert digests(first.folder) == digests(again.folder)
    assert (first.folder / "test.jsonl").read_bytes() != (other.folder / "test.jsonl").read_bytes()
    in_other_order = write_fortunes_task(tmp_path / "d", ("gamma", "alpha", "beta"), seed=3, directory=folder)
    assert digests(in_other_order.folder) == digests(first.folder)


def test_the_same_task_again_writes_nothing_another_is_a_one_line_error(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(ENV_FORTUNES_DIR, str(folder))
    out = tmp_path / "task"
    args = ["data", "fortunes-task", "--out", str(out), "--categories", "beta,alpha,gamma"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}: train.jsonl 48 lines, test.jsonl 12 lines"
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(args) == 0
    assert capsys.readouterr().out.startswith(f"already there, nothing written: {out}")
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fortunes", "task"]

    assert main([*args, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (
        "already holds a fortunes-task written with other arguments or files (its manifest.json differs in seed)" in err
    )
    with pytest.raises(UserError, match="differs in categories, per_class, sizes, per_split, dropped, sources"):
        write_fortunes_task(out, ("alpha", "other"), directory=folder)
    (tmp_path / "else").mkdir()
    (tmp_path / "else" / "train.jsonl").write_text('{"text": "x", "label": 0}\n')
    with pytest.raises(UserError, match="already holds something else"):
        write_fortunes_task(tmp_path / "else", CLASSES, directory=folder)
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_an_interrupted_write_leaves_no_task_and_no_temporary(folder, tmp_path, monkeypatch):
    def interrupted(path, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(fortunes, "write_json_atomic", interrupted)  # the manifest, written last
    with pytest.raises(KeyboardInterrupt):
        write_fortunes_task(tmp_path / "out" / "task", CLASSES, directory=folder)
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.undo()
    assert write_fortunes_task(tmp_path / "out" / "task", CLASSES, directory=folder).written


def test_too_few_quotes_and_bad_categories_are_one_line(folder, tmp_path):
    for categories, error, needle in (
        (("alpha", "more"), DataError, "fewer than 5 quotes of at most 400 characters: more 2"),
        (("alpha", "adams"), DataError, "no English fortune category adams in .* \\(there: alpha, beta, gamma, more"),
        (("alpha",), UserError, "two or more distinct category names"),
        (("alpha", "alpha"), UserError, "two or more distinct category names"),
    ):
        with pytest.raises(error, match=needle) as err:
            write_fortunes_task(tmp_path / "out", categories, directory=folder)
        assert "\n" not in str(err.value)


def test_the_default_output_is_in_the_data_cache(folder, tmp_path):
    task = write_fortunes_task(None, CLASSES, directory=folder)
    corpus = write_fortunes_corpus(None, CLASSES, directory=folder)
    assert task.folder == tmp_path / "cache" / "fortunes" / "task"  # isolated_cache's $PEFTLAB_DATA_CACHE
    assert corpus.folder == tmp_path / "cache" / "fortunes" / "corpus"


def test_the_corpus_holds_no_quote_of_a_task_category(folder, tmp_path):
    corpus = write_fortunes_corpus(tmp_path / "corpus", CLASSES, directory=folder)
    lines = (corpus.folder / "corpus.txt").read_text().splitlines()
    # categories in sorted order, each quote once: more's two, then other's less its first (more holds it)
    # and less the two that alpha and beta hold
    other = [normalise(quote) for quote in class_quotes("other", 6)]
    assert lines == [other[0], "more's own", *other[1:]]
    manifest = json.loads((corpus.folder / "manifest.json").read_text())
    assert manifest["quotes"] == 7 and manifest["characters"] == sum(map(len, lines))
    assert manifest["per_category"] == {"more": 2, "other": 5}
    assert manifest["dropped"] == {"in_a_task_category": 2, "repeated": 1}
    assert set(manifest["sources"]) == {*CLASSES, "more", "other"}  # what was left out is hashed too
    assert manifest["sha256"] == hashlib.sha256((corpus.folder / "corpus.txt").read_bytes()).hexdigest()
    assert not write_fortunes_corpus(tmp_path / "corpus", CLASSES, directory=folder).written
    with pytest.raises(UserError, match="already holds a fortunes-corpus .* differs in excluded_categories"):
        write_fortunes_corpus(tmp_path / "corpus", ("alpha", "beta"), directory=folder)
    task = write_fortunes_task(tmp_path / "task", CLASSES, directory=folder)
    with pytest.raises(UserError, match="already holds something else"):  # a task is no corpus
        write_fortunes_corpus(task.folder, CLASSES, directory=folder)


@pytest.mark.skipif(
    not all(Path(DEBIAN_FORTUNES_DIR, name).is_file() for name in DEFAULT_CATEGORIES),
    reason="Debian's fortunes package is not installed (/usr/share/games/fortunes)",
)
def test_the_default_task_and_corpus_from_debians_fortunes(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_FORTUNES_DIR, raising=False)
    task = write_fortunes_task(tmp_path / "task")
    manifest = json.loads((task.folder / "manifest.json").read_text())
    assert manifest["categories"] == list(DEFAULT_CATEGORIES)
    assert manifest["per_split"] == {
        "train": dict.fromkeys(DEFAULT_CATEGORIES, 400),
        "test": dict.fromkeys(DEFAULT_CATEGORIES, 100),
    }
    corpus = write_fortunes_corpus(tmp_path / "corpus")
    lines = set((corpus.folder / "corpus.txt").read_text().splitlines())
    assert len(lines) > 10_000 and os.path.getsize(corpus.folder / "corpus.txt") > 1_500_000
    assert not lines & {row["text"] for row in rows(task.folder / "train.jsonl") + rows(task.folder / "test.jsonl")}
