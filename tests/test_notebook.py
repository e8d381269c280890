"""examples/default_study.ipynb runs through a real Jupyter kernel (nbclient, ipykernel) on a small real study made
here by ``peftlab study`` (the default study takes 15 minutes): every cell runs without error and shows the study's
numbers, computed here from its run files with scipy, its figure, the best run loaded back and its predictions,
which are the loaded model's answers on the run's own test tensors."""

import json
import math
import os
import statistics
from pathlib import Path

import pytest
import yaml
from testkit import REPO, TINY_MODEL, needs_fashion_mnist, run_cli

NOTEBOOK = REPO / "examples" / "default_study.ipynb"
SEEDS = 2
BASE = {
    "model": TINY_MODEL,
    "method": {"name": "lora", "r": 2},
    "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32},
    "train": {"max_steps": 3, "batch_size": 16, "lr": 1e-2},
}

pytestmark = [pytest.mark.e2e, needs_fashion_mnist()]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """A real study of the default's shape, small: a linear probe and LoRA, two seeds each, on Fashion-MNIST."""
    root = tmp_path_factory.mktemp("notebook")
    (root / "base.yaml").write_text(yaml.safe_dump(BASE))
    study = {"name": "nb", "base": "base.yaml", "seeds": SEEDS, "methods": {"linear": {}, "lora": {}}}
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    done = run_cli("study", str(root / "study.yaml"), "--study-dir", str(root / "study"), "--quiet", cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "study"


def executed(study_dir: Path, monkeypatch) -> list[dict]:
    """The notebook's cells after a real kernel ran them from examples/, the study given as PEFTLAB_STUDY_DIR."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("PEFTLAB_STUDY_DIR", str(study_dir))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # a cell that raises raises CellExecutionError here, naming the cell and its traceback
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def text_of(cell: dict) -> str:
    """What a cell printed (its stdout) and the text of what it showed; not the libraries' warnings on stderr."""
    return "".join(
        (output["text"] if output["name"] == "stdout" else "")
        if output["output_type"] == "stream"
        else output.get("data", {}).get("text/plain", "")
        for output in cell.get("outputs", [])
    )


def runs_of(study_dir: Path) -> list[tuple[dict, dict]]:
    """(spec.json, result.json) of each run, read as files."""
    runs = []
    for run_dir in sorted((study_dir / "runs").iterdir()):
        runs.append(tuple(json.loads((run_dir / name).read_text()) for name in ("spec.json", "result.json")))
    return runs


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and Student-t 95% interval of the mean, cut to 0..1."""
    from scipy import stats

    mean = statistics.mean(values)
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def test_the_example_notebook_runs_through_a_kernel_and_shows_the_studys_numbers(study_dir, monkeypatch):
    import torch

    import peftlab
    from peftlab.config.schema import load_config
    from peftlab.data.inputs import build_splits
    from peftlab.models.backbones import model_inputs

    cells = executed(study_dir, monkeypatch)
    setup, results, summary, figure, loaded, predicted = cells
    assert text_of(setup) == f"study: {study_dir}\n"
    runs = runs_of(study_dir)
    assert len(runs) == 2 * SEEDS and all(result["status"] == "completed" for _, result in runs)
    assert text_of(results).startswith(f"{len(runs)} runs: {len(runs)} completed\n")

    lines = text_of(summary).splitlines()
    assert len(lines) == 2
    for variant in ("linear", "lora"):
        top1 = [result["metrics"]["test_top1"] for spec, result in runs if spec["variant"] == variant]
        mean, low, high = interval(top1)
        expected = f"{variant:<20} {100 * mean:6.2f}%  [{100 * low:.2f}, {100 * high:.2f}]  n={SEEDS}"
        assert expected in lines, (expected, lines)

    assert any("image/png" in output.get("data", {}) for output in figure["outputs"])

    best_spec, best = max(runs, key=lambda run: run[1]["metrics"]["test_top1"])
    shown = text_of(loaded)
    assert shown.startswith("loaded ") and f"test top-1 {100 * best['metrics']['test_top1']:.2f}%" in shown
    run_id = shown.split()[1]
    run_dir = study_dir / "runs" / run_id
    assert json.loads((run_dir / "result.json").read_text())["metrics"]["test_top1"] == best["metrics"]["test_top1"]

    # the notebook's predictions are the loaded run's answers on its own test tensors (the recipe's arrays, not
    # the PNG files the notebook wrote)
    cfg = load_config(run_dir / "config.yaml")
    test = build_splits(cfg.data, model_inputs(cfg.model)).test
    images, labels = test.get_batch(torch.arange(6))
    with torch.no_grad():
        answers = peftlab.load_trained(run_dir).model.eval()(images).argmax(-1).tolist()
    names = json.loads((run_dir / "result.json").read_text())["provenance"]["data"]["class_names"]
    lines = text_of(predicted).splitlines()
    assert len(lines) == 6
    for line, label, answer in zip(lines, labels.tolist(), answers, strict=True):
        assert line.startswith(f"true {names[label]:<12} predicted {names[answer]} "), (line, names[answer])
    # tqdm.auto draws widgets in a kernel: with ipywidgets installed (the notebook extra) no bar falls back with
    # "IProgress not found" on stderr
    stderr = "".join(
        output.get("text", "")
        for cell in cells
        for output in cell.get("outputs", [])
        if output["output_type"] == "stream" and output["name"] == "stderr"
    )
    assert "IProgress not found" not in stderr, stderr[-2000:]
