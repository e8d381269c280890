"""The report of a study directory written from hand-written results (no training)."""

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from testkit import cli_here, run_cli

from peftlab.analysis.report.build import write_report
from peftlab.utils.errors import UserError

# drawn: the figures whose data only this module's reports give (several datasets' performance profile, the
# quantized runs' trade-off); the others built and written empty (conftest.figures_drawn): the tests read the
# reports' text, tables and file names, and test_figures.py and test_paper_figures.py draw each of them
FIGURES_DRAWN = ("performance_profile", "quantization_tradeoff")


# variant, method, r, {seed: test top-1}
DEFAULT_LIKE = [
    ("full", "full", 8, {0: 0.745, 1: 0.723, 2: 0.755, 3: 0.714, 4: 0.759}),
    ("linear", "linear", 8, {0: 0.593, 1: 0.591, 2: 0.597, 3: 0.592, 4: 0.594}),
    ("lora r=4", "lora", 4, {0: 0.675, 1: 0.663, 2: 0.693}),
    ("lora r=8", "lora", 8, {0: 0.684, 1: 0.664}),
]


def write_study_dir(
    root: Path, runs=DEFAULT_LIKE, report=None, curve_steps=(25, 50, 75), data="fashion_mnist", quant=None
) -> Path:
    """A study directory as the runner leaves it: study.yaml, runs/<id>/{spec,result}.json, metrics.jsonl.

    quant: {variant: (mode, base weight bytes, merged top-1 offset)} for runs on a quantized base.
    """
    quant = quant or {}
    root.mkdir(parents=True, exist_ok=True)
    study = {"name": root.name, "base": "base.yaml", "methods": {"full": {}}}
    if report is not None:
        study["report"] = report
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    order = 0
    for variant, method, r, scores in runs:
        for seed, top1 in scores.items():
            run_id = f"{variant}-{seed}-{data}".replace(" ", "_").replace("=", "")
            run_dir = root / "runs" / run_id
            run_dir.mkdir(parents=True)
            (run_dir / "spec.json").write_text(
                json.dumps(
                    {
                        "run_id": run_id,
                        "variant": variant,
                        "method": method,
                        "seed": seed,
                        "groups": ["main"],
                        "axes": {"method.r": r} if method == "lora" else {},
                        "order": order,
                    }
                )
            )
            order += 1
            trainable = {"full": 800_000, "linear": 1_300}.get(method, 2_000 * r)
            mode, base_bytes, merged_offset = quant.get(variant, ("none", 3_200_000, 0.0))
            (run_dir / "result.json").write_text(
                json.dumps(
                    {
                        "status": "completed",
                        "error": None,
                        "config": {
                            "seed": seed,
                            "method": {"name": method, "r": r},
                            "data": {"name": data},
                            "quant": {"mode": mode},
                        },
                        "metrics": {
                            "test_top1": top1,
                            "test_top5": min(1.0, top1 + 0.2),
                            "merged_test_top1": top1 + merged_offset,
                        },
                        "params": {"total": 800_000, "trainable": trainable, "trainable_ratio": trainable / 800_000},
                        "memory": {
                            "peak_rss_bytes": 600_000_000 + seed,
                            "weights_bytes": 3_200_000,
                            "base_weights_bytes": base_bytes,
                            "base_weights_fp32_bytes": 3_200_000,
                        },
                        "timing": {"train_seconds": 10.0 + seed, "wall_seconds": 12.0 + seed},
                        "provenance": {"git_sha": "abc", "threads": 2},
                    }
                )
            )
            lines = [{"kind": "eval", "step": step, "val_top1": top1 * step / max(curve_steps)} for step in curve_steps]
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


@pytest.fixture(scope="module")
def default_report(tmp_path_factory):
    """The report of DEFAULT_LIKE's study as write_report leaves it, written once: tests read it, none changes it."""
    return write_report(write_study_dir(tmp_path_factory.mktemp("default") / "study"))


def test_report_sections_intervals_and_warnings(default_report):
    report = default_report.read_text()
    assert "- Intervals in tables and figures: the 95% Student-t interval of the mean over seeds" in report
    assert "9999 resamples with numpy's default_rng seeded 0" in report
    assert "**Warning: fewer than 5 seeds** for lora r=4 (n = 3), lora r=8 (n = 2)." in report
    assert "At n = 2 no interval is meaningful" in report
    # rliable's probability of improvement and the win rate, each under its own name
    assert "| win rate (matched seeds) | P(X > Y) [95% CI] |" in report
    lora8 = next(line for line in report.splitlines() if line.startswith("| lora r=8 | 2 |"))
    # matched seeds 0, 1: 0.684 < 0.745, 0.664 < 0.723 -> win rate 0; all 10 pairs lost too
    assert "| 0.00 | 0.00 [0.00, 0.00] |" in lora8
    # differences -6.1 and -5.9 points: sd 0.141, MDE 11.55 * 0.141 = 1.63 points; 1 point is 7.1 sd: 3 pairs
    assert "| p (t, Holm) | MDE (80%, pts) | pairs for 1 pt |" in report
    assert lora8.startswith("| lora r=8 | 2 | -6.00 | 0.0106 | 1.63 | 3 |")
    # every difference is significant and larger than its MDE and than the seeds' spread: neither sentence
    assert "smaller than these seeds could detect" not in report and "Seeds spread more" not in report
    # skipped figures in their own section, none under a figure's heading
    head, skipped = report.split("## Skipped figures")
    assert "skipped:" not in head
    assert (
        "- skipped: memory reduction vs accuracy loss across quantization settings: no completed run with a "
        "quantized base" in skipped
    )
    assert "## Figures" in head and "### Convergence" in head and "band: the 95% Student-t interval" in head


