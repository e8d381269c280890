"""Debian's fortunes, offline: a labelled text task and a pretraining corpus for peftlab's text default.

The files: Debian's ``fortunes`` and ``fortunes-min`` put the English categories in
/usr/share/games/fortunes, one plain-text file per category in strfile's text format (quotes
separated by lines holding only ``%``; beside each a binary ``.dat`` index and a ``.u8`` link, which
peftlab never reads). ``fortunes-de``, ``fortunes-es`` and ``fortunes-it`` put theirs in the
sub-folders de/, es/ (files named ``<category>.fortunes``) and it/; fortunes-it also links each
Italian file into the top folder (``adams -> it/adams``), so a top-level link into a language
sub-folder is that language's, not English. The offensive categories (ROT13, in off/ and es/off/)
are never listed or read. The folder: an argument, else ``$PEFTLAB_FORTUNES_DIR``, else Debian's.

``peftlab data fortunes-task`` writes a ``data.name: text`` folder (train.jsonl, test.jsonl,
manifest.json): which of a few English categories a quote comes from. ``peftlab data
fortunes-corpus`` writes every other English quote, one a line (corpus.txt, manifest.json), and the same
quotes as a ``data.name: text`` folder (train.jsonl, and test.jsonl: 500 held out, seeded), for
pretraining a small LM that never sees the task's quotes. Both are written in a hidden folder beside
the output and renamed when complete; the same arguments again write nothing, other arguments into
the same folder are a one-line error, as ``peftlab data vtab-demo`` does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from peftlab.data.opening import read_data_file
from peftlab.data.sources import cache_dir, writable_cache_dir
from peftlab.data.splits import STREAM_TEST_SUBSET, STREAM_TRAIN_SUBSET, pick_subset
from peftlab.utils.errors import DataError, UserError
from peftlab.utils.files import check_output, read_json, shown_path, write_json_atomic

DEBIAN_FORTUNES_DIR = "/usr/share/games/fortunes"
ENV_FORTUNES_DIR = "PEFTLAB_FORTUNES_DIR"
LANGUAGE_FOLDERS = {"en": ".", "de": "de", "es": "es", "it": "it"}
OFFENSIVE_FOLDER = "off"
# fortune-mod's category files are lower-case; this also leaves out a LICENSE or README beside them
CATEGORY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")
NOT_CATEGORIES = (".dat", ".u8")  # strfile's index, and Debian's link to the same file
MAX_CATEGORY_BYTES = 64 << 20  # the largest, de/zitate, is about 2 MB
HOW_TO_GET = (
    "install Debian's fortunes and fortunes-min (scripts/install-data.sh does), or set "
    f"${ENV_FORTUNES_DIR} (--fortunes-dir) to a folder of fortune files"
)

# The task. Four English categories with 500+ quotes of at most MAX_CHARS characters each and topics
# a reader tells apart (cookie, people and miscellaneous are larger but mixed; love and sports are
# about 130 quotes each).
DEFAULT_CATEGORIES = ("computers", "men-women", "politics", "science")
MAX_CHARS = 400  # about 100 GPT-2 tokens: a model reading 64-96 tokens sees most of each quote
PER_CLASS = 500  # or every class's size, when the smallest is smaller
MIN_PER_CLASS = 5  # test needs at least one quote of each class
TEST_FRACTION = 0.2
# ascii-art's quotes are drawings: with their whitespace folded they are noise, not text
NOT_IN_CORPUS = ("ascii-art",)
CORPUS_TEST_QUOTES = 500  # held out of the corpus's train.jsonl: a language model's test perplexity
CORPUS_SPLIT_SEED = 0
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1  # raise when the same arguments would write other bytes


@dataclass(frozen=True)
class Category:
    name: str
    quotes: list[str]  # normalised (see `normalise`), in the file's order, none empty
    sha256: str  # of the file's bytes


@dataclass(frozen=True)
class FortunesOutput:
    folder: Path
    sizes: dict[str, int]  # file -> rows or lines
    written: bool  # False: the folder already held this very output
    leftovers: list[Path] = field(default_factory=list)  # temporary folders of killed writers, for the user


def fortunes_dir(directory: str | Path | None = None) -> Path:
    """The folder of fortune files: ``directory``, else $PEFTLAB_FORTUNES_DIR, else Debian's."""
    chosen = directory or os.environ.get(ENV_FORTUNES_DIR) or DEBIAN_FORTUNES_DIR
    path = Path(chosen).expanduser()
    if not path.is_dir():
        where = "--fortunes-dir" if directory else ENV_FORTUNES_DIR if os.environ.get(ENV_FORTUNES_DIR) else "Debian's"
        raise DataError(f"no fortunes folder {shown_path(path)} ({where}): {HOW_TO_GET}")
    return path


