"""Per-class accuracy and the confusion matrix (issue 72: the report fits a custom study). A real tiny study (the
tiny ViT, an image folder of three named classes, two configurations x two seeds, two steps each): each run's
result.json counts its test split per class, and those counts are the confusion matrix of the trained model's own
predictions, recomputed here with numpy; the report shows each class's accuracy per configuration and a confusion
matrix figure; a study whose result.json files lack the record (a peftlab before it) reports without it."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from testkit import TINY_MODEL

import peftlab
from peftlab.analysis.report.build import write_report
from peftlab.analysis.results.load import load_results, results_sha256
from peftlab.analysis.results.per_class import counts_of, load_per_class
from peftlab.data.synthetic import write_jpeg_folder

# reads the report's text and files, the confusion matrix's drawn: the other figures written empty (conftest.py)
FIGURES_DRAWN = ("confusion_matrix",)

CLASSES = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The study's folder, its runs done and its report written."""
    root = tmp_path_factory.mktemp("per_class")
    write_jpeg_folder(root / "images", n_train=24, size=32, classes=3, n_test=12, class_colour=0.1)
    for split in ("train", "test"):  # the classes named as a researcher's folder names them
        for i, name in enumerate(CLASSES):
            (root / "images" / split / f"class{i}").rename(root / "images" / split / name)
    run = {
        "name": "tiny",
        "model": TINY_MODEL,
        "method": {"name": "lora", "r": 2},
        "data": {"name": "imagefolder", "root": "images"},
        "train": {"max_steps": 2, "batch_size": 8, "lr": 0.01},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(run))
    plan = {"name": "classes", "base": str(root / "run.yaml"), "seeds": 2, "methods": {"linear": {}, "lora": {}}}
    (root / "study.yaml").write_text(yaml.safe_dump(plan))
    summary = peftlab.run_study(root / "study.yaml", root / "out", report=True)
    assert summary.ok and len(summary.completed) == 4
    return root / "out"


def run_dirs(study: Path) -> list[Path]:
    return sorted(p for p in (study / "runs").iterdir() if (p / "result.json").is_file())


@pytest.mark.e2e
def test_the_counts_are_the_confusion_matrix_of_the_trained_models_predictions(study):
    """Each run's test images classified by the trained model as `peftlab predict` rebuilds it, the confusion
    matrix counted with numpy: result.json's per_class holds exactly it, and its margins and diagonal."""
    test = study.parent / "images" / "test"
    for run_dir in run_dirs(study):
        record = json.loads((run_dir / "result.json").read_text())
        assert record["provenance"]["data"]["class_names"] == CLASSES
        predictions = peftlab.predict(run_dir, test, top_k=1)
        assert len(predictions) == 12
        true = [CLASSES.index(Path(p["image"]).parent.name) for p in predictions]
        predicted = [p["top_k"][0]["index"] for p in predictions]
        matrix = np.zeros((3, 3), dtype=int)
        np.add.at(matrix, (true, predicted), 1)
        per_class = record["per_class"]
        assert per_class["confusion"] == matrix.tolist(), run_dir.name
        assert per_class["labelled"] == matrix.sum(axis=1).tolist() == [4, 4, 4]
        assert per_class["predicted"] == matrix.sum(axis=0).tolist()
        assert per_class["correct"] == np.diag(matrix).tolist()
        assert sum(per_class["correct"]) / 12 == pytest.approx(record["metrics"]["test_top1"])


@pytest.mark.e2e
def test_the_report_shows_each_classs_accuracy_and_a_confusion_matrix_figure(study):
    report = (study / "report" / "report.md").read_text()
    assert "\n- datasets: images (imagefolder)\n" in report  # the user's folder by its name, not the format alone
    section = report.split("## Per-class accuracy\n", 1)[1].split("\n## ", 1)[0]
    assert "(figures/confusion_matrix.png)" in section and "2 seeds" in section
    for name in ("confusion_matrix.png", "confusion_matrix.pdf"):
        assert (study / "report" / "figures" / name).stat().st_size > 0
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert set(CLASSES) <= set(rows) and rows["class"].split(" | ")[2:] == ["linear", "lora |"]
    results = load_per_class(study)
    for name in CLASSES:  # the mean over seeds of correct / labelled, in %, per configuration
        runs = results.runs[results.runs["name"] == name]
        means = (runs["correct"] / runs["labelled"]).groupby(runs["variant"]).mean()
        cells = [c.strip(" |") for c in rows[name].split(" | ")[1:]]
        assert cells == ["4", f"{100 * means['linear']:.1f}", f"{100 * means['lora']:.1f}"]
    table = pd.read_csv(study / "report" / "tables" / "per_class_accuracy.csv")
    assert list(table["class"]) == CLASSES


