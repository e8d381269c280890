"""The VTAB-1k section of a report: per-task table, group means, both averages, the published block
apart, the LaTeX table and the difference figure, from hand-written result files (no training)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from peftlab.analysis.paper import build as paper
from peftlab.analysis.report.build import write_report
from peftlab.analysis.report.literature import LITERATURE, bib_keys, load_vtab_literature
from peftlab.analysis.stats.intervals import t_interval
from peftlab.analysis.stats.vtab_scores import averages
from peftlab.config.suites import VTAB1K_TASKS
from peftlab.utils.errors import UserError

FIGURES_DRAWN = ("vtab_differences",)  # the figure the tests read; the reports' others written empty (conftest.py)

# configuration, method: {task: {seed: test top-1}}; 2 of 7 Natural, 1 of 4 Specialized, 1 of 8 Structured
SMALL = {
    ("full", "full"): {
        "cifar": {0: 0.60, 1: 0.62},
        "dtd": {0: 0.70, 1: 0.72},
        "eurosat": {0: 0.90, 1: 0.92},
        "clevr_count": {0: 0.40, 1: 0.44},
    },
    ("lora", "lora"): {
        "cifar": {0: 0.64, 1: 0.66},
        "dtd": {0: 0.69, 1: 0.71},
        "eurosat": {0: 0.93, 1: 0.95},
        "clevr_count": {0: 0.50, 1: 0.52},
    },
}


def write_vtab_study(root: Path, scores: dict, extra: dict | None = None) -> Path:
    """A study directory as the runner leaves it, one run per (configuration, task, seed), the dataset
    an axis of the study ("lora data=vtab1k/dtd"); ``extra``: {configuration: {dataset: {seed: top-1}}}
    for runs on other datasets."""
    root.mkdir(parents=True)
    (root / "study.yaml").write_text(yaml.safe_dump({"name": root.name, "base": "base.yaml", "methods": {"full": {}}}))
    order = 0
    for (config, method), tasks in scores.items():
        datasets = {f"vtab1k/{task}": seeds for task, seeds in tasks.items()} | (extra or {}).get(config, {})
        for dataset, seeds in datasets.items():
            for seed, top1 in seeds.items():
                run_id = f"{config}-{dataset.replace('/', '-')}-{seed}"
                run_dir = root / "runs" / run_id
                run_dir.mkdir(parents=True)
                (run_dir / "spec.json").write_text(
                    json.dumps(
                        {
                            "run_id": run_id,
                            "variant": f"{config} data={dataset}",
                            "method": method,
                            "seed": seed,
                            "groups": ["main"],
                            "axes": {"data.name": dataset},
                            "order": order,
                        }
                    )
                )
                (run_dir / "result.json").write_text(
                    json.dumps(
                        {
                            "status": "completed",
                            "error": None,
                            "config": {"seed": seed, "method": {"name": method}, "data": {"name": dataset}},
                            "metrics": {"test_top1": top1},
                            "params": {"total": 800_000, "trainable": 800_000 if method == "full" else 2_000},
                            "timing": {"train_seconds": 10.0, "wall_seconds": 12.0},
                            "provenance": {"git_sha": "abc"},
                        }
                    )
                )
                order += 1
    return root


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    study = write_vtab_study(tmp_path_factory.mktemp("vtab") / "small", SMALL)
    return study, write_report(study).read_text()


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell} |")
    ]


def test_group_means_and_both_averages_by_hand(small_report):
    """full: cifar 61, dtd 71 (Natural 66), eurosat 91, clevr_count 42: mean of 4 tasks 265 / 4 = 66.25, mean of
    3 group means (66 + 91 + 42) / 3 = 66.33. lora: 65, 70 (67.5), 94, 51: 280 / 4 = 70.00 and 212.5 / 3 = 70.83."""
    _, report = small_report
    section = report[report.index("## VTAB-1k") :]
    header = next(line for line in section.splitlines() if line.startswith("| configuration | runs per task |"))
    assert header == (
        "| configuration | runs per task | CIFAR-100 | DTD | **Natural** | EuroSAT | **Specialized** | "
        "Clevr-Count | **Structured** | mean of 4 tasks | mean of 3 group means |"
    )
    assert table_rows(section, "full")[0] == [
        "full",
        "2",
        "61.0",
        "71.0",
        "**66.00**",
        "91.0",
        "**91.00**",
        "42.0",
        "**42.00**",
        "66.25",
        "66.33",
    ]
    assert table_rows(section, "lora")[0] == [
        "lora",
        "2",
        "65.0",
        "70.0",
        "**67.50**",
        "94.0",
        "**94.00**",
        "51.0",
        "**51.00**",
        "70.00",
        "70.83",
    ]
    # full's averages of each seed: over the tasks (60 + 70 + 90 + 40) / 4 = 65 and (62 + 72 + 92 + 44) / 4 = 67.5,
    # over the groups (65 + 90 + 40) / 3 = 65 and (67 + 92 + 44) / 3 = 67.67
    low, high = t_interval([65.0, 67.5])
    glow, ghigh = t_interval([65.0, (67 + 92 + 44) / 3])
    full = table_rows(section, "full")[1]
    assert full == ["full", "2", f"66.25 [{low:.2f}, {high:.2f}]", f"66.33 [{glow:.2f}, {ghigh:.2f}]", "+0.08"]
    assert "95% Student-t interval of the mean over seeds, of the per-seed averages" in section


def test_a_study_of_fewer_tasks_says_which_are_missing(small_report):
    _, report = small_report
    assert (
        "The study ran 4 of VTAB-1k's 19 tasks (2 Natural, 1 Specialized, 1 Structured); 15 are missing "
        "(Natural: caltech101, oxford_flowers102, oxford_iiit_pet, svhn, sun397; Specialized: patch_camelyon, "
        "resisc45, diabetic_retinopathy; Structured: clevr_dist, dmlab, kitti, dsprites_loc, dsprites_ori, "
        'smallnorb_azi, smallnorb_ele). Its averages are over the tasks it ran ("mean of 4 tasks")'
    ) in report
    study_part = report.split("### Published (not run here)")[0]
    study_tables = [line for line in study_part.splitlines() if line.startswith("|")]
    assert not any("19" in line for line in study_tables)  # no average of the study calls itself a mean of 19
    assert (
        "**The two averages differ.** The mean of 4 tasks weighs every task 1/4; the mean of 3 group means weighs "
        "every group 1/3 (a Natural task 1/6, a Specialized task 1/3, a Structured task 1/3)." in report
    )


def test_the_published_rows_stand_apart_labelled_with_their_protocol(small_report):
    _, report = small_report
    study_part, published = report[report.index("## VTAB-1k") :].split("### Published (not run here)")
    assert "LoRA" not in study_part and "V-PETL" not in study_part and "xin2024vpetl" not in study_part
    published = published.split("\n## ")[0]
    assert "**xin2024vpetl**, repository README, VTAB results; ViT-B/16 (ImageNet-21k); top-1 (%)." in published
    assert "the best of those accuracies is reported, so the epoch is selected on test" in published
    rows = table_rows(published, "published (not run here): LoRA (lora)")
    assert rows == [["published (not run here): LoRA (lora)", "0.29M", "79.49", "84.55", "59.78", "72.25", "74.60"]]
    assert table_rows(published, "published (not run here): FacT (none in peftlab)")[0][2:] == [
        "80.64",
        "85.30",
        "60.71",
        "73.23",
        "75.55",
    ]
    assert "computed by peftlab from the source's printed task columns" in published
    assert "(the published rows below: +2.32 to +2.59 points)" in report


def test_the_published_group_means_are_those_of_the_printed_task_columns():
    """The group means the issue quotes for V-PETL Bench, recomputed from its 19 printed task columns."""
    quoted = {
        "LoRA": (79.49, 84.55, 59.78, 72.25),
        "VPT-Deep": (78.49, 82.42, 55.00, 69.43),
        "Adapter": (79.01, 84.08, 58.49, 71.44),
        "SSF": (81.57, 86.55, 58.96, 73.10),
        "FacT": (80.64, 85.30, 60.71, 73.23),
    }
    rows = load_vtab_literature(LITERATURE, bib_keys(paper.REFERENCES.read_text()))
    assert {c.method: c.peftlab for c in rows} == {
        "LoRA": "lora",
        "VPT-Deep": "vpt",
        "Adapter": "pfeiffer",
        "SSF": "ssf",
        "FacT": None,
    }
    for c in rows:
        values = averages(c.numbers(), list(VTAB1K_TASKS))
        computed = (values["Natural"], values["Specialized"], values["Structured"], float(c.mean))
        assert [round(v, 2) for v in computed] == pytest.approx(quoted[c.method]), c.method
        assert values["tasks"] == pytest.approx(float(c.mean), abs=0.005)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda row: row.update(mean="75.00"), r"mean=75.00 is not the mean of its values \(72.25\)"),
        (lambda row: row["values"].pop(), "values: expected a list of 19 numbers"),
        (lambda row: row.update(peftlab="fact"), "peftlab='fact': expected null or a method of peftlab"),
        (lambda row: row["values"].__setitem__(0, 67.1), "67.1 is not a number as printed, quoted"),
    ],
)
def test_a_bad_vtab_row_is_a_one_line_error(tmp_path, edit, message):
    data = yaml.safe_load(LITERATURE.read_text())
    edit(data["vtab1k"]["vpetl"]["rows"][0])
    path = tmp_path / "literature.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=message) as err:
        load_vtab_literature(path)
    assert "\n" not in str(err.value) and "vtab1k.vpetl.rows[0]" in str(err.value)


def test_the_latex_table_is_booktabs_and_balanced(small_report):
    study, _ = small_report
    tex = (study / "report" / "tables" / "vtab.tex").read_text()
    assert tex.count("{") == tex.count("}") and tex.count(r"\begin{") == tex.count(r"\end{")
    assert [line for line in tex.splitlines() if line in (r"\toprule", r"\midrule", r"\bottomrule")] == [
        r"\toprule",
        r"\midrule",
        r"\bottomrule",
    ]
    assert r"\cmidrule(lr){2-4} \cmidrule(lr){5-6} \cmidrule(lr){7-8} \cmidrule(l){9-10}" in tex
    columns = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1)
    body = tex[tex.index(r"\toprule") : tex.index(r"\bottomrule")]
    rows = [line for line in body.splitlines() if line.endswith(r"\\") and not line.startswith(" & \\multicolumn")]
    assert all(line.count(" & ") == len(columns) - 1 for line in rows if not line.startswith(" &"))
    assert r"full & 61.0 & 71.0 & \emph{66.00} & 91.0 & \emph{91.00} & 42.0 & \emph{42.00} & $66.25 \pm 15.88$" in tex
    assert "Mean of 4 tasks & Mean of 3 group means" in tex and "Not run: Caltech101" in tex
    assert (study / "report" / "tables" / "vtab_document.tex").read_text().count(r"\usepackage{graphicx}") == 1


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed on this machine")
def test_the_latex_table_compiles(small_report):
    tables = small_report[0] / "report" / "tables"
    subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "vtab_document.tex"],
        cwd=tables,
        check=True,
        capture_output=True,
        timeout=480,
    )


def test_the_difference_figure_is_drawn_and_referenced(small_report):
    study, report = small_report
    figures = study / "report" / "figures"
    assert (figures / "vtab_differences.png").stat().st_size > 10_000 and (figures / "vtab_differences.pdf").is_file()
    assert "![Per-task difference against the baseline](figures/vtab_differences.png)" in report
    assert "minus that of the baseline (full) on each task" in report


def test_a_configuration_missing_a_task_gets_no_averages_and_other_datasets_stay_out(tmp_path):
    scores = {**SMALL, ("vpt", "vpt"): {"cifar": {0: 0.5, 1: 0.52}, "dtd": {0: 0.6}}}
    study = write_vtab_study(tmp_path / "study", scores, extra={"full": {"fgvc/cub": {0: 0.99, 1: 0.98}}})
    section = write_report(study).read_text().split("## VTAB-1k")[1]
    assert table_rows(section, "vpt")[0] == [
        "vpt",
        "1-2",
        "51.0",
        "60.0",
        "**–**",
        "–",
        "**–**",
        "–",
        "**–**",
        "–",
        "–",
    ]
    assert table_rows(section, "full")[0][-2:] == ["66.25", "66.33"]  # the fgvc run is not a VTAB task
    assert table_rows(section, "vpt")[1] == ["vpt", "0", "–", "–", "–"]


def test_a_study_without_vtab_runs_has_no_vtab_section(tmp_path):
    study = write_vtab_study(
        tmp_path / "study", {("full", "full"): {}}, extra={"full": {"fgvc/cub": {0: 0.9, 1: 0.91}}}
    )
    report = write_report(study).read_text()
    assert "## VTAB-1k" not in report and not (study / "report" / "tables" / "vtab.tex").exists()
    assert not (study / "report" / "figures" / "vtab_differences.png").exists()
