"""Literature rows only beside the dataset they were measured on (issue 72): V-PETL Bench's CIFAR-100 (VTAB-1k)
and VTAB-1k rows were printed beside a study of an image folder of shapes. A setting of configs/literature.yaml
names the peftlab data.name(s) it was measured on (``task``); the dataset's identity is its data.name, never the
name of a folder, so an image folder called cifar100 gets no CIFAR-100 rows."""

import json
import re

import pytest
from studyfiles import set_data, write_study_dir
from test_literature import LITERATURE_FILE
from test_vtab import write_vtab_study
from testkit import cli_in_process

from peftlab.analysis.report.build import write_report
from peftlab.analysis.report.literature import LITERATURE, load_literature, study_citations
from peftlab.config.suites import VTAB1K_TASKS
from peftlab.utils.errors import UserError

FIGURES_DRAWN = ()  # text and files read, no figure drawn (conftest.py)

VARIANTS = ["full", "linear", "lora r=8"]
# the data of a study: what its runs recorded of data.name and data.root
SHAPES = {"name": "imagefolder", "root": "/data/cifar100"}  # a folder of shapes that happens to be called cifar100


def study_on(tmp_path, data: dict):
    """The studyfiles study of VARIANTS with its runs' data as ``data`` says."""
    return set_data(write_study_dir(tmp_path / "study", with_failure=False, variants=VARIANTS), **data)


def paper_sources(study, out):
    """(main.tex, the macros of results.tex, the tables written) of ``peftlab paper STUDY --no-compile``."""
    status, stderr, _, _ = cli_in_process("paper", str(study), "--out", str(out), "--no-compile")
    assert status == 0, stderr
    defined = dict(re.findall(r"\\newcommand\{\\(\w+)\}\{(.*)\}  %", (out / "results.tex").read_text()))
    return (out / "main.tex").read_text(), defined, sorted(p.name for p in (out / "tables").iterdir())


@pytest.mark.parametrize("data", [SHAPES, {"name": "fashion_mnist"}], ids=["image-folder-named-cifar100", "fmnist"])
def test_a_study_on_a_dataset_no_row_was_measured_on_gets_no_literature_rows(tmp_path, data):
    study = study_on(tmp_path, data)
    report = write_report(study).read_text()
    assert "xin2024vpetl" not in report and "CIFAR-100" not in report and "| cited:" not in report
    assert "## Published numbers beside this study" not in report  # nothing said, no empty table
    main, defined, tables = paper_sources(study, tmp_path / "paper")
    assert "literature.tex" not in tables
    assert r"\input{tables/literature}" not in main and "sec:literature" not in main
    assert not [name for name in defined if name.startswith(("lit", "ourOrder"))]


def test_a_study_on_cifar100_shows_the_rows_measured_on_cifar100_only(tmp_path):
    study = study_on(tmp_path, {"name": "cifar100"})
    report = write_report(study).read_text()
    section = report[report.index("## Published numbers beside this study") :]
    assert (
        "| cited: xin2024vpetl, repository README, VTAB results | ViT-B/16 (ImageNet-21k); CIFAR-100 (VTAB-1k)"
        in section
    )
    assert "VTAB-1k, mean of 19 tasks" not in section  # measured on all 19 tasks, not on CIFAR-100 alone
    assert (
        "- xin2024vpetl, CIFAR-100 (VTAB-1k): Full fine-tuning (68.9) > LoRA (67.1) > Linear probing (63.4)" in section
    )
    main, defined, tables = paper_sources(study, tmp_path / "paper")
    assert "literature.tex" in tables and r"\input{tables/literature}" in main
    table = (tmp_path / "paper" / "tables" / "literature.tex").read_text()
    assert "CIFAR-100 (VTAB-1k)" in table and "mean of 19 tasks" not in table
    assert defined["litVpetlCifarLora"] == "67.1" and "litVpetlMeanLora" not in defined


def test_the_vtab_mean_is_shown_to_a_study_of_all_19_tasks_and_the_cifar_rows_to_its_cifar_task():
    citations = load_literature(LITERATURE)
    vtab = {f"vtab1k/{task}" for task in VTAB1K_TASKS}
    assert {c.setting for c in study_citations(citations, "vision", vtab)} == {"vpetl_cifar", "vpetl_vtab_mean"}
    assert {c.setting for c in study_citations(citations, "vision", {"vtab1k/cifar", "vtab1k/dtd"})} == {"vpetl_cifar"}
    for ran in ({"imagefolder"}, {"filelist"}, {"fashion_mnist"}, {"cifar10"}, {"vtab1k/dtd"}):
        assert study_citations(citations, "vision", ran) == [], ran
    # MMLU and MNLI were measured on data peftlab does not read: shown to no study (--all-literature lists them)
    assert not {"qlora_mmlu", "qalora_mmlu", "adalora_mnli"} & {
        c.setting for c in study_citations(citations, "text", {"glue/mrpc", "glue/rte"})
    }


@pytest.mark.parametrize("task", ["imagefolder", "cifar-100", "vtab1k/nope", "[cifar100, text]"])
def test_a_setting_s_task_is_a_named_dataset_of_peftlab(tmp_path, task):
    path = tmp_path / "literature.yaml"
    path.write_text(LITERATURE_FILE.replace("checked: here}", f"checked: here, task: {task}}}", 1))
    with pytest.raises(UserError, match=r"settings\.glue_mrpc\.task=.*: expected a named dataset's data\.name"):
        load_literature(path)


def test_a_vtab_study_of_its_own_tasks_only_gets_no_published_vtab_rows(tmp_path):
    """VTAB-1k's published rows were measured on its 19 tasks: not beside a task of one's own (a Fashion-MNIST
    folder in the Natural group, as `peftlab data vtab-demo` writes), and still beside VTAB-1k's CIFAR-100."""
    own = {config: {"filelist": {0: 0.80 + i / 100, 1: 0.82 + i / 100}} for i, config in enumerate(("full", "lora"))}
    study = write_vtab_study(tmp_path / "own", {("full", "full"): {}, ("lora", "lora"): {}}, extra=own)
    for path in study.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        result["config"]["data"].update(group="Natural", root="/data/vtab-demo/fashion_mnist")
        path.write_text(json.dumps(result))
    report = write_report(study).read_text()
    assert "## VTAB-1k" in report and "fashion_mnist (own)" in report
    assert "Published (not run here)" not in report and "xin2024vpetl" not in report
    official = write_vtab_study(tmp_path / "cifar", {(c, c): {"cifar": {0: 0.6, 1: 0.62}} for c in ("full", "lora")})
    assert "### Published (not run here)" in write_report(official).read_text()