def list_categories(directory: Path, language: str = "en") -> dict[str, Path]:
    """Category name (its file's name) -> file, sorted, of ``language`` (en, de, es or it)."""
    if language not in LANGUAGE_FOLDERS:
        raise UserError(f"fortunes language {language!r}: expected one of {', '.join(LANGUAGE_FOLDERS)}")
    folder = directory / LANGUAGE_FOLDERS[language]
    others = [directory.resolve() / sub for sub in (*LANGUAGE_FOLDERS.values(), OFFENSIVE_FOLDER) if sub != "."]
    found = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not CATEGORY_NAME.fullmatch(path.name) or path.name.endswith(NOT_CATEGORIES) or not path.is_file():
            continue  # is_file: off/ and the language folders are folders
        if path.is_symlink() and any(path.resolve().is_relative_to(other) for other in others):
            continue  # fortunes-it's links from the top folder into it/
        found[path.name] = path
    return found


def normalise(quote: str) -> str:
    """One line: overstrikes applied (``_\\bI`` is an underlined I: I), other control characters
    dropped (a bell), and every run of whitespace, line breaks and tab indents included, one space.
    fortune's line breaks are its 72-column wrapping and the tabs before "-- Author", not meaning;
    a row of the task and a line of the corpus are single lines."""
    kept = []
    for char in quote:
        if char == "\b":
            if kept:
                kept.pop()  # what a terminal shows: the next character overwrites the last
        elif char.isspace() or unicodedata.category(char) != "Cc":
            kept.append(char)
    return " ".join("".join(kept).split())


def read_quotes(path: Path) -> tuple[list[str], str]:
    """(quotes, sha256) of a category file in strfile's text format: quotes separated by lines holding
    only "%" (trailing spaces and a CR allowed), each normalised, empty ones dropped. The file must be
    UTF-8 (every file of Debian's packages is): another encoding is a DataError naming the line, not
    text guessed at."""
    raw = read_data_file(path, MAX_CATEGORY_BYTES, "a fortune file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not UTF-8 text (byte {err.start}): expected a fortune file") from None
    quotes, lines = [], []
    for line in [*text.split("\n"), "%"]:  # the last quote needs no "%" after it
        if line.rstrip() == "%":
            if quote := normalise("\n".join(lines)):
                quotes.append(quote)
            lines = []
        else:
            lines.append(line)
    if not quotes:
        raise DataError(f"{path}: no quotes: expected quotes separated by lines holding only %")
    return quotes, hashlib.sha256(raw).hexdigest()


def read_categories(directory: Path, names) -> dict[str, Category]:
    """The English categories ``names``, read; a missing one is a DataError naming what there is."""
    available = list_categories(directory)
    if missing := [name for name in names if name not in available]:
        shown = ", ".join(available) if available else "none"
        raise DataError(
            f"no English fortune category {', '.join(missing)} in {shown_path(directory)} (there: {shown}); "
            + HOW_TO_GET
        )
    return {name: Category(name, *read_quotes(available[name])) for name in names}


def parse_categories(categories) -> tuple[str, ...]:
    """Category names ("a,b,c" or a sequence) sorted, the classes' order in the task; None: the default."""
    if categories is None:
        return DEFAULT_CATEGORIES
    names = [name.strip() for name in categories.split(",")] if isinstance(categories, str) else list(categories)
    if len(names) < 2 or len(set(names)) != len(names) or not all(names):
        shown = categories if isinstance(categories, str) else ",".join(names)
        raise UserError(f"categories {shown!r}: expected two or more distinct category names, comma-separated")
    return tuple(sorted(names))


def task_quotes(categories: dict[str, Category]) -> tuple[list[str], np.ndarray, dict[str, dict[str, int]]]:
    """(quotes, labels, dropped per category) of the task's candidates: quotes of at most MAX_CHARS,
    each once, and none that two categories hold (its label would be either)."""
    owners: dict[str, set[str]] = {}
    for name, category in categories.items():
        for quote in category.quotes:
            owners.setdefault(quote, set()).add(name)
    texts, labels, dropped = [], [], {}
    for label, (name, category) in enumerate(categories.items()):
        seen = set()
        counts = dropped[name] = {"longer_than_max_chars": 0, "repeated": 0, "in_another_class": 0}
        for quote in category.quotes:
            if len(quote) > MAX_CHARS:
                counts["longer_than_max_chars"] += 1
            elif quote in seen:
                counts["repeated"] += 1
            elif len(owners[quote]) > 1:
                counts["in_another_class"] += 1
            else:
                seen.add(quote)
                texts.append(quote)
                labels.append(label)
    return texts, np.array(labels, dtype=np.int64), dropped