def test_main_table_caption_is_escaped_once(default_report):
    tex = (default_report.parent / "tables" / "main_table.tex").read_text()
    caption = next(line for line in tex.splitlines() if line.startswith(r"\caption"))
    assert caption == (
        r"\caption{study: test accuracy (mean and 95\% Student-t interval of the mean over seeds) "
        r"and trainable parameters.}"
    )
    assert r"\textbackslash" not in tex and r"\$" not in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed on this machine")
def test_main_table_compiles(tmp_path):
    write_report(write_study_dir(tmp_path / "study", report={"labels": {"lora r=4": "LoRA ($r{=}4$)"}}))
    tables = tmp_path / "study" / "report" / "tables"
    subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main_table_document.tex"],
        cwd=tables,
        check=True,
        capture_output=True,
        timeout=480,
    )
    text = (
        subprocess.run(["pdftotext", "main_table_document.pdf", "-"], cwd=tables, capture_output=True, text=True).stdout
        if shutil.which("pdftotext")
        else ""
    )
    assert "$" not in text and "\\" not in text


def test_report_section_of_the_study_file_sets_interval_and_labels(tmp_path):
    study = write_study_dir(
        tmp_path / "study", report={"interval": "bca", "labels": {"lora r=4": "LoRA ($r{=}4$)", "full": "Full FT"}}
    )
    report = write_report(study).read_text()
    tex = (study / "report" / "tables" / "main_table.tex").read_text()
    assert "BCa bootstrap interval of the mean over seeds (9999 resamples, seed 0)" in report
    assert r"LoRA ($r{=}4$) &" in tex and "Full FT &" in tex
    full = next(line for line in tex.splitlines() if line.startswith("Full FT &"))
    assert r"\pm" not in full and "[" in full  # a bootstrap interval is written [low, high]
    assert "| LoRA ($r{=}4$) |" in report and "against **Full FT**" in report
    report = write_report(study, labels={"lora r=5": "x"}).read_text()
    assert "Labels in the study file's report section that name no configuration or method: lora r=5." in report


def test_a_baseline_that_is_not_a_configuration_is_a_one_line_error(tmp_path):
    study = write_study_dir(tmp_path / "study")
    with pytest.raises(
        UserError,
        match="baseline 'no such variant' is not a configuration with completed runs; "
        "configurations: 'full', 'linear', 'lora r=4', 'lora r=8'",
    ):
        write_report(study, baseline="no such variant")
    proc = run_cli("report", str(study), "--baseline", "no such variant")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "configurations: 'full', 'linear', 'lora r=4', 'lora r=8'" in proc.stderr


def test_one_evaluation_per_run_skips_the_convergence_figure(tmp_path):
    report = write_report(write_study_dir(tmp_path / "study", curve_steps=(16,))).read_text()
    assert "- skipped: convergence: no learning curve: every run was evaluated at a single step" in report
    assert not (tmp_path / "study" / "report" / "figures" / "convergence.png").exists()


def test_the_caption_names_the_configurations_drawn_side_by_side(tmp_path):
    """Two rank strategies at one budget have one trainable count: the figure draws them apart, and the caption
    says which are moved off their count (the image study's report, with none, reads as before: golden file)."""
    runs = [
        ("full", "full", 8, {0: 0.74, 1: 0.75, 2: 0.73}),
        ("lora linear_decay", "lora", 8, {0: 0.68, 1: 0.66, 2: 0.67}),
        ("lora uniform", "lora", 8, {0: 0.67, 1: 0.69, 2: 0.68}),
    ]
    report = write_report(write_study_dir(tmp_path / "study", runs=runs)).read_text()
    assert (
        "Configurations with the same trainable parameters (lora linear_decay and lora uniform, 16.0K) are drawn "
        "side by side around their count, left to right in the legend's order; the axis is that of the true counts."
    ) in report


