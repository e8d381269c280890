"""One bar per call, in a real Jupyter kernel (nbclient, ipykernel) whose first cell imported torch (issue 90): a
pinned run (``train.reproducible``: trained in a child process started with the pin) given as a dict with a relative
data root, and a small study given as a dict, each drawn as one notebook bar (tqdm's widget) that ends at its count
(the run's steps, the study's runs), and nothing on stderr: not the child's progress lines, not the workers'."""

import json
import os

import pytest
import yaml
from testkit import REPO, TINY_MODEL

from peftlab.data.synthetic import write_jpeg_folder

pytestmark = pytest.mark.e2e

RUN = {
    "name": "bar",
    "model": TINY_MODEL,
    "method": {"name": "lora", "r": 2},
    "data": {"name": "imagefolder", "root": "images"},  # the kernel's working folder's
    "train": {"max_steps": 3, "batch_size": 8, "reproducible": True},
}
CELLS = [
    "import torch, timm  # first: torch runs unpinned here, so the run trains in a pinned child\nimport peftlab",
    f"record = peftlab.train({RUN!r}, progress=True)\nprint(record['status'], record['provenance']['arithmetic'])",
    "study = {'name': 'nb', 'base': 'run.yaml', 'seeds': 1, 'methods': {'linear': {}, 'lora': {}}}\n"
    "summary = peftlab.run_study(study, 'study', progress=True)\nprint(len(summary.completed), len(summary.failed))",
]


def bars(cell: dict, widgets: dict) -> list[tuple[float, float]]:
    """(value, max) of each progress widget the cell displayed (nbclient keeps the kernel's widget states)."""
    shown = [
        o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
        for o in cell["outputs"]
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    found = []
    for model_id in shown:  # an HBox of a label, the bar and its text
        for child in widgets[model_id]["state"].get("children", []):
            state = widgets[child.removeprefix("IPY_MODEL_")]["state"]
            if state.get("_model_name") in ("FloatProgressModel", "IntProgressModel"):
                found.append((state["value"], state["max"]))
    return found


def test_a_pinned_run_and_a_study_are_each_one_bar_and_nothing_on_stderr(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    write_jpeg_folder(tmp_path / "images", n_train=12, size=32, classes=3, n_test=3)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**RUN, "train": {**RUN["train"], "max_steps": 2}}))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    widgets = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    _, run, study = notebook.cells

    stderr = [o["text"] for cell in (run, study) for o in cell["outputs"] if o.get("name") == "stderr"]
    assert stderr == []
    assert [o["text"] for o in run["outputs"] if o.get("name") == "stdout"][0].startswith("completed ")
    result = json.loads((tmp_path / "runs" / "bar" / "result.json").read_text())
    assert result["provenance"]["arithmetic"]["pinned"] and result["step"] >= 1
    assert bars(run, widgets) == [(result["step"], result["step"])]  # the child's steps
    assert bars(study, widgets) == [(2, 2)]  # the study's runs, not its workers' steps
    assert [o["text"] for o in study["outputs"] if o.get("name") == "stdout"] == ["2 0\n"]