def without_per_class(study: Path, destination: Path, runs: int | None = None) -> Path:
    """A copy of the study whose first ``runs`` result.json files (all: None) lack per_class, as a peftlab
    before the record wrote them; its report folder left behind."""
    shutil.copytree(study, destination, ignore=shutil.ignore_patterns("report"))
    for run_dir in run_dirs(destination)[:runs]:
        record = json.loads((run_dir / "result.json").read_text())
        del record["per_class"]
        (run_dir / "result.json").write_text(json.dumps(record))
    return destination


@pytest.mark.e2e
def test_a_study_whose_runs_lack_the_record_reports_without_it(study, tmp_path):
    old = without_per_class(study, tmp_path / "old")
    assert len(load_results(old)) == 4 and len(results_sha256(old)) == 64
    report = write_report(old).read_text()
    section = report.split("## Per-class accuracy\n", 1)[1].split("\n## ", 1)[0]
    assert section.strip() == "Per-class counts were not recorded: no run's result.json holds them (`per_class`)."
    assert not list((old / "report" / "figures").glob("confusion_matrix*"))


@pytest.mark.e2e
def test_runs_without_the_record_beside_runs_with_it_are_named_and_left_out(study, tmp_path):
    mixed = without_per_class(study, tmp_path / "mixed", runs=1)
    report = write_report(mixed).read_text()
    section = report.split("## Per-class accuracy\n", 1)[1].split("\n## ", 1)[0]
    assert "Left out: 1 run (" in section and "records no per-class counts" in section
    assert (mixed / "report" / "figures" / "confusion_matrix.png").is_file()


@pytest.mark.e2e
def test_a_changed_record_changes_the_results_hash_and_an_unchanged_one_keeps_it(study, tmp_path):
    """The results hash is the run files' SHA-256: the per-class record is part of it, as every key of result.json."""
    copy = shutil.copytree(study, tmp_path / "copy")
    assert results_sha256(copy) == results_sha256(study)
    assert results_sha256(without_per_class(study, tmp_path / "old")) != results_sha256(study)


@pytest.mark.parametrize(
    "record",
    [
        None,
        "abc",
        {"labelled": [1, 2], "predicted": [2, 1], "correct": [1]},  # lengths differ
        {"labelled": [1, 2], "predicted": [2, 1], "correct": [2, 1], "confusion": None},  # more correct than labelled
        {"labelled": [1, 2], "predicted": [2, 1], "correct": [1, 1], "confusion": [[1, 0]]},  # not square
        {"labelled": [1, True], "predicted": [2, 1], "correct": [1, 1], "confusion": None},
        {"labelled": [1, -2], "predicted": [2, 1], "correct": [1, 1], "confusion": None},
    ],
)
def test_a_damaged_record_is_not_read(record):
    assert counts_of(record) is None
    assert counts_of({"labelled": [1, 2], "predicted": [2, 1], "correct": [1, 1], "confusion": [[1, 0], [1, 1]]})


def test_with_many_classes_the_table_shows_those_whose_accuracy_differs_most():
    from peftlab.analysis.report.per_class import TABLE_CLASSES, chosen_classes

    classes = TABLE_CLASSES + 10
    same = np.full(classes, 0.5)
    apart = same.copy()
    apart[[3, 17, 25]] = [0.9, 0.1, 0.4]  # the ranges 0.4, 0.4, 0.1: the largest first
    shown, sentence = chosen_classes(pd.DataFrame({"lora": same, "full": apart}))
    assert len(shown) == TABLE_CLASSES and {3, 17, 25} <= set(shown) and shown == sorted(shown)
    assert f"Of the {classes} classes" in sentence and "differs most between configurations" in sentence
    alone, sentence = chosen_classes(pd.DataFrame({"lora": np.linspace(1, 0, classes)}))
    assert alone == list(range(10, classes)) and "of lowest accuracy" in sentence
    assert chosen_classes(pd.DataFrame({"lora": same[:TABLE_CLASSES]})) == (list(range(TABLE_CLASSES)), "")