def task_splits(labels: np.ndarray, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices into ``labels``: per_class of each class (every class the same), then
    TEST_FRACTION of each as test; both class-stratified draws of their own seeded streams."""
    per_class = min(PER_CLASS, int(np.bincount(labels, minlength=num_classes).min()))
    kept = pick_subset(labels, per_class * num_classes, seed, STREAM_TRAIN_SUBSET)
    test = kept[pick_subset(labels[kept], round(TEST_FRACTION * per_class) * num_classes, seed, STREAM_TEST_SUBSET)]
    return np.setdiff1d(kept, test), test


def task_source(out, name: str, categories, seed: int, directory) -> tuple[list[str], Path, dict]:
    """(category names, output folder, the categories' quotes as read) of ``peftlab data fortunes-<name>``, whose
    folder defaults to <data cache>/fortunes/<name>; its arguments checked first."""
    names = parse_categories(categories)
    if seed < 0:
        raise UserError(f"seed {seed}: expected an integer >= 0")
    folder = Path(out) if out is not None else writable_cache_dir(cache_dir("fortunes")) / name
    check_output(folder.parent, True, f"fortunes-{name} output's parent folder")
    return names, folder, read_categories(fortunes_dir(directory), names)


def write_fortunes_task(
    out: str | Path | None = None, categories=None, seed: int = 0, directory: str | Path | None = None
) -> FortunesOutput:
    """Write the task folder ``out`` (default: <data cache>/fortunes/task): train.jsonl and test.jsonl,
    rows {"text": quote, "label": category}, and manifest.json. ``categories``: names ("a,b,c" or a
    sequence), or None for DEFAULT_CATEGORIES."""
    names, folder, read = task_source(out, "task", categories, seed, directory)
    texts, labels, dropped = task_quotes(read)
    counts = np.bincount(labels, minlength=len(names))
    if counts.min() < MIN_PER_CLASS:
        small = ", ".join(f"{name} {n}" for name, n in zip(names, counts.tolist(), strict=True) if n < MIN_PER_CLASS)
        raise DataError(
            f"fortune categories with fewer than {MIN_PER_CLASS} quotes of at most {MAX_CHARS} characters: "
            f"{small}; choose others with --categories"
        )
    train, test = task_splits(labels, len(names), seed)
    files, per_split = {}, {}
    for split, index in (("train", train), ("test", test)):
        rows = [json.dumps({"text": texts[i], "label": names[labels[i]]}, ensure_ascii=False) + "\n" for i in index]
        files[f"{split}.jsonl"] = "".join(rows).encode()
        per_split[split] = dict(zip(names, np.bincount(labels[index], minlength=len(names)).tolist(), strict=True))
    manifest = {
        "format": MANIFEST_FORMAT,
        "what": "fortunes-task",
        "categories": list(names),
        "seed": seed,
        "max_chars": MAX_CHARS,
        "per_class": int(len(train) + len(test)) // len(names),
        "test_fraction": TEST_FRACTION,
        "sizes": {"train.jsonl": len(train), "test.jsonl": len(test)},
        "per_split": per_split,
        "dropped": dropped,
        "sources": {name: category.sha256 for name, category in read.items()},
    }
    return write_folder(folder, files, manifest, f"seed {seed}, categories {','.join(names)}")


def task_record(folder: Path) -> dict:
    """What the task folder ``folder`` holds, as its manifest.json says, for the run's record (provenance.data.task):
    ``{"what": "fortunes-task", "categories": [...]}`` for a folder ``write_fortunes_task`` wrote (``what``
    fortunes-dialogue for ``dialogue.write_fortunes_dialogue``'s), else {}."""
    manifest = read_json(folder / MANIFEST)
    categories = manifest.get("categories") if isinstance(manifest, dict) else None
    what = manifest.get("what") if isinstance(manifest, dict) else None
    if what not in ("fortunes-task", "fortunes-dialogue") or not isinstance(categories, list):
        return {}
    return {"what": what, "categories": [str(name) for name in categories]}


def write_fortunes_corpus(
    out: str | Path | None = None, task_categories=None, directory: str | Path | None = None
) -> FortunesOutput:
    """Write the corpus folder ``out`` (default: <data cache>/fortunes/corpus): corpus.txt, every
    English quote of the categories other than ``task_categories`` (None: DEFAULT_CATEGORIES) and
    NOT_IN_CORPUS, one a line, each once, in the categories' sorted order; none that a task category
    also holds, so a model pretrained on it never saw a test quote. And manifest.json."""
    excluded = parse_categories(task_categories)
    folder = Path(out) if out is not None else writable_cache_dir(cache_dir("fortunes")) / "corpus"
    check_output(folder.parent, True, "fortunes-corpus output's parent folder")
    directory = fortunes_dir(directory)
    names = [name for name in list_categories(directory) if name not in excluded and name not in NOT_IN_CORPUS]
    if not names:
        raise DataError(f"no English fortune category in {shown_path(directory)} besides the task's; {HOW_TO_GET}")
    task = read_categories(directory, excluded)
    in_task = {quote for category in task.values() for quote in category.quotes}
    read = read_categories(directory, names)
    lines, seen, per_category, dropped = [], set(), {}, {"in_a_task_category": 0, "repeated": 0}
    for name, category in read.items():
        per_category[name] = 0
        for quote in category.quotes:
            if quote in in_task:  # cookie repeats quotes of computers, politics and science
                dropped["in_a_task_category"] += 1
            elif quote in seen:
                dropped["repeated"] += 1
            else:
                seen.add(quote)
                lines.append(quote + "\n")
                per_category[name] += 1
    text = "".join(lines).encode()
    # the same quotes as a language model's data (data.name: text): a seeded few held out to measure perplexity
    held_out = np.zeros(len(lines), dtype=bool)
    held_out[np.random.default_rng(CORPUS_SPLIT_SEED).permutation(len(lines))[:CORPUS_TEST_QUOTES]] = True
    splits = {
        split: "".join(json.dumps({"text": line[:-1]}) + "\n" for line, out in zip(lines, held_out) if out == test)
        for split, test in (("train", False), ("test", True))
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "what": "fortunes-corpus",
        "excluded_categories": list(excluded),
        "quotes": len(lines),
        "characters": sum(len(line) - 1 for line in lines),
        "bytes": len(text),
        "per_category": per_category,
        "dropped": dropped,
        "sha256": hashlib.sha256(text).hexdigest(),
        "sources": {name: category.sha256 for name, category in {**read, **task}.items()},
        "split": {"seed": CORPUS_SPLIT_SEED, "train": int((~held_out).sum()), "test": int(held_out.sum())},
    }
    files = {"corpus.txt": text, "train.jsonl": splits["train"].encode(), "test.jsonl": splits["test"].encode()}
    return write_folder(folder, files, manifest, f"excluding {','.join(excluded)}")


def write_folder(folder: Path, files: dict[str, bytes], manifest: dict, arguments: str) -> FortunesOutput:
    """``files`` and manifest.json (last) into a hidden folder beside ``folder``, renamed to it when
    complete; nothing when ``folder`` already holds this manifest."""
    sizes = manifest.get("sizes") or {name: data.count(b"\n") for name, data in files.items()}
    leftovers = sorted(folder.parent.glob(f".{folder.name}.*.tmp"))
    if already_there(folder, manifest, arguments):
        return FortunesOutput(folder, sizes, False, leftovers)
    tmp = folder.parent / f".{folder.name}.{secrets.token_hex(6)}.tmp"
    try:
        tmp.mkdir()
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        write_json_atomic(tmp / MANIFEST, manifest)
        try:
            os.rename(tmp, folder)
        except OSError:  # another writer finished first: its folder is fine if it is this one
            if not already_there(folder, manifest, arguments):
                raise
            return FortunesOutput(folder, sizes, False, leftovers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return FortunesOutput(folder, sizes, True, leftovers)


def already_there(folder: Path, manifest: dict, arguments: str) -> bool:
    """True when ``folder`` holds this output; False when it does not exist or is empty; a UserError
    line otherwise."""
    if not os.path.lexists(folder) or (folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir())):
        return False  # an empty folder is replaced by the rename
    found = read_json(folder / MANIFEST) if folder.is_dir() else None
    if found == manifest:
        return True
    what = manifest["what"]
    if found and found.get("what") == what:
        differs = ", ".join(key for key in manifest if found.get(key) != manifest[key])
        held = f"a {what} written with other arguments or files (its {MANIFEST} differs in {differs})"
    else:
        held = "something else"
    raise UserError(
        f"{shown_path(folder)} already holds {held}, not this one ({arguments}); "
        "choose another --out folder, or delete it"
    )


def command_arguments(folder: str | Path) -> list[str] | None:
    """The arguments of ``peftlab data`` (``--out`` left out) that write the task or corpus in ``folder`` again,
    read from its manifest.json (the same arguments and Debian's files write the same bytes); None where
    ``folder`` holds neither."""
    manifest = read_json(Path(folder) / MANIFEST) or {}
    what = manifest.get("what")
    names = manifest.get("categories" if what in ("fortunes-task", "fortunes-dialogue") else "excluded_categories")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.isprintable() for n in names):
        return None
    if what in ("fortunes-task", "fortunes-dialogue") and type(manifest.get("seed")) is int:
        return [what, "--seed", str(manifest["seed"]), "--categories", ",".join(names)]
    if manifest.get("what") == "fortunes-corpus":
        return ["fortunes-corpus", "--categories", ",".join(names)]
    return None