def test_several_datasets_get_rliables_aggregates_and_comparisons_within_a_dataset(tmp_path):
    root = tmp_path / "study"
    runs_a = [
        ("full data=a", "full", 8, {0: 0.80, 1: 0.82, 2: 0.81}),
        ("lora data=a", "lora", 8, {0: 0.81, 1: 0.79, 2: 0.80}),
    ]
    runs_b = [
        ("full data=b", "full", 8, {0: 0.60, 1: 0.61, 2: 0.62}),
        ("lora data=b", "lora", 8, {0: 0.63, 1: 0.60, 2: 0.64}),
    ]
    write_study_dir(root, runs_a, data="a")
    shutil.copytree(write_study_dir(tmp_path / "b", runs_b, data="b") / "runs", root / "runs", dirs_exist_ok=True)
    report = write_report(root).read_text()
    assert "## Across datasets" in report
    # IQM of full: mean(0.61, 0.62, 0.80, 0.81); P(lora > full): (2/9 + 6.5/9) / 2 = 0.47
    assert "| full | 2 | 6 | 71.0 [" in report
    assert "| lora | 2 | 6 |" in report and "| 0.47 [" in report
    assert "against **full data=a, full data=b**" in report


def test_results_as_markdown_show_readable_columns_with_empty_cells_empty(tmp_path):
    study = write_study_dir(tmp_path / "study")
    failed = study / "runs" / "lora_r8-1-fashion_mnist" / "result.json"
    failed.write_text(json.dumps({"status": "failed", "error": "RuntimeError: out of | memory\nat step 3"}))
    proc = cli_here("results", str(study), "--format", "markdown")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        "| run_id | variant | seed | status | metrics.test_top1 | metrics.test_top5 | params.trainable | "
        "timing.train_seconds | error |"
    )
    assert "| full-0-fashion_mnist | full | 0 | completed | 0.745 | 0.945 | 800000 | 10 |  |" in lines
    assert (
        "| lora_r8-1-fashion_mnist | lora r=8 | 1 | failed |  |  |  |  | RuntimeError: out of \\| memory at step 3 |"
        in lines
    )
    assert "nan" not in proc.stdout
    proc = cli_here("results", str(study), "--format", "markdown", "--columns", "variant,config.method.r")
    assert proc.stdout.splitlines()[:3] == ["| variant | config.method.r |", "|:---|---:|", "| full | 8 |"]
    proc = cli_here("results", str(study), "--format", "csv", "--columns", "variant,seed")
    assert proc.stdout.splitlines()[:2] == ["variant,seed", "full,0"]
    proc = cli_here("results", str(study), "--columns", "variant,accuracy")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--columns: no column 'accuracy' in the results; columns: order, run_id, variant" in proc.stderr


def test_results_parquet_holds_an_option_two_methods_give_different_types(tmp_path):
    """A plugin's option that shares its name with another method's option of another type (``alpha: auto``
    beside ``alpha: 16``) is one column of text in results.parquet, as results.csv shows it (issue 78: pyarrow's
    ArrowTypeError); a column of one type keeps it."""
    study = write_study_dir(tmp_path / "study")
    for i, path in enumerate(sorted((study / "runs").glob("*/result.json"))):
        record = json.loads(path.read_text())
        record["config"]["method"]["alpha"] = "auto" if i == 0 else 16
        path.write_text(json.dumps(record))
    proc = cli_here("results", str(study), "--format", "parquet")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_parquet(study / "results.parquet")
    shown = pd.read_csv(io.StringIO(cli_here("results", str(study)).stdout), dtype=str, keep_default_na=False)
    assert table["config.method.alpha"].tolist() == shown["config.method.alpha"].tolist()
    assert sorted(set(table["config.method.alpha"])) == ["16", "auto"]
    assert table["seed"].dtype == "int64" and table["metrics.test_top1"].dtype == "float64"


def test_quantized_runs_get_the_memory_accuracy_figure(tmp_path):
    runs = DEFAULT_LIKE + [("lora r=8 quant=nf4", "lora", 8, {0: 0.680, 1: 0.655})]
    study = write_study_dir(tmp_path / "study", runs, quant={"lora r=8 quant=nf4": ("nf4", 432_000, -0.02)})
    report = write_report(study).read_text()
    assert "### Memory reduction vs accuracy loss across quantization settings" in report
    assert (study / "report" / "figures" / "quantization_tradeoff.png").is_file()
    assert "quantization" not in report.split("## Skipped figures")[1]


