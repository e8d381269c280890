"""Issue 73, item 3: words that fit the modality and the study. A text study's paper has no image protocol words,
no VTAB-1k counts in its card and no vision-PEFT survey in its introduction; its related work names prompt tuning
when it ran, its pretrained base is described as a vision study's is, its card states the subsets taken, a
percentage is printed as computed, and its comparison with the literature agrees with the table it prints."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_paper import macros
from test_report import write_study_dir

from peftlab.analysis.paper import build as paper

FIGURES_DRAWN = ()  # reads the papers' text: the figures' files written empty (conftest.py)

RUNS = [
    ("full", "full", 8, {0: 0.80, 1: 0.82, 2: 0.79}),
    ("lora r=8", "lora", 8, {0: 0.78, 1: 0.81, 2: 0.80}),
    ("adalora", "adalora", 8, {0: 0.77, 1: 0.79, 2: 0.78}),
    ("prompt", "prompt_tuning", 8, {0: 0.70, 1: 0.72, 2: 0.71}),
]
PROTOCOL = {
    "resolution": None,
    "interpolation": None,
    "normalization": None,
    "tokens": "at most 128 per example, the model's tokenizer; padding longest; longer examples cut",
    "pair_join": "the tokenizer's end-of-sequence token <|endoftext|>",  # GLUE MRPC's pairs, on a decoder
    "augmentation": "none",
    "epochs": 3,
    "steps": 90,
    "warmup": "0.1 of the steps, linear",
    "schedule": "cosine decay to 0",
    "batch_size": 32,
    "optimizer": "AdamW, weight decay 0.01",
    "train_split": "fortunes/train.jsonl minus val",
    "selection_split": "12.5% of fortunes/train.jsonl (seed 0)",
    "test_split": "fortunes/test.jsonl",
}


def text_study(root: Path) -> Path:
    """A sequence-classification study of a text model peftlab pretrained (its manifest in model.path), on
    subsets of 600 / 200 / 600 examples, with full fine-tuning, LoRA, AdaLoRA and prompt tuning."""
    study = write_study_dir(root, runs=RUNS, data="text")
    base = root / "fortunes-lm"
    base.mkdir()
    (base / "manifest.json").write_text(
        json.dumps({"data": {"name": "fortunes-corpus"}, "test_perplexity": 161.24, "train_seconds": 582.0})
    )
    for path in study.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        top1 = result["metrics"]["test_top1"]
        result["config"]["model"] = {"source": "hf-text", "path": str(base), "task": "classification"}
        result["config"]["data"].update(name="glue/mrpc", train_subset=600, val_subset=200, test_subset=600)
        result["metrics"].update(test_top5=None, test_f1=top1 + 0.05, test_matthews=2 * top1 - 1.1)
        result["protocol"] = PROTOCOL
        path.write_text(json.dumps(result))
    return study


@pytest.fixture(scope="module")
def text_paper(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    main = paper.write_paper(text_study(root / "study"), root / "paper", compile=False).read_text()
    return root / "paper", main, macros((root / "paper" / "results.tex").read_text())


def test_a_text_paper_has_no_vision_words(text_paper):
    out, main, _ = text_paper
    assert "xin2024visionpeftsurvey" not in main  # the vision-PEFT survey
    assert "input resolution and interpolation, normalization" not in main
    assert r"states how the final runs were made: the tokens each example was cut to, schedule" in main
    card = (out / "tables" / "protocol.tex").read_text()
    assert "VTAB-1k" not in card and "PETL" not in card


def test_the_protocol_card_states_the_subsets_taken(text_paper):
    out, _, _ = text_paper
    card = (out / "tables" / "protocol.tex").read_text()
    assert "then a class-stratified subset of 600 examples (data.train\\_subset)" in card
    assert "12.5\\% of fortunes/train.jsonl (seed 0); then a subset of 200 examples (data.val\\_subset)" in card
    assert "fortunes/test.jsonl; then a subset of 600 examples (data.test\\_subset)" in card


def test_related_work_names_prompt_tuning_when_it_ran(text_paper):
    _, main, _ = text_paper
    related = main[main.index(r"\section{Related work}") : main.index(r"\section{Setup}")]
    assert r"\citep{lester2021prompt}" in related and r"\citep{zhang2023adalora}" in related


def test_the_text_base_is_described(text_paper):
    _, main, defined = text_paper
    assert (
        r"The base weights were pretrained by peftlab as a causal language model, predicting the next token, on "
        r"\baseData{} (test perplexity \basePerplexity{} there, \baseTrainMinutes{} minutes of training)." in main
    )
    assert defined["basePerplexity"] == "161.2" and defined["baseData"] == r"\texttt{fortunes-corpus}"


def test_the_literature_comparison_agrees_with_its_table(text_paper):
    out, main, defined = text_paper
    table = (out / "tables" / "literature.tex").read_text()
    # a GLUE MRPC study: LoRA's MRPC rows, not AdaLoRA's, which were measured on MNLI (test_literature_rows.py)
    assert "MRPC (GLUE dev)" in table and "LoRA (lora) & 0.8M & 89.7" in table
    assert "MNLI" not in table and "AdaLoRA" not in table and "90.76" not in table
    assert "lora" in defined["ourOrder"] and "adalora" not in defined["ourOrder"]
    assert "adalora" in defined["ourOrderLeftOut"]  # no printed row of its method: left out of the order, and said so


def test_a_validation_share_is_printed_as_computed():
    from peftlab.data.build import split_sources

    sources = split_sources(SimpleNamespace(notes=[], source="x"), SimpleNamespace(val_fraction=0.125, split_seed=0))
    assert sources["val"] == "12.5% of the dataset's train split (seed 0)"


def test_methods_are_named_as_the_field_writes_them(text_paper):
    _, _, defined = text_paper
    assert defined["cfgMethods"] == "full fine-tuning, LoRA, AdaLoRA and prompt tuning"  # not adalora, prompt\_tuning


def test_the_separator_of_a_pair_task_is_named_where_the_data_is(text_paper):
    out, main, defined = text_paper
    assert r"The two texts of a sentence pair are joined by \cfgPairJoin{}." in main
    assert defined["cfgPairJoin"] == (
        r"the tokenizer's end-of-sequence token \textless{}\textbar{}endoftext\textbar{}\textgreater{}"
    )
    card = (out / "tables" / "protocol.tex").read_text()
    assert r"sentence pairs joined by & the tokenizer's end-of-sequence token \textless{}" in card
