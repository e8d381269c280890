"""Text classification data: ``data.name: text`` (a folder of JSONL, CSV or TSV files) and
``glue/<task>`` in GLUE's release layout.

Texts, pairs and labels are read as written; GLUE's dev.tsv is the test split and val is carved
from train.tsv; every bad file is one DataError line naming the file and the line."""

import hashlib
import json
import os

import numpy as np
import pytest

from peftlab.config.checks import GLUE_TASKS
from peftlab.config.schema import load_config
from peftlab.data.build import check_images, describe_data
from peftlab.data.text.glue import GLUE, GLUE_METRIC
from peftlab.data.text.tasks import TextSamples, is_text_dataset, load_text_splits
from peftlab.utils.errors import ConfigError, DataError

# GLUE's release formats: a header where the task has one (CoLA has none), tab-separated, no quoting
SST2 = "sentence\tlabel\n" + "".join(f'a "quoted" film number {i} \t{i % 2}\n' for i in range(20))
COLA = "".join(f"gj04\t{i % 2}\t{'' if i % 2 else '*'}\tSentence {i} they're here.\n" for i in range(20))
MRPC = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + "".join(
    f"{i % 2}\t{100 + i}\t{200 + i}\tFirst {i}.\tSecond {i}.\n" for i in range(20)
)
RTE = "index\tsentence1\tsentence2\tlabel\n" + "".join(
    f"{i}\tPremise {i}.\tHypothesis {i}.\t{'not_entailment' if i % 2 else 'entailment'}\n" for i in range(20)
)
QNLI = "index\tquestion\tsentence\tlabel\n" + "".join(
    f"{i}\tWhy {i}?\tBecause {i}.\t{'not_entailment' if i % 2 else 'entailment'}\n" for i in range(20)
)
RELEASE = {"sst2": SST2, "cola": COLA, "mrpc": MRPC, "rte": RTE, "qnli": QNLI}


def glue_root(tmp_path, task, train=None, dev=None):
    """A GLUE folder with one task; dev.tsv is the first 7 rows of train's format."""
    text = RELEASE[task]
    lines = text.splitlines(keepends=True)
    header = lines[:1] if GLUE[task].has_header else []
    folder = tmp_path / "glue" / GLUE[task].folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text(train if train is not None else text)
    (folder / "dev.tsv").write_text(dev if dev is not None else "".join(header + lines[len(header) : len(header) + 7]))
    (folder / "test.tsv").write_text("index\tsentence\n0\thidden\n")
    return tmp_path / "glue"


def data_cfg(*overrides):
    return load_config(None, list(overrides)).data


def glue(tmp_path, task, *overrides, **files):
    return load_text_splits(
        data_cfg(f"data.name=glue/{task}", f"data.root={glue_root(tmp_path, task, **files)}", *overrides)
    )


def test_every_glue_task_is_a_dataset_name_with_a_format_and_a_metric():
    assert set(GLUE) == set(GLUE_TASKS) == set(GLUE_METRIC)
    assert GLUE_METRIC["cola"] == "matthews" and GLUE_METRIC["mrpc"] == "f1" and GLUE_METRIC["sst2"] == "accuracy"
    assert all(is_text_dataset(f"glue/{t}") for t in GLUE) and is_text_dataset("text")
    assert not is_text_dataset("cifar10") and not is_text_dataset("glue/wnli")
    with pytest.raises(
        ConfigError,
        match=r"^data.name='glue/wnli' is invalid: .*text, instructions, glue/<sst2\|mrpc\|rte\|cola\|qnli>",
    ):
        data_cfg("data.name=glue/wnli", "data.root=/x")


@pytest.mark.parametrize("task", sorted(GLUE_TASKS))
def test_a_glue_task_reads_train_minus_val_and_dev_as_the_test_split(tmp_path, task):
    splits, info = glue(tmp_path, task, "data.val_fraction=0.25")
    assert info.split_sizes == {"train": 15, "val": 5, "test": 7} and info.num_classes == 2
    assert sorted(info.sha256) == [f"{GLUE[task].folder}/dev.tsv", f"{GLUE[task].folder}/train.tsv"]
    train_file = tmp_path / "glue" / GLUE[task].folder / "train.tsv"
    assert info.sha256[f"{GLUE[task].folder}/train.tsv"] == hashlib.sha256(train_file.read_bytes()).hexdigest()
    name = f"GLUE {GLUE[task].folder}"
    assert info.split_sources == {
        "train": f"{name} train.tsv minus val",
        "val": f"25% of {name} train.tsv (seed 0)",
        "test": f"{name} dev.tsv (the test labels are hidden)",
    }
    assert len(info.notes) == 1 and "test labels are hidden" in info.notes[0]
    assert splits["test"].labels.tolist() == [0, 1, 0, 1, 0, 1, 0]  # dev.tsv, in its order
    pair = task in ("mrpc", "rte", "qnli")
    assert all(len(t) == (2 if pair else 1) for split in splits.values() for t in split.texts)
    everything = sorted(splits["train"].texts + splits["val"].texts)
    assert len(set(everything)) == 20  # train and val partition train.tsv