@pytest.mark.parametrize(
    "name, content",
    [
        ("spec.json", "{not json"),
        ("spec.json", "[1, 2]"),
        ("spec.json", '{"run_id": 5}'),
        ("spec.json", b"\xff\xfe"),
    ],
)
def test_a_corrupt_spec_json_is_one_line_for_results_and_report(tmp_path, name, content):
    study = write_study_dir(tmp_path / "study")
    target = sorted((study / "runs").glob("*/spec.json"))[0]
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    for args in (["results", str(study)], ["report", str(study)]):
        proc = cli_here(*args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert f"{target} is corrupt" in proc.stderr


@pytest.mark.parametrize("content", ["{not json", "[]", '{"status": 5}', '{"status": "completed"}'])
def test_a_corrupt_result_json_reads_as_no_result(tmp_path, content):
    from peftlab.analysis.results.load import load_results

    study = write_study_dir(tmp_path / "study")
    run_dir = sorted((study / "runs").glob("*/result.json"))[0].parent
    (run_dir / "result.json").write_text(content)
    table = load_results(study)
    assert len(table) == len(list((study / "runs").glob("*/spec.json")))
    proc = cli_here("summary", str(run_dir))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr


def qalora_table(qalora_scores):
    """Hand-written results of QA-LoRA int4, QLoRA nf4 and fp32 LoRA (r=8 and an r=4 that is not compared)."""
    import pandas as pd

    variants = [
        ("qalora", "qalora", 8, "none", 150_000, qalora_scores),
        ("lora quant=nf4", "lora", 8, "nf4", 120_000, [0.660, 0.664, 0.658, 0.662, 0.661]),
        ("lora r=8", "lora", 8, "none", 800_000, [0.710, 0.712, 0.708, 0.711, 0.709]),
        ("lora r=4", "lora", 4, "none", 800_000, [0.690, 0.691, 0.689, 0.690, 0.692]),
    ]
    rows = []
    for variant, method, r, quant, stored, scores in variants:
        for seed, top1 in enumerate(scores):
            rows.append(
                {
                    "run_id": f"{variant}-{seed}",
                    "status": "completed",
                    "variant": variant,
                    "method": method,
                    "seed": seed,
                    "config.method.r": r,
                    "config.method.target_modules": "standard",
                    "config.quant.mode": quant,
                    "config.method.format": "int4" if method == "qalora" else None,
                    "config.method.group_size": 32 if method == "qalora" else None,
                    "metrics.test_top1": top1,
                    "metrics.merged_test_top1": top1,
                    "memory.base_weights_bytes": stored,
                    "memory.base_weights_fp32_bytes": 800_000,
                    "quantization.mean_relative_error": 0.08 if method == "qalora" else None,
                }
            )
    return pd.DataFrame(rows)


def test_the_qalora_section_compares_deployable_models_at_equal_bits():
    from peftlab.analysis.report import equal_bits

    lines = equal_bits.report_section(qalora_table([0.700, 0.705, 0.695, 0.702, 0.698]), "t", {"qalora": "QA-LoRA"})
    text = "\n".join(lines)
    assert lines[0] == "## QA-LoRA at equal bits"
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| configuration")]
    assert [row.split(" | ")[0] for row in rows] == ["| QA-LoRA", "| lora quant=nf4", "| lora r=8"]  # not r=4
    assert "| QA-LoRA | int4, groups of 32, merged into the zeros | 70.00% |" in text
    assert "| 146 KiB | 0.188 |" in text and "nf4, merged and re-quantized" in text
    assert "+3.90 points of merged test top-1; its interval lies above QLoRA's: this study shows" in text
    assert "lora quant=nf4: merging (re-quantizing) cost +0.00 points of test top-1" in text
    assert "mean relative quantization error of the base's layers 0.0800" in text

    overlapping = equal_bits.report_section(qalora_table([0.640, 0.690, 0.650, 0.680, 0.660]), "t", {})
    assert any("the intervals overlap: this study does not separate them" in line for line in overlapping)


def test_exact_merges_not_tested_merged_read_their_unmerged_test_top1_and_a_failed_check_reads_nothing():
    """train.merged_test auto: QA-LoRA's and fp32 LoRA's runs have no merged test pass (merged_test_top1 null) and
    a passed merge check; the section reads their unmerged test top-1. QLoRA's re-quantized merge is read merged.
    A run whose merge check failed (which auto tests merged) and that has no merged score is left out, not filled."""
    from peftlab.analysis.report import equal_bits

    table = qalora_table([0.700, 0.705, 0.695, 0.702, 0.698])
    exact = table["config.quant.mode"].eq("none")
    table["merge.ok"] = True
    table.loc[exact, "metrics.merged_test_top1"] = None
    table.loc[table["config.quant.mode"].eq("nf4"), "metrics.merged_test_top1"] -= 0.01
    text = "\n".join(equal_bits.report_section(table, "t", {"qalora": "QA-LoRA"}))
    assert "| QA-LoRA | int4, groups of 32, merged into the zeros | 70.00% |" in text
    assert "| lora r=8 | fp32, merged | 71.00% |" in text and "its row is the unmerged test top-1" in text
    assert "lora quant=nf4: merging (re-quantizing) cost +1.00 points of test top-1" in text

    table.loc[table["variant"].eq("lora r=8") & table["seed"].eq(0), "merge.ok"] = False
    assert equal_bits.deployed_top1(table).isna().sum() == 1


def test_a_study_without_qalora_has_no_qalora_section():
    from peftlab.analysis.report import equal_bits

    table = qalora_table([0.7] * 5)
    assert equal_bits.report_section(table[table["method"] != "qalora"], "t", {}) == []


def test_a_metric_no_run_measured_is_left_out_of_the_report(tmp_path):
    """Top-5 of a 5-class dataset is None in every result: no empty top-5 column, no 'nan'."""
    study = write_study_dir(tmp_path / "study")
    for path in study.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        if result.get("metrics"):
            result["metrics"]["test_top5"] = None
            path.write_text(json.dumps(result))
    text = write_report(study).read_text()
    assert "Test top-1" in text and "top-5" not in text.lower() and "nan" not in text


def test_a_path_reads_the_same_from_older_and_newer_runs(tmp_path):
    """Older runs recorded model.pretrained relative to the repository root, newer ones absolute:
    the results table shows both as the run id sees them, so the column does not vary."""
    from testkit import REPO

    from peftlab.analysis.results.load import load_results

    study = write_study_dir(tmp_path / "study")
    for i, path in enumerate(sorted((study / "runs").glob("*/result.json"))):
        result = json.loads(path.read_text())
        pretrained = "cache/pretrained/mnist-vit/model.safetensors"
        result["config"]["model"] = {"pretrained": pretrained if i % 2 else str(REPO / pretrained)}
        path.write_text(json.dumps(result))
    assert set(load_results(study)["config.model.pretrained"]) == {"cache/pretrained/mnist-vit/model.safetensors"}


def test_the_environment_says_whether_the_cpu_arithmetic_was_pinned():
    from peftlab.analysis.report.protocol_card import environment_section as _environment

    pinned = {
        "hardware": {"cpu": "AMD EPYC", "cpu_count": 2, "device": "cpu", "cpu_flags": ["avx2", "avx512f"]},
        "arithmetic": {"reproducible": True, "pinned": True},
    }
    text = "\n".join(_environment(pinned))
    assert "CPU flags avx2 avx512f" in text and "CPU arithmetic: pinned (train.reproducible" in text
    assert "- hardware: AMD EPYC, 2 CPUs" in text  # a run recorded before its CPU's generation was
    generation = {**pinned["hardware"], "cpu_generation": "family 23 model 1 stepping 2"}
    text = "\n".join(_environment({**pinned, "hardware": generation}))
    assert "- hardware: AMD EPYC (family 23 model 1 stepping 2), 2 CPUs" in text
    text = "\n".join(_environment({**pinned, "arithmetic": {"reproducible": False, "pinned": False}}))
    assert "the CPU's own" in text
    text = "\n".join(_environment({**pinned, "arithmetic": {"reproducible": True, "pinned": True, **AMD}}))
    assert "(CPU vendor AuthenticAMD, MKL branch AUTO,STRICT)" in text
    assert "CPU arithmetic" not in "\n".join(_environment({"hardware": {}}))  # runs from before it was recorded


def pin_runs(study: Path, records: list[dict]) -> None:
    """Give the study's runs, in turn, the pinned arithmetic records ``records`` (fabricated provenance)."""
    for i, path in enumerate(sorted(study.glob("runs/*/result.json"))):
        result = json.loads(path.read_text())
        result["provenance"]["arithmetic"] = {"reproducible": True, "pinned": True, **records[i % len(records)]}
        path.write_text(json.dumps(result))


INTEL = {"cpu_vendor": "GenuineIntel", "cpu_model": "Intel Xeon", "mkl_branch": "AVX2,STRICT"}
AMD = {"cpu_vendor": "AuthenticAMD", "cpu_model": "AMD EPYC", "mkl_branch": "AUTO,STRICT"}


def test_the_report_warns_when_pinned_runs_came_from_cpus_whose_arithmetic_is_recorded_differently(
    tmp_path, default_report
):
    study = write_study_dir(tmp_path / "mixed")
    pin_runs(study, [INTEL, AMD])
    report = write_report(study).read_text()
    warning = [line for line in report.splitlines() if "whose arithmetic is recorded differently" in line]
    assert len(warning) == 1
    assert "GenuineIntel (Intel Xeon), MKL AVX2,STRICT: 8 runs" in warning[0]
    assert "AuthenticAMD (AMD EPYC), MKL AUTO,STRICT: 7 runs" in warning[0]
    # one vendor, two models: the same record (MKL promises its AVX2 branch's bits on every Intel CPU)
    study = write_study_dir(tmp_path / "one")
    pin_runs(study, [INTEL])
    assert "recorded differently" not in write_report(study).read_text()
    # runs from before the record named the vendor: nothing to say
    assert "recorded differently" not in default_report.read_text()


def test_several_datasets_get_the_mean_optimality_gap_average_rank_and_a_performance_profile(tmp_path):
    """The aggregates by hand: full scores 0.80-0.82 on a and 0.60-0.62 on b, lora 0.79-0.81 and
    0.60-0.64: mean over datasets (0.81 + 0.61) / 2 = 71.0 and (0.80 + 0.6233) / 2 = 71.2; the
    optimality gap 100 minus the mean; ranks 1.5 each (full wins a, lora wins b)."""
    root = tmp_path / "study"
    runs_a = [
        ("full data=a", "full", 8, {0: 0.80, 1: 0.82, 2: 0.81}),
        ("lora data=a", "lora", 8, {0: 0.81, 1: 0.79, 2: 0.80}),
    ]
    runs_b = [
        ("full data=b", "full", 8, {0: 0.60, 1: 0.61, 2: 0.62}),
        ("lora data=b", "lora", 8, {0: 0.63, 1: 0.60, 2: 0.64}),
    ]
    write_study_dir(root, runs_a, data="a")
    shutil.copytree(write_study_dir(tmp_path / "b", runs_b, data="b") / "runs", root / "runs", dirs_exist_ok=True)
    report = write_report(root).read_text()
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")
        for line in report.splitlines()
        if line.startswith(("| full |", "| lora |"))
    }
    assert rows["full"][4].startswith("71.0 [") and rows["lora"][4].startswith("71.2 [")
    assert rows["full"][5].startswith("29.0 [") and rows["lora"][5].startswith("28.8 [")
    assert rows["full"][6] == rows["lora"][6] == "1.50"
    assert "### Performance profile across datasets" in report
    assert (root / "report" / "figures" / "performance_profile.png").is_file()


