"""A study packed and rerun from a notebook (issue 90), in a real Jupyter kernel (nbclient, ipykernel) whose first cell
imported torch: a tiny study given as a dict (its data a relative path, its runs pinned), ``peftlab.paper(...,
compile=False)``, ``peftlab.submission`` with LaTeX off PATH (the paper packed without main.pdf, as archive.json
says), then ``peftlab.reproduce(archive, runs=1)``: one run rerun in workers started with the pin, every metric equal,
``reproduced`` true, and main.pdf named among what it did not check."""

import json
import os
import shutil
import tarfile

import pytest
import yaml
from testkit import REPO, TINY_MODEL

from peftlab.analysis.archive.pack import PDF_NOT_PACKED
from peftlab.data.synthetic import write_jpeg_folder

pytestmark = pytest.mark.e2e

RUN = {
    "name": "shapes",
    "model": {**TINY_MODEL, "pretrained": "none"},
    "method": {"name": "lora", "r": 2},
    "data": {"name": "imagefolder", "root": "data/shapes", "val_fraction": 0.25},  # the kernel's working folder's
    "train": {"max_steps": 3, "batch_size": 8, "eval_batch_size": 8, "reproducible": True},
}


def cells(no_latex: str) -> list[str]:
    """The notebook's code: ``no_latex`` is a PATH holding git alone (no latexmk, no pdflatex)."""
    return [
        "import torch, timm  # first: torch runs unpinned here, the runs train in pinned workers\nimport os, peftlab",
        "study = {'name': 'shapes', 'base': 'run.yaml', 'seeds': 1, 'methods': {'linear': {}, 'lora': {}}}\n"
        "summary = peftlab.run_study(study, 'study')\nprint(len(summary.completed), len(summary.failed))",
        "print(peftlab.paper('study', compile=False))\n"
        f"shell_path, os.environ['PATH'] = os.environ['PATH'], {no_latex!r}  # a machine without LaTeX\n"
        "try:\n    print(peftlab.submission('study', 'study/study.yaml', out='shapes.tar.gz'))\n"
        "finally:\n    os.environ['PATH'] = shell_path",
        "record = peftlab.reproduce('shapes.tar.gz', runs=1, out='check', data='data', sample_seed=0)\n"
        "print(record['reproduced'], record['verdict'])",
    ]


def test_a_dict_study_is_packed_without_latex_and_reproduced_from_a_kernel(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    write_jpeg_folder(tmp_path / "data" / "shapes", n_train=16, size=32, classes=2, n_test=4, class_colour=0.5)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(RUN))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "git").symlink_to(shutil.which("git"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in cells(str(tmp_path / "bin"))]
    )
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # a cell that raises raises CellExecutionError here, naming the cell and its traceback
    _, study, packed, reproduced = (
        "".join(o["text"] for o in cell["outputs"] if o.get("name") == "stdout") for cell in notebook.cells
    )
    assert study == "2 0\n"
    results = [json.loads(path.read_text()) for path in (tmp_path / "study" / "runs").glob("*/result.json")]
    assert len(results) == 2 and all(result["provenance"]["arithmetic"]["pinned"] for result in results)
    assert packed.splitlines() == ["study/paper/main.tex", "shapes.tar.gz"]  # as the cell named them: relative
    with tarfile.open(tmp_path / "shapes.tar.gz") as tar:
        names = tar.getnames()
        record = json.load(tar.extractfile(next(name for name in names if name.endswith("/archive.json"))))
    assert record["paper_pdf"] == PDF_NOT_PACKED and not any(name.endswith("main.pdf") for name in names)

    checked = json.loads((tmp_path / "check" / "reproduce.json").read_text())
    assert reproduced.splitlines()[-1] == f"True {checked['verdict']}"
    assert checked["reproduced"] and checked["rerun"] and checked["differences"] == []
    [run] = checked["compared"]  # runs=1: one of the two rerun, in a worker started with the pin
    assert run["rule"] == "exact" and run["metrics"] and all(a == b for a, b in run["metrics"].values())
    assert f"paper/main.pdf ({PDF_NOT_PACKED}; peftlab paper compiles it with LaTeX)" in checked["not_checked"]
