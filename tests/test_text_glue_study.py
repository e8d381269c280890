"""configs/studies/glue_lora.yaml, the GLUE-style LoRA study of a decoder (issue 89): its runs as its header states
them, and a tiny copy of it (a 2-layer GPT-2, 144 examples a task in GLUE's layout) run end to end, whose accuracy,
F1 and Matthews correlation are recomputed here from the runs' own predictions with plain numpy, whose merge checks
hold, whose runs are tracked to TensorBoard and whose pairs are joined by the tokenizer's end-of-sequence token."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from testkit import REPO, TEXT_WORDS, hf_text_dir

from peftlab.analysis.stats.trial_predictions import read_predictions
from peftlab.study.runner import run_study
from peftlab.study.spec import load_study
from peftlab.training.run_result import read_result

STUDY = REPO / "configs" / "studies" / "glue_lora.yaml"
BASE = REPO / "configs" / "glue_downstream.yaml"


def test_the_study_file_runs_what_its_header_says():
    study = load_study(STUDY)
    runs = study.runs
    assert len(runs) == 42 and {r.seed for r in runs} == {0, 1, 2}
    assert {r.config.data.name for r in runs} == {"glue/rte", "glue/sst2"}  # a pair task, a single-sentence task
    assert {r.method for r in runs} == {"lora"} and all(r.config.track == ("tensorboard",) for r in runs)
    assert all(r.config.model.source == "hf-text" and r.config.data.pair_separator is None for r in runs)
    by_group = {}
    for run in runs:
        for group in run.groups:
            by_group.setdefault(group, set()).add(
                (run.config.method.r, run.config.method.lora_alpha, run.config.method.target_modules)
            )
    assert by_group["rank"] == {(4, 8, "standard"), (8, 16, "standard"), (16, 32, "standard")}
    assert by_group["alpha"] == {(8, 8, "standard"), (8, 16, "standard"), (8, 32, "standard")}
    assert {t for _, _, t in by_group["targets"]} == {"standard", "extended", "all-linear"}
    assert sorted(study.tune) == ["lora@glue/rte", "lora@glue/sst2"]


def write_glue(root, n_train: int = 120, n_dev: int = 24):
    """RTE and SST-2 in the layout of GLUE's download script, learnable in a few steps: a pair's label follows which
    half of the vocabulary its second sentence draws most words from, a sentence's likewise."""
    rng = np.random.default_rng(0)
    half = len(TEXT_WORDS) // 2

    def words(label: int, n: int) -> str:
        pool = TEXT_WORDS[label * half : (label + 1) * half]
        return " ".join(pool[rng.integers(half)] if rng.random() < 0.9 else rng.choice(TEXT_WORDS) for _ in range(n))

    for split, n in (("train", n_train), ("dev", n_dev)):
        pairs, sentences = ["index\tsentence1\tsentence2\tlabel"], ["sentence\tlabel"]
        for i in range(n):
            label = i % 2
            pairs.append(f"{i}\t{words(i // 2 % 2, 4)}\t{words(label, 5)}\t{('entailment', 'not_entailment')[label]}")
            sentences.append(f"{words(label, 6)}\t{label}")
        for folder, lines in (("RTE", pairs), ("SST-2", sentences)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The study file as it is but for its size: a tiny GPT-2 and GLUE copy, one seed, one learning rate to
    tune, a few steps, no ablations (the first test checks those in the file)."""
    root = tmp_path_factory.mktemp("glue-study")
    torch.manual_seed(0)  # the tiny GPT-2's random weights: not whatever the worker's earlier tests left the RNG at
    base = yaml.safe_load(BASE.read_text())
    base["model"] = {"source": "hf-text", "path": str(hf_text_dir(root / "gpt2", "gpt2", num_classes=2))}
    base["data"].update(root=str(write_glue(root / "glue")), max_length=32, val_fraction=0.25)
    base["train"].update(epochs=3, batch_size=10, eval_batch_size=64, lr=1e-2, warmup_ratio=0.0, log_every=2)
    (root / "base.yaml").write_text(yaml.safe_dump(base))
    study = yaml.safe_load(STUDY.read_text())
    study.update(base="base.yaml", seeds=[0])
    study.pop("ablations")
    study.pop("pretrain")  # the tiny GPT-2 is the base
    study["tune"]["axes"] = {"train.lr": [1e-2]}
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    summary = run_study(load_study(root / "study.yaml"), root / "out", workers=1, progress=False)
    assert summary.ok, summary.failed
    return root / "out"


def scores(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy, the F1 of class 1 and the Matthews correlation of two-class predictions, from their four counts."""
    tp = float(np.sum((labels == 1) & (predicted == 1)))
    tn = float(np.sum((labels == 0) & (predicted == 0)))
    fp = float(np.sum((labels == 0) & (predicted == 1)))
    fn = float(np.sum((labels == 1) & (predicted == 0)))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "top1": (tp + tn) / len(labels),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "matthews": (tp * tn - fp * fn) / denominator if denominator else 0.0,
    }


def from_confusion(confusion: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) with the counts of a confusion matrix (rows: true class, columns: predicted)."""
    cells = [(t, p, n) for t, row in enumerate(confusion) for p, n in enumerate(row)]
    return np.repeat([t for t, _, _ in cells], [n for *_, n in cells]), np.repeat(
        [p for _, p, _ in cells], [n for *_, n in cells]
    )


@pytest.mark.e2e
def test_a_tiny_copy_scores_what_its_predictions_say(tiny_study):
    trials = sorted(tiny_study.glob("tune/*/runs/*"))
    finals = sorted(tiny_study.glob("runs/*"))
    assert len(trials) == 2 and len(finals) == 2
    for trial in trials:  # validation: each example's label and prediction, kept by the trial
        predictions, metrics = read_predictions(trial), read_result(trial)["metrics"]
        recomputed = scores(predictions["label"], predictions["predicted"])
        assert len(predictions) == 30  # a quarter of 120 training examples
        assert recomputed["top1"] == pytest.approx(metrics["val_top1"], abs=1e-12)
        assert recomputed["f1"] == pytest.approx(metrics["val_f1"], abs=1e-12)
        assert recomputed["matthews"] == pytest.approx(metrics["val_matthews"], abs=1e-12)
    joins = {}
    for final in finals:  # test: the counts of every (label, prediction) the run recorded
        result = read_result(final)
        metrics, confusion = result["metrics"], result["per_class"]["confusion"]
        recomputed = scores(*from_confusion(confusion))
        assert sum(map(sum, confusion)) == 24
        assert recomputed["top1"] == pytest.approx(metrics["test_top1"], abs=1e-12)
        assert recomputed["f1"] == pytest.approx(metrics["test_f1"], abs=1e-12)
        assert recomputed["matthews"] == pytest.approx(metrics["test_matthews"], abs=1e-12)
        assert result["merge"]["ok"] and metrics["merged_test_top1"] is None  # an exact merge: checked, not tested
        # a study's run shares the machine: its merge checked, not timed (a run trained alone times it: test_train)
        assert "merged_vs_adapter_latency_ratio" not in result["merge"]
        assert any((final / "tensorboard").rglob("events.out.tfevents.*"))
        joins[result["config"]["data"]["name"]] = result["protocol"]["pair_join"]
    assert joins == {"glue/rte": "the tokenizer's end-of-sequence token </s>", "glue/sst2": None}