def test_rliables_aggregates_by_hand():
    import numpy as np
    import pandas as pd

    from peftlab.analysis.stats import aggregates

    tasks = [np.array([0.2, 0.4, 0.6]), np.array([0.9, 1.0])]
    assert aggregates.task_mean(tasks) == pytest.approx((0.4 + 0.95) / 2)
    assert aggregates.optimality_gap(tasks) == pytest.approx(1 - (0.4 + 0.95) / 2)
    assert aggregates.optimality_gap(tasks, gamma=0.5) == pytest.approx(0.5 - ((0.2 + 0.4 + 0.5) / 3 + 0.5) / 2)
    profile = aggregates.performance_profile(tasks, np.array([0.1, 0.3, 0.95]))
    assert profile.tolist() == pytest.approx([(1 + 1) / 2, (2 / 3 + 1) / 2, (0 + 0.5) / 2])
    low, high = aggregates.stratified_interval(aggregates.task_mean, tasks, n_resamples=500)
    assert low <= aggregates.task_mean(tasks) <= high and low >= (0.2 + 0.9) / 2 and high <= (0.6 + 1.0) / 2
    ranks = aggregates.average_ranks(pd.DataFrame({"a": [0.9, 0.8, 0.8], "b": [0.1, 0.3, 0.2]}, index=["x", "y", "z"]))
    assert ranks.to_dict() == {
        "x": pytest.approx((1 + 3) / 2),
        "y": pytest.approx((2.5 + 1) / 2),
        "z": pytest.approx((2.5 + 2) / 2),
    }


