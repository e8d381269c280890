"""examples/default_study.ipynb runs through a real Jupyter kernel (nbclient, ipykernel) from a temporary folder, as a
newcomer's copy would in a fresh clone, where the default base (the MNIST-pretrained ViT that ``make study`` caches) is
absent: ``PEFTLAB_BASE`` names a file that is not there. Its first and last cells say why the comparison on the base is
not shown, naming the file and the command that makes it; it writes the VTAB-style Fashion-MNIST task with ``peftlab
data vtab-demo``, trains one LoRA run with ``peftlab.train``, a small study with ``peftlab.run_study``, and shows its
numbers (computed here from its run files with scipy: the intervals and the paired test), its figure, the run read
back and its predictions (what ``peftlab.predict`` answers here). It uses only peftlab's public API, and its cells print
no progress bars. The base's path (a tuned study of 24 runs, minutes) is run by hand: docs/python-api.md."""

import json
import math
import os
import re
import shutil
import statistics
from pathlib import Path

import pytest
from testkit import REPO, needs_fashion_mnist

NOTEBOOK = REPO / "examples" / "default_study.ipynb"
SEEDS = 2

pytestmark = [pytest.mark.e2e, needs_fashion_mnist()]


def executed(folder: Path, study_dir: Path, base: Path, monkeypatch) -> list[dict]:
    """The notebook's cells after a real kernel ran a copy of it in ``folder``, the study given as PEFTLAB_STUDY_DIR
    and the base as PEFTLAB_BASE."""
    import nbformat
    from nbclient import NotebookClient

    shutil.copy(NOTEBOOK, folder / NOTEBOOK.name)
    monkeypatch.setenv("PEFTLAB_STUDY_DIR", str(study_dir))
    monkeypatch.setenv("PEFTLAB_BASE", str(base))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(folder / NOTEBOOK.name, as_version=4)
    client = NotebookClient(
        notebook, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    client.execute()  # a cell that raises raises CellExecutionError here, naming the cell and its traceback
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def text_of(cell: dict, stream: str = "stdout") -> str:
    """What a cell printed on ``stream``, and on stdout the text of its result (not of what it displayed)."""
    text = ""
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream" and output["name"] == stream:
            text += output["text"]
        elif output["output_type"] == "execute_result" and stream == "stdout":
            text += output["data"].get("text/plain", "")
    return text


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and Student-t 95% interval of the mean, cut to 0..1."""
    from scipy import stats

    mean = statistics.mean(values)
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def test_the_notebook_uses_only_the_public_api():
    import nbformat

    code = "\n".join(c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code")
    assert re.findall(r"\bpeftlab\.(\w+)", code) and all(
        name in __import__("peftlab").__all__ for name in re.findall(r"\bpeftlab\.(\w+)\(", code)
    )
    assert "from peftlab" not in code and not re.search(r"import peftlab\.", code)


def test_without_the_base_the_notebook_says_why_and_trains_what_it_shows(tmp_path, monkeypatch):
    from scipy import stats

    import peftlab

    study_dir, base = tmp_path / "study", tmp_path / "cache" / "model.safetensors"  # neither there
    cells = executed(tmp_path, study_dir, base, monkeypatch)
    setup, data, results, summary, paired, figure, loaded, predicted, exported, closing = cells
    why = (
        f"no comparison on the default base: {base} and {base.parent / 'manifest.json'} not found (`make study` or "
        "`peftlab pretrain configs/pretrain.yaml` in peftlab's checkout makes it, in minutes), so this notebook trains "
        "a small study from random weights instead, which shows the workflow, not what the methods reach"
    )
    assert text_of(setup) == f"{why}\nstudy: {study_dir}\n"
    assert text_of(closing) == f"{why}\n"  # the notebook ends saying why it shows no comparison on the base

    run = json.loads((tmp_path / "runs" / "notebook-run" / "result.json").read_text())
    assert run["status"] == "completed" and run["config"]["method"]["name"] == "lora"
    assert run["config"]["model"]["pretrained"] == "none"
    assert text_of(data).startswith(f"completed: test top-1 {100 * run['metrics']['test_top1']:.2f}%")

    runs = []
    for run_dir in sorted((study_dir / "runs").iterdir()):
        runs.append(tuple(json.loads((run_dir / name).read_text()) for name in ("spec.json", "result.json")))
    assert len(runs) == 2 * SEEDS and all(result["status"] == "completed" for _, result in runs)
    assert text_of(results).startswith(f"{len(runs)} runs: {len(runs)} completed\n")
    # without bars, the study's cell shows one line, updated in place as runs end
    [line] = [o["data"]["text/plain"] for o in results["outputs"] if o["output_type"] == "display_data"]
    assert line.startswith(f"study notebook-small: run {len(runs)}/{len(runs)} (100%), "), line
    lines = text_of(summary).splitlines()
    assert len(lines) == 2
    top1 = {}
    for variant in ("linear", "lora"):
        top1[variant] = {
            spec["seed"]: result["metrics"]["test_top1"] for spec, result in runs if spec["variant"] == variant
        }
        mean, low, high = interval(list(top1[variant].values()))
        expected = f"{variant:<20} {100 * mean:6.2f}%  [{100 * low:.2f}, {100 * high:.2f}]  n={SEEDS}"
        assert expected in lines, (expected, lines)
    seeds = sorted(top1["lora"])
    gains = [100 * (top1["lora"][seed] - top1["linear"][seed]) for seed in seeds]
    test = stats.ttest_rel([top1["lora"][s] for s in seeds], [top1["linear"][s] for s in seeds])
    each = ", ".join(f"seed {seed}: {gain:+.2f}" for seed, gain in zip(seeds, gains))
    assert text_of(paired).splitlines() == [
        f"LoRA - linear probe: {statistics.mean(gains):+.2f} points over {SEEDS} matched seeds ({each})",
        f"paired t-test: t = {test.statistic:.2f}, p = {test.pvalue:.3g}",
    ]
    assert any("image/png" in output.get("data", {}) for output in figure["outputs"])
    assert text_of(loaded).startswith("loaded runs/notebook-run: ")

    task = tmp_path / "data" / "fashion_mnist"
    listed = [line.rsplit(" ", 1) for line in (task / "test.txt").read_text().splitlines()[:6]]
    names = json.loads((task / "vtab-demo.json").read_text())["class_names"]
    answers = peftlab.predict(tmp_path / "runs" / "notebook-run", [task / path for path, _ in listed], top_k=3)
    lines = text_of(predicted).splitlines()
    assert len(lines) == 6
    for line, (_, label), answer in zip(lines, listed, answers, strict=True):
        assert line.startswith(f"true {names[int(label)]:<12} predicted {names[answer['top_k'][0]['index']]} "), line
    assert text_of(exported).startswith("no PEFT export: ") and not (tmp_path / "exports").exists()

    # progress=False: no bar in any cell (tqdm's widgets or text bars), no "IProgress not found", no library noise
    stderr = "".join(text_of(cell, "stderr") for cell in cells)
    assert "IProgress not found" not in stderr and "it/s]" not in stderr and "%|" not in stderr, stderr[-2000:]
    widgets = [
        o
        for c in (data, results)
        for o in c["outputs"]
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert not widgets