def test_a_study_of_many_classes_shows_the_classes_that_differ_and_says_there_is_no_matrix(tmp_path):
    """A hand-written study of 120 classes (beyond CONFUSION_MAX_CLASSES: no matrix recorded), one run's record
    damaged: the table shows 20 classes, the section says why no figure, and names the damaged run."""
    from studyfiles import write_study_dir

    study = write_study_dir(tmp_path / "many", with_failure=False)
    classes = 120
    for number, path in enumerate(sorted(study.glob("runs/*/result.json"))):
        result = json.loads(path.read_text())
        labelled = [5] * classes
        correct = [(number + i) % 6 if i < 30 else 5 for i in range(classes)]  # classes 30 on: all right everywhere
        predicted = correct[:]  # the margins play no part in the section
        result["per_class"] = {"labelled": labelled, "predicted": predicted, "correct": correct, "confusion": None}
        result["provenance"]["data"] = {"class_names": [f"species {i}" for i in range(classes)]}
        if number == 0:
            result["per_class"]["correct"][0] = 6  # more right than there are
        path.write_text(json.dumps(result))
    report = write_report(study).read_text()
    section = report.split("## Per-class accuracy\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| species ")]
    assert len(rows) == 20 and all(int(row.split()[2]) < 30 for row in rows)
    assert "Of the 120 classes the table shows the 20 whose accuracy differs most" in section
    assert "No confusion matrix: result.json records one up to 100 classes, and these runs have 120." in section
    assert "Left out: 1 run (full-s0), whose `per_class` is damaged" in section
    assert len(pd.read_csv(study / "report" / "tables" / "per_class_accuracy.csv")) == 120


def test_any_class_name_is_drawn_as_itself_or_as_its_code(tmp_path):
    """A class named with a right-to-left override, CJK or an emoji (issue 78): the confusion-matrix figure draws
    each glyph from a font that has it (the installed fallback families) or shows its code, never an empty box
    (matplotlib's 'Glyph ... missing' warning, an error here) and never the rest of the name reversed."""
    import warnings

    import matplotlib.text

    from peftlab.analysis.figures.glyphs import figure_families
    from peftlab.analysis.figures.per_class import plot_confusion_matrices

    names = ["cat\u202edog", "\u732b", "\U0001f600 grin", "\U0001f642 smile", "r=$4$"]
    matrix = np.eye(len(names), dtype=int) * 3 + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a glyph no font has: matplotlib warns, then draws a box
        png, pdf = plot_confusion_matrices({"lora \U0001f642": matrix}, names, tmp_path)
    assert png.stat().st_size > 0 and pdf.read_bytes().startswith(b"%PDF")
    families, covered = figure_families()
    assert families[0] == "DejaVu Sans" and len(set(families)) == len(families)

    def shown(name: str) -> str:
        return "".join(c if ord(c) in covered and c != "\u202e" else f"\\u{ord(c):04x}" for c in name)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from peftlab.analysis.figures.style import save_figure

    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(matrix)
    ax.set_xticks(range(len(names)), names, parse_math=False)
    ax.set_title("lora \U0001f642")
    save_figure(fig, tmp_path, "names")
    drawn = [label.get_text() for label in ax.get_xticklabels()]
    assert drawn == [shown(name) for name in names]
    assert drawn[0] == "cat\\u202edog" and drawn[4] == "r=$4$"  # as written, dollars too: no mathtext here
    assert ax.title.get_text() == shown("lora \U0001f642")
    # mathtext draws the text around its math in the default font alone: a glyph only a fallback has is a code there
    fig = Figure()
    FigureCanvasAgg(fig)
    fig.subplots().set_title("\u732b $r$ \u00e9")
    save_figure(fig, tmp_path, "math")
    assert fig.axes[0].title.get_text() == "\\u732b $r$ \u00e9"
    assert all(list(t.get_fontfamily()) == list(families) for t in fig.findobj(matplotlib.text.Text) if t.get_text())