def significance_text(scores):
    """The report's significance section for {variant: test top-1 per seed 0, 1, ...} against "full"."""
    import pandas as pd

    from peftlab.analysis.report import significance
    from peftlab.analysis.stats.comparisons import paired_comparisons

    rows = [
        {
            "run_id": f"{v}-{seed}",
            "status": "completed",
            "variant": v,
            "method": v.split()[0],
            "seed": seed,
            "metrics.test_top1": top1,
        }
        for v, values in scores.items()
        for seed, top1 in enumerate(values)
    ]
    table = pd.DataFrame(rows)
    return "\n".join(significance.report_section(paired_comparisons(table, "full"), table, {}))


FULL = [0.745, 0.723, 0.755, 0.714, 0.759]


def test_a_difference_not_significant_and_below_its_mde_is_read_as_not_shown():
    near = [v + d for v, d in zip(FULL, [0.004, -0.006, 0.009, -0.002, 0.005])]  # +0.2 points, sd 0.59
    text = significance_text({"full": FULL, "linear": [0.593, 0.591, 0.597, 0.592, 0.594], "lora r=4": near})
    # MDE: statsmodels' d_z 1.682 for 5 pairs times the sd 0.594 of the differences = 1.00 point;
    # 1 point is 1.68 sd: statsmodels' nobs 5.02, so 6 pairs
    assert "| lora r=4 | 5 | +0.20 | 0.495 | 1.00 | 6 |" in text
    assert (
        "**Not significant, and smaller than these seeds could detect:** lora r=4 (+0.20 points; MDE 1.00 "
        "points; 1 point needs 6 seeds). The test would miss a true difference of that size more than 20% of "
        "the time, so read these as 'no difference shown', not as 'equal to the baseline'."
    ) in text
    # lora r=4's seeds spread 2.5 points around its mean; linear's 0.2 points, 14.6 points below full
    assert (
        "**Seeds spread more than the difference from the baseline:** lora r=4 (sd over seeds 2.52 points, "
        "mean difference +0.20)."
    ) in text
    assert "linear (" not in text