def test_glue_texts_labels_and_class_names_are_the_releases(tmp_path):
    splits, info = glue(tmp_path, "sst2", "data.val_fraction=0")
    assert splits["train"].texts[0] == ('a "quoted" film number 0 ',)  # no quoting, no stripping
    assert info.class_names == ["negative", "positive"]
    splits, info = glue(tmp_path, "cola", "data.val_fraction=0")
    assert splits["train"].texts[1] == ("Sentence 1 they're here.",) and splits["train"].labels[:3].tolist() == [
        0,
        1,
        0,
    ]
    splits, info = glue(tmp_path, "mrpc", "data.val_fraction=0")
    assert splits["train"].texts[3] == ("First 3.", "Second 3.") and splits["train"].labels[3] == 1
    splits, info = glue(tmp_path, "rte", "data.val_fraction=0")
    assert info.class_names == ["entailment", "not_entailment"]  # HF's glue/rte order
    assert splits["train"].texts[1] == ("Premise 1.", "Hypothesis 1.") and splits["train"].labels[:2].tolist() == [0, 1]
    splits, _ = glue(tmp_path, "qnli", "data.val_fraction=0")
    assert splits["test"].texts[0] == ("Why 0?", "Because 0.")


def test_mrpc_with_a_byte_order_mark_reads_as_without(tmp_path):
    with_bom = "\ufeff" + MRPC
    splits, _ = glue(tmp_path, "mrpc", "data.val_fraction=0", train=with_bom)
    assert len(splits["train"]) == 20


def test_the_val_carved_from_train_is_the_same_for_the_same_seed_and_moves_with_it(tmp_path):
    first, _ = glue(tmp_path, "sst2", "data.split_seed=3")
    again, _ = glue(tmp_path, "sst2", "data.split_seed=3")
    other, _ = glue(tmp_path, "sst2", "data.split_seed=4")
    assert first["val"].texts == again["val"].texts and first["train"].texts == again["train"].texts
    assert first["val"].texts != other["val"].texts
    final, info = glue(tmp_path, "sst2", "data.trainval=true")
    assert info.split_sizes == {"train": 20, "val": 0, "test": 7}
    assert info.split_sources["val"] == "none: data.trainval trains on train + val"