def test_only_a_difference_both_not_significant_and_below_its_mde_is_called_not_shown():
    # lora r=4: +0.72 points, p = 0.0178, 0.0534 after Holm over three: not significant, yet above its MDE of
    # 0.70; lora r=8 (+0.20) and linear (-0.06): not significant and below theirs; lora r=16: one pair, no MDE
    above = [v + d for v, d in zip(FULL, [0.010, 0.002, 0.012, 0.004, 0.008])]
    near = [v + d for v, d in zip(FULL, [0.004, -0.006, 0.009, -0.002, 0.005])]
    noise = [v + d for v, d in zip(FULL, [-0.003, 0.005, -0.008, 0.004, -0.001])]
    text = significance_text({"full": FULL, "lora r=4": above, "lora r=8": near, "linear": noise, "lora r=16": [0.7]})
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines() if line.startswith("| l")}
    assert rows["lora r=4"][3:5] == ["0.0534", "0.70"] and rows["lora r=4"][-1] == "no |"
    assert rows["lora r=16"][4:6] == ["n/a", "n/a"]
    sentence = next(line for line in text.splitlines() if "smaller than these seeds could detect" in line)
    assert "lora r=8 (+0.20 points" in sentence and "linear (-0.06 points" in sentence
    assert "lora r=4" not in sentence and "lora r=16" not in sentence


TEXT_RUNS = [("full", "full", 8, {0: 0.80, 1: 0.82, 2: 0.79}), ("lora r=8", "lora", 8, {0: 0.78, 1: 0.81, 2: 0.80})]


def text_study(root: Path, task: str) -> Path:
    """A GLUE MRPC study (F1 and Matthews beside top-1; no top-5 with two classes) or a causal LM's (per-token
    top-1 and top-5, perplexity), from the hand-written results of ``write_study_dir``."""
    study = write_study_dir(root, runs=TEXT_RUNS, data="text")
    for path in study.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        top1, seed = result["metrics"]["test_top1"], result["config"]["seed"]
        result["config"]["model"] = {"source": "hf-text", "path": "/models/tiny", "task": task}
        if task == "classification":
            result["config"]["data"]["name"] = "glue/mrpc"
            result["metrics"].update(test_top5=None, test_f1=top1 + 0.05, test_matthews=2 * top1 - 1.1)
        else:
            result["config"]["data"]["name"] = "instructions"
            result["metrics"].update(test_perplexity=30 - 20 * top1 + seed, test_f1=None, test_matthews=None)
        path.write_text(json.dumps(result))
    return study


def main_table(report: str) -> list[str]:
    start = report.index("## Main table")
    return report[start : report.index("LaTeX: `tables/main_table.tex`", start)].strip().splitlines()


def test_a_glue_study_shows_f1_and_matthews_times_100(tmp_path):
    study = text_study(tmp_path / "mrpc", "classification")
    table = main_table(write_report(study).read_text())
    assert table[2] == (
        "| Configuration | Trainable params | n | Test top-1 (%) [95% CI] | Test F1 (×100) [95% CI] | "
        "Test Matthews corr. (×100) [95% CI] |"
    )
    # F1 0.85, 0.87, 0.84 -> 85.3; Matthews 0.50, 0.54, 0.48 -> 50.7
    assert table[4] == (
        "| full | 800.0K (100.0%) | 3 | **80.3** [76.5, 84.1] | **85.3** [81.5, 89.1] | **50.7** [43.1, 58.3] |"
    )
    assert table[7].startswith(
        "Mean over n seeds [95% Student-t interval of the mean over seeds], accuracies in %, F1 and Matthews "
        "correlation ×100. Bold: best mean per column. "
    )
    tex = (study / "report" / "tables" / "main_table.tex").read_text()
    assert (
        r"\caption{mrpc: test accuracy, F1 and Matthews correlation (mean and 95\% Student-t interval of the mean "
        r"over seeds) and trainable parameters.}"
    ) in tex
    assert r"Test top-1 (\%) & Test F1 ($\times$100) & Test Matthews corr. ($\times$100) \\" in tex
    full = r"full & 800.0K (100.0\%) & 3 & $\mathbf{80.3} \pm 3.8$ & $\mathbf{85.3} \pm 3.8$ & $\mathbf{50.7} \pm 7.6$"
    assert full in tex


def test_a_causal_lm_study_shows_its_perplexity_lowest_best_and_its_accuracies_per_token(tmp_path):
    study = text_study(tmp_path / "lm", "causal-lm")
    table = main_table(write_report(study).read_text())
    assert table[2] == (
        "| Configuration | Trainable params | n | Test top-1 per token (%) [95% CI] | "
        "Test top-5 per token (%) [95% CI] | Test perplexity (lower is better) [95% CI] |"
    )
    # perplexity 14.0, 14.6, 16.2 (full) and 14.4, 14.8, 16.0 (lora): the lower mean, full's 14.9, is bold
    assert table[4].endswith("| **14.9** [12.1, 17.8] |") and table[5].endswith("| 15.1 [13.0, 17.1] |")
    assert "accuracies in %, perplexity as it is. Bold: best mean per column (the lowest perplexity)." in table[7]
    tex = (study / "report" / "tables" / "main_table.tex").read_text()
    assert r"\caption{lm: test accuracy and perplexity (mean and" in tex
    # the per-token top-5's interval is cut at 100%: every cell is written [low, high], not +- half-width
    assert r"& Test perplexity (lower is better) \\" in tex and r"$\mathbf{14.9}$ [12.1, 17.8] \\" in tex


def test_an_image_studys_report_leaves_out_the_matthews_and_f1_its_runs_report(tmp_path, default_report):
    """Image classifiers report Matthews (and F1 with two classes) too: their report is what it was without."""
    plain, scored = default_report.parent.parent, write_study_dir(tmp_path / "scored" / "study")
    for path in scored.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        result["metrics"].update(test_f1=0.5, test_matthews=0.4, test_perplexity=None, val_matthews=0.4)
        path.write_text(json.dumps(result))
    write_report(scored)
    for name in ("report.md", "tables/main_table.tex"):
        # the results' SHA-256 differs: the scored runs' result.json files differ
        unhashed = [
            re.sub(rb"SHA-256 `[0-9a-f]{64}`", b"", (d / "report" / name).read_bytes()) for d in (plain, scored)
        ]
        assert unhashed[0] == unhashed[1]


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed on this machine")
def test_a_text_studys_main_table_compiles(tmp_path):
    study = text_study(tmp_path / "mrpc", "classification")
    write_report(study)
    tables = study / "report" / "tables"
    subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "main_table_document.tex"],
        cwd=tables,
        check=True,
        capture_output=True,
        timeout=480,
    )
    assert (tables / "main_table_document.pdf").is_file()


# what a damaged or hand-edited result.json may hold as a test top-1: none of it is a result
BAD_TOP1 = ["0.9", [0.9], True, float("inf"), 1e308, {"mean": 0.9}, -0.5]


def damaged_study(root: Path) -> Path:
    """DEFAULT_LIKE with every seed of the linear probe (the worst configuration) given a test top-1 that would
    make it the best if it were read as a number."""
    study = write_study_dir(root)
    linear = sorted((study / "runs").glob("linear-*"))
    for run_dir, value in zip(linear, BAD_TOP1[:5], strict=True):
        result = json.loads((run_dir / "result.json").read_text())
        result["metrics"]["test_top1"] = value
        (run_dir / "result.json").write_text(json.dumps(result))
    return study


@pytest.mark.parametrize("value", BAD_TOP1)
def test_a_test_metric_that_is_no_finite_number_in_range_makes_the_run_damaged(tmp_path, value):
    from peftlab.analysis.results.load import load_results

    study = write_study_dir(tmp_path / "study", runs=DEFAULT_LIKE[:2])
    run_dir = study / "runs" / "linear-0-fashion_mnist"
    result = json.loads((run_dir / "result.json").read_text())
    result["metrics"]["test_top1"] = value
    (run_dir / "result.json").write_text(json.dumps(result))
    row = load_results(study).set_index("run_id").loc["linear-0-fashion_mnist"]
    assert row["status"] == "damaged" and row["error"].startswith("result.json: metrics.test_top1 is ")
    assert "expected a finite number in [0, 1]" in row["error"] and pd.isna(row["metrics.test_top1"])


def test_the_report_names_damaged_runs_and_never_reports_their_metrics(tmp_path):
    report = write_report(damaged_study(tmp_path / "study")).read_text()
    damaged = [line for line in report.splitlines() if "| damaged |" in line]
    assert len(damaged) == 5 and all("metrics.test_top1 is " in line for line in damaged)
    table = main_table(report)
    assert not any(line.startswith("| linear") for line in table)
    assert next(line for line in table if line.startswith("| full")).count("**") == 4  # full: the best, in bold


def test_a_paper_of_a_study_with_damaged_runs_leaves_them_out(tmp_path):
    from peftlab.analysis.paper import build as paper

    paper.write_paper(damaged_study(tmp_path / "study"), tmp_path / "paper", compile=False)
    main_table = (tmp_path / "paper" / "tables" / "main_table.tex").read_text()
    assert "linear" not in main_table and r"full & 800.0K (100.0\%) & 5 & $\mathbf{73.9}" in main_table


def test_a_study_in_a_folder_of_another_name_is_titled_by_its_study_file_s_name(tmp_path):
    """``peftlab study s.yaml --study-dir A`` keeps s.yaml's copy in A: the report's heading and the paper's
    \\studyName are the study's name, not the folder's; a folder without that copy keeps its own name."""
    from peftlab.analysis.paper.build import write_paper

    study_dir = write_study_dir(tmp_path / "A")
    study = yaml.safe_load((study_dir / "study.yaml").read_text())
    (study_dir / "study.yaml").write_text(yaml.safe_dump({**study, "name": "rank_ablation"}))
    write_report(study_dir)
    assert (study_dir / "report" / "report.md").read_text().startswith("# Study report: rank_ablation\n")
    write_paper(study_dir, tmp_path / "paper", compile=False)
    assert "\\newcommand{\\studyName}{rank\\_ablation}" in (tmp_path / "paper" / "results.tex").read_text()
    (study_dir / "study.yaml").unlink()
    write_report(study_dir)
    assert (study_dir / "report" / "report.md").read_text().startswith("# Study report: A\n")