def test_subsets_are_class_stratified_and_classes_relabel(tmp_path):
    splits, info = glue(tmp_path, "rte", "data.val_fraction=0", "data.train_subset=6", "data.test_subset=4")
    assert np.bincount(splits["train"].labels).tolist() == [3, 3] and np.bincount(splits["test"].labels).tolist() == [
        2,
        2,
    ]
    assert any("train_subset: kept 6 of 20" in note for note in info.notes)
    splits, info = glue(tmp_path, "rte", "data.classes=[1,0]")
    assert info.class_names == ["not_entailment", "entailment"]
    assert splits["test"].labels.tolist() == [1, 0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize(
    ("task", "files", "message"),
    [
        (
            "sst2",
            {"train": "text\tlabel\nx\t0\n"},
            r"train.tsv line 1: header 'text\|label': expected GLUE's SST-2 header",
        ),
        ("sst2", {"dev": "sentence\tlabel\nx\t2\n"}, r"dev.tsv line 2: label '2': expected one of 0, 1"),
        ("cola", {"train": "gj04\t1\t\tok\nnope\t1\n"}, r"train.tsv line 2: 2 fields: expected 4"),
        ("rte", {"train": "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tneutral\n"}, r"line 2: label 'neutral'"),
        (
            "mrpc",
            {"train": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"},
            r"train.tsv line 2: no rows after the header",
        ),
    ],
)
def test_a_glue_file_not_in_the_release_format_is_one_line_naming_it(tmp_path, task, files, message):
    with pytest.raises(DataError, match=message) as caught:
        glue(tmp_path, task, **files)
    assert "\n" not in str(caught.value) and GLUE[task].folder in str(caught.value)


def test_a_glue_root_without_the_task_folder_says_what_is_expected(tmp_path):
    with pytest.raises(DataError, match=r"holds no SST-2 folder: expected GLUE's layout .*/SST-2/\{train,dev\}.tsv"):
        load_text_splits(data_cfg("data.name=glue/sst2", f"data.root={tmp_path}"))
    root = glue_root(tmp_path, "sst2")
    cfg = data_cfg("data.name=glue/sst2", f"data.root={root / 'SST-2'}")
    assert describe_data(cfg).split_sizes["test"] == 7 and check_images(cfg) == (0, [])  # peftlab data info --check


def text_folder(tmp_path, fmt="jsonl", rows=None, val=False, pair=False):
    """A text folder: train.<fmt> (12 rows), test.<fmt> (4 rows), optionally validation.<fmt> (4 rows)."""
    folder = tmp_path / "texts"
    folder.mkdir(exist_ok=True)
    rows = rows or {"train": 12, "test": 4, **({"validation": 4} if val else {})}
    for split, n in rows.items():
        items = [
            {"text": f"{split} {i}", "label": i % 3, **({"second": f"pair {i}"} if pair else {})} for i in range(n)
        ]
        write_rows(folder / f"{split}.{fmt}", items, fmt)
    return folder


def write_rows(path, items, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(item) + "\n\n" for item in items))  # blank lines are skipped
    else:
        sep = "\t" if fmt == "tsv" else ","
        columns = list(items[0])
        lines = [sep.join(columns)] + [sep.join(str(item[c]) for c in columns) for item in items]
        path.write_text("\n".join(lines) + "\n")


def text_cfg(folder, *overrides):
    return data_cfg("data.name=text", f"data.root={folder}", *overrides)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv"])
def test_a_text_folder_reads_texts_integer_labels_and_pairs_in_each_format(tmp_path, fmt):
    folder = text_folder(tmp_path, fmt, pair=True)
    splits, info = load_text_splits(text_cfg(folder, "data.text_pair_column=second", "data.val_fraction=0.25"))
    assert info.split_sizes == {"train": 9, "val": 3, "test": 4} and info.class_names == ["0", "1", "2"]
    assert splits["test"].texts == [(f"test {i}", f"pair {i}") for i in range(4)]
    assert splits["test"].labels.tolist() == [0, 1, 2, 0] and splits["test"].labels.dtype == np.int64
    assert info.sha256 == {
        f"{s}.{fmt}": hashlib.sha256((folder / f"{s}.{fmt}").read_bytes()).hexdigest() for s in ("train", "test")
    }
    assert info.split_sources["val"] == f"25% of {folder / f'train.{fmt}'} (seed 0)"
    single, _ = load_text_splits(text_cfg(folder))
    assert single["test"].texts[0] == ("test 0",)


def test_a_validation_file_is_val_and_trainval_merges_it_into_train(tmp_path):
    folder = text_folder(tmp_path, val=True)
    splits, info = load_text_splits(text_cfg(folder))
    assert info.split_sizes == {"train": 12, "val": 4, "test": 4}
    assert info.split_sources["val"] == str(folder / "validation.jsonl") and "validation.jsonl" in info.sha256
    splits, info = load_text_splits(text_cfg(folder, "data.trainval=true"))
    assert info.split_sizes == {"train": 16, "val": 0, "test": 4}
    assert splits["train"].texts[-1] == ("validation 3",)
    assert info.split_sources["train"] == f"{folder / 'train.jsonl'} + {folder / 'validation.jsonl'}"


def test_string_labels_are_train_s_sorted_classes_and_an_unseen_one_names_its_line(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    names = ["pos", "neg", "neutral"]
    write_rows(folder / "train.csv", [{"text": f"t{i}", "label": names[i % 3]} for i in range(9)], "csv")
    write_rows(folder / "test.csv", [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}], "csv")
    splits, info = load_text_splits(text_cfg(folder))
    assert info.class_names == ["neg", "neutral", "pos"] and splits["test"].labels.tolist() == [2, 0]
    write_rows(folder / "test.csv", [{"text": "a", "label": "pos"}, {"text": "b", "label": "positive"}], "csv")
    with pytest.raises(DataError, match=r"test.csv line 3: label 'positive' is not a class of train.csv \(strings"):
        load_text_splits(text_cfg(folder))


def corrupt(folder, name, text):
    (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize(
    ("fmt", "name", "text", "message"),
    [
        (
            "jsonl",
            "train.jsonl",
            '{"text": "a", "label": 0}\n{"text": "b", "label": 1\n',
            r"train.jsonl line 2: not a JSON line",
        ),
        (
            "jsonl",
            "train.jsonl",
            '{"text": "a", "label": 0}\n[1, 2]\n',
            r"train.jsonl line 2: a JSON list: expected one object",
        ),
        ("jsonl", "test.jsonl", '{"text": 5, "label": 0}\n', r"test.jsonl line 1: 'text' is a int: expected a string"),
        ("jsonl", "test.jsonl", '{"txt": "a", "label": 0}\n', r"test.jsonl line 1: no key 'text'"),
        (
            "jsonl",
            "test.jsonl",
            '{"text": "a", "label": 1.0}\n',
            r"test.jsonl line 1: label float: expected an integer",
        ),
        (
            "jsonl",
            "test.jsonl",
            '{"text": "a", "label": 7}\n',
            r"test.jsonl line 1: label '7' is not a class of train.jsonl",
        ),
        (
            "jsonl",
            "train.jsonl",
            '{"text": "a", "label": -1}\n',
            r"train.jsonl line 1: label -1: expected one in 0..99999",
        ),
        ("jsonl", "test.jsonl", "\n\n", r"test.jsonl line 1: no JSON lines"),
        ("jsonl", "test.jsonl", "", r"test.jsonl is empty"),
        ("csv", "test.csv", "text,lab\na,0\n", r"test.csv line 1: no column 'label': the header has text, lab"),
        ("csv", "test.csv", "text,label\n", r"test.csv line 2: no rows after the header"),
        ("csv", "train.csv", "text,label\na,0\nb,1,2\n", r"train.csv line 3: 3 fields: expected 2"),
        ("tsv", "train.tsv", 'text\tlabel\n"a\tb\n', r"train.tsv line 2: not a TSV row"),
    ],
)
def test_each_bad_text_file_is_one_data_error_naming_the_file_and_line(tmp_path, fmt, name, text, message):
    folder = corrupt(text_folder(tmp_path, fmt), name, text)
    with pytest.raises(DataError, match=message) as caught:
        load_text_splits(text_cfg(folder))
    assert "\n" not in str(caught.value)


def test_a_text_folder_needs_one_train_and_one_test_file_of_one_format(tmp_path):
    folder = text_folder(tmp_path)
    (folder / "test.csv").write_text("text,label\na,0\n")
    with pytest.raises(DataError, match=r"test.jsonl and test.csv are both test files: expected one"):
        load_text_splits(text_cfg(folder))
    (folder / "test.jsonl").unlink()
    with pytest.raises(DataError, match=r"files of formats .csv, .jsonl: expected one format"):
        load_text_splits(text_cfg(folder))
    (folder / "test.csv").unlink()
    with pytest.raises(DataError, match=r"no test file: expected test.jsonl or test.csv or test.tsv"):
        load_text_splits(text_cfg(folder))
    (folder / "val.jsonl").write_text('{"text": "a", "label": 0}\n')
    (folder / "validation.jsonl").write_text('{"text": "a", "label": 0}\n')
    with pytest.raises(DataError, match=r"validation.jsonl and val.jsonl are both val files"):
        load_text_splits(text_cfg(tmp_path / "texts"))
    with pytest.raises(DataError, match=r"does not exist or is not a folder"):
        load_text_splits(text_cfg(tmp_path / "nowhere"))


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    folder = text_folder(tmp_path)
    (folder / "test.jsonl").unlink()
    os.mkfifo(folder / "test.jsonl")
    with pytest.raises(DataError, match=r"test.jsonl is a FIFO"):
        load_text_splits(text_cfg(folder))


def test_the_column_fields_are_for_text_only_and_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"^data.text_column='sentence' is invalid: expected 'text' unless data.name"):
        data_cfg("data.name=cifar10", "data.text_column=sentence")
    with pytest.raises(ConfigError, match=r"^data.text_pair_column='b' is invalid: expected null unless"):
        data_cfg("data.name=glue/rte", "data.root=/x", "data.text_pair_column=b")
    with pytest.raises(ConfigError, match=r"^data.label_column='' is invalid: expected a column name"):
        data_cfg("data.name=text", "data.root=/x", "data.label_column=")
    with pytest.raises(ConfigError, match=r"^data.text_pair_column='text' is invalid"):
        data_cfg("data.name=text", "data.root=/x", "data.text_pair_column=text")
    with pytest.raises(ConfigError, match=r"^data.root=None is invalid: expected a directory when data.name is 'text'"):
        data_cfg("data.name=text")


def test_empty_splits_after_data_classes_are_refused(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    write_rows(folder / "train.jsonl", [{"text": f"t{i}", "label": i % 3} for i in range(9)], "jsonl")
    write_rows(folder / "test.jsonl", [{"text": "a", "label": 2}], "jsonl")
    with pytest.raises(DataError, match=r"the test split is empty after data.classes"):
        load_text_splits(text_cfg(folder, "data.classes=[0,1]"))


def test_take_keeps_texts_and_labels_together():
    samples = TextSamples([("a",), ("b",), ("c",)], np.array([0, 1, 0], dtype=np.int64))
    taken = samples.take(np.array([2, 0]))
    assert taken.texts == [("c",), ("a",)] and taken.labels.tolist() == [0, 0] and len(taken) == 2


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_out_of_range_integer_label_is_refused_before_anything_is_sized_by_it(tmp_path, fmt):
    folder = text_folder(tmp_path, fmt)
    rows = [{"text": f"t{i}", "label": i % 3} for i in range(8)] + [{"text": "typo", "label": 15000}]
    write_rows(folder / f"train.{fmt}", rows, fmt)
    line = 10 if fmt == "csv" else 17  # a header first in CSV; a blank line after each JSONL row
    with pytest.raises(
        DataError, match=rf"train.{fmt} line {line}: label 15000 makes 15,001 classes, but it holds 4 labels"
    ):
        load_text_splits(text_cfg(folder))


def test_a_label_of_thousands_of_digits_is_one_line(tmp_path):
    folder = text_folder(tmp_path, "csv")
    write_rows(folder / "test.csv", [{"text": "a", "label": 0}, {"text": "b", "label": "9" * 5000}], "csv")
    with pytest.raises(DataError, match=r"test.csv line 3: a label of more than 9 digits"):
        load_text_splits(text_cfg(folder))


def test_a_text_is_cut_to_a_bound_of_characters_before_it_is_tokenized(monkeypatch):
    """A 10 MB line was tokenized whole (0.9 GB) and then cut to data.max_length tokens: now the tokenizer
    sees at most data.max_length x CHARS_PER_TOKEN characters of it, and the tokens kept are the same."""
    from testkit import text_tokenizer

    from peftlab.data.text import tokens as tokens_module

    tokenizer, seen = text_tokenizer(), []

    class Spy:
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, texts, *args, **kwargs):
            seen.extend(len(t) for t in ([texts] if isinstance(texts, str) else texts + (args[0] or [])))
            return tokenizer(texts, *args, **kwargs)

    long = " ".join(f"w{i % 60}" for i in range(400_000))  # 1.5 MB of words
    cfg = data_cfg("data.max_length=16")
    samples = TextSamples([(long,), ("w1 w2",)], np.array([0, 1]))
    dataset, cut = tokens_module.tokenize(samples, Spy(), cfg, "train", 64)
    assert cut == 1 and max(seen) <= 16 * tokens_module.CHARS_PER_TOKEN
    whole = tokenizer([long], truncation=True, max_length=16, padding="max_length")["input_ids"][0]
    assert dataset.tokens[0, 0].tolist() == whole
    seen.clear()
    lm, cut, _ = tokens_module.tokenize_for_lm(TextSamples([(long,)], np.array([0])), Spy(), cfg, "train", 64)
    assert cut == 1 and max(seen) <= 16 * tokens_module.CHARS_PER_TOKEN and len(lm) == 1
    with pytest.raises(DataError, match=r"data.truncation=false: train example 0 has 1,533,329 characters"):
        tokens_module.tokenize(samples, Spy(), data_cfg("data.max_length=16", "data.truncation=false"), "train", 64)


@pytest.mark.parametrize("fmt, row", [("jsonl", "{}\n"), ("csv", "a\n")])
def test_a_file_of_millions_of_bad_rows_is_refused_at_the_first_without_holding_them(tmp_path, fmt, row):
    """Rows are parsed and checked one at a time: every row of a 24 MB file held at once cost gigabytes."""
    import tracemalloc

    folder = text_folder(tmp_path, fmt)
    header = "text,label\n" if fmt == "csv" else ""
    (folder / f"train.{fmt}").write_text(header + row * (8 << 20))
    size = (folder / f"train.{fmt}").stat().st_size
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=f"train.{fmt} line {2 if fmt == 'csv' else 1}: "):
            load_text_splits(text_cfg(folder))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * size, f"{peak / 2**20:.0f} MiB at the peak for a file of {size / 2**20:.0f} MiB"


def test_data_info_check_of_a_text_folder_speaks_of_its_text_files(tmp_path, capsys):
    from peftlab.cli import main

    assert main(["data", "info", "text", "--root", str(text_folder(tmp_path)), "--check"]) == 0
    out = capsys.readouterr().out
    assert "checked   every text file, each line as a run reads it: none bad" in out and "image files" not in out
