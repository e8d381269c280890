import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from peftlab.analysis.report import tables
from peftlab.analysis.stats.comparisons import paired_comparisons
from peftlab.analysis.stats.intervals import summarize

GOLDEN = Path(__file__).parent / "golden" / "main_table.tex"
METRICS = ["metrics.test_top1", "metrics.test_top5"]


def main_table(results):
    summary = pd.concat([summarize(results, metric) for metric in METRICS], ignore_index=True)
    comparisons = pd.concat([paired_comparisons(results, "full", metric) for metric in METRICS])
    return tables.latex_table(summary, comparisons, caption="Accuracy on the test split (3 seeds).", label="tab:main")


def test_main_table_matches_the_golden_file(results_table):
    # To accept an intended change: write main_table(...) to GOLDEN, read the diff, commit it.
    assert main_table(results_table) == GOLDEN.read_text()


def test_latex_escape_escapes_every_special_character():
    escaped = tables.latex_escape(r"a_b%c&d#e$f{g}h~i^j\k<l>m|n")
    assert escaped == (
        r"a\_b\%c\&d\#e\$f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
        r"\textless{}l\textgreater{}m\textbar{}n"
    )


def summary_row(variant, mean, low, high, n=3, metric="metrics.test_top1", ci_method="t", **extra):
    return {
        "variant": variant,
        "metric": metric,
        "n": n,
        "mean": mean,
        "ci_low": low,
        "ci_high": high,
        "ci_method": ci_method,
        **extra,
    }


def test_table_escapes_names_and_has_booktabs_structure():
    summary = pd.DataFrame([summary_row("lora_qv r=8 & 50%", 0.8, 0.79, 0.81), summary_row("full", 0.7, 0.69, 0.71)])
    tex = tables.latex_table(summary, caption="Runs #1_2", label="tab:x")
    assert r"lora\_qv r=8 \& 50\%" in tex
    assert r"\caption{Runs \#1\_2}" in tex
    lines = tex.splitlines()
    assert lines[0] == r"\begin{table}[t]" and lines[-1] == r"\end{table}"
    assert lines.index(r"\toprule") < lines.index(r"\midrule") < lines.index(r"\bottomrule")
    body = lines[lines.index(r"\toprule") + 1 : lines.index(r"\bottomrule")]
    rows = [line for line in body if line != r"\midrule"]
    assert {row.count("&") - row.count(r"\&") for row in rows} == {2}  # Configuration, n, one metric


def test_best_mean_as_printed_is_bold_in_each_column():
    summary = pd.DataFrame(
        [
            summary_row("a", 0.8004, 0.79, 0.81),
            summary_row("b", 0.8001, 0.79, 0.81),  # prints as 80.0 too: tied, bold
            summary_row("c", 0.7, 0.69, 0.71),
            summary_row("a", 0.90, 0.89, 0.91, metric="metrics.test_top5"),
            summary_row("c", 0.95, 0.94, 0.96, metric="metrics.test_top5"),
        ]
    )
    rows = {line.split(" & ")[0]: line for line in tables.latex_table(summary).splitlines() if " & " in line}
    assert r"$\mathbf{80.0} \pm 1.0$" in rows["a"] and r"$\mathbf{80.0} \pm 1.0$" in rows["b"]
    assert r"$70.0 \pm 1.0$" in rows["c"] and r"$\mathbf{95.0} \pm 1.0$" in rows["c"]
    assert r"$90.0 \pm 1.0$" in rows["a"]
    assert rows["b"].endswith(r"& -- \\")  # no top-5 result for b


def test_single_run_shows_the_mean_alone_and_the_note_says_so():
    summary = pd.DataFrame([summary_row("a", 0.8, np.nan, np.nan, n=1), summary_row("b", 0.7, 0.69, 0.71)])
    tex = tables.latex_table(summary)
    assert r"a & 1 & $\mathbf{80.0}$ \\" in tex
    assert "No interval where $n = 1$." in tex


def test_markers_follow_holm_corrected_p_values():
    summary = pd.DataFrame(
        [summary_row("full", 0.8, 0.79, 0.81), summary_row("a", 0.7, 0.69, 0.71), summary_row("b", 0.75, 0.74, 0.76)]
    )
    comparisons = pd.DataFrame(
        {
            "metric": ["metrics.test_top1"] * 2,
            "baseline": ["full"] * 2,
            "variant": ["a", "b"],
            "p_ttest": [0.01, 0.04],
            "p_ttest_holm": [0.02, 0.04 * 1.5],
        }
    )
    tex = tables.latex_table(summary, comparisons)
    assert r"$70.0 \pm 1.0^{*}$" in tex
    assert r"$75.0 \pm 1.0$" in tex
    assert "differs from full with $p < 0.05$" in tex
    assert "^{*}" not in tables.latex_table(summary)


def test_parameter_counts_read_well():
    assert tables.format_count(930) == "930"
    assert tables.format_count(73_728) == "73.7K"
    assert tables.format_count(5_526_346) == "5.5M"
    assert tables.format_params(73_728, 73_728 / 5_526_346) == "73.7K (1.3%)"
    assert tables.format_params(1_930, 1_930 / 5_526_346) == "1.9K (0.035%)"
    assert tables.format_params(5_526_346, 1.0) == "5.5M (100.0%)"
    assert tables.format_params(73_728, np.nan) == "73.7K"
    assert tables.format_params(np.nan, np.nan) is None


def test_latex_document_wraps_the_table():
    document = tables.latex_document("TABLE\n")
    assert document.startswith("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n")
    assert document.endswith("TABLE\n\\end{document}\n")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed on this machine")
def test_latex_document_compiles(results_table, tmp_path):
    (tmp_path / "table.tex").write_text(tables.latex_document(main_table(results_table)))
    subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "table.tex"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=240,
    )
    assert (tmp_path / "table.pdf").stat().st_size > 0


def test_markdown_table(results_table):
    summary = summarize(results_table)
    comparisons = paired_comparisons(results_table, "full")
    text = tables.markdown_table(summary, comparisons)
    lines = text.splitlines()
    assert lines[0] == "| Configuration | Trainable params | n | Test top-1 (%) [95% CI] |"
    assert lines[1] == "|:---|---:|---:|---:|"
    assert len(lines) == 2 + 5 + 2  # header, rule, 5 variants, blank line, note
    assert lines[2].startswith("| full | 5.5M (100.0%) | 3 | **80.9** [")
    assert "| linear | 1.9K (0.035%) | 3 | 70.2 [" in lines[3] and lines[3].endswith("] * |")
    assert lines[6] == "| lora r=64 | 1.2M (21.4%) | 1 | 80.8 |"
    assert "Holm-corrected" in lines[-1]


def test_markdown_table_escapes_pipes():
    summary = pd.DataFrame([summary_row("a|b", 0.8, 0.79, 0.81)])
    assert r"| a\|b | 3 | **80.0** [79.0, 81.0] |" in tables.markdown_table(summary)


def test_latex_text_escapes_text_and_keeps_math():
    assert tables.latex_text("LoRA ($r{=}4$), 50% & more") == r"LoRA ($r{=}4$), 50\% \& more"
    assert tables.latex_text(r"cost \$5 for $x_1$") == r"cost \$5 for $x_1$"
    assert tables.latex_text("a $ b") == r"a \$ b"  # unpaired: plain text
    assert tables.latex_text("lora_qv r=8") == r"lora\_qv r=8"


@pytest.mark.parametrize(
    "label",
    [
        r"LoRA ($\input{/etc/hostname}$)",  # a command that reads a file
        r"x ($\alpha \write18{id}$)",  # an allowed command beside one that is not
        r"x ($^^5cinput{x}$)",  # ^^5c is a backslash to TeX
        r"x ($r}{=4$)",  # braces that close what the label did not open
        r"x ($a % b$)",  # a comment that would swallow the rest of the line
    ],
)
def test_latex_text_prints_math_that_is_not_only_symbols_as_text(label):
    assert tables.latex_text(label) == tables.latex_escape(label)


def test_latex_text_keeps_math_of_symbols_and_typesetting_commands():
    label = r"LoRA ($\alpha{=}2r$, $W_0 + \Delta W$, $\times 10^{-3}$)"
    assert tables.latex_text(label) == label


def test_display_names_rename_configurations_and_methods():
    labels = {"lora r=4": "LoRA ($r{=}4$)", "lora": "LoRA", "full": "Full FT"}
    assert tables.display_name("lora r=4", "lora", labels) == "LoRA ($r{=}4$)"
    assert tables.display_name("lora r=8", "lora", labels) == "LoRA r=8"
    assert tables.display_name("full", "full", labels) == "Full FT"
    assert tables.display_name("lora_qv r=8", "lora_qv", labels) == "lora_qv r=8"
    assert tables.display_name("lora r=8", None, labels) == "LoRA r=8"
    assert tables.display_name("linear", "linear", None) == "linear"


def test_tables_show_display_names():
    summary = pd.DataFrame(
        [summary_row("lora r=4", 0.8, 0.79, 0.81, method="lora"), summary_row("full", 0.7, 0.69, 0.71, method="full")]
    )
    labels = {"lora r=4": "LoRA ($r{=}4$)", "full": "Full & co"}
    tex = tables.latex_table(summary, labels=labels)
    assert r"LoRA ($r{=}4$) & 3 &" in tex and r"Full \& co & 3 &" in tex
    assert "| LoRA ($r{=}4$) | 3 |" in tables.markdown_table(summary, labels=labels)


def test_bootstrap_intervals_are_written_low_high_never_plus_minus():
    # asymmetric: mean 74.5, interval [72.3, 75.5]; "74.5 ± 1.6" would claim 76.1 as a bound
    summary = pd.DataFrame([summary_row("full", 0.745, 0.723, 0.755, ci_method="BCa")])
    tex = tables.latex_table(
        summary, interval_text="95% BCa bootstrap interval of the mean over seeds (9999 resamples, seed 0)"
    )
    assert r"$\mathbf{74.5}$ [72.3, 75.5]" in tex and r"\pm" not in tex.split(r"\midrule")[1]
    assert (
        r"Mean over $n$ seeds [the 95\% BCa bootstrap interval of the mean over seeds (9999 resamples, seed 0)]" in tex
    )
    assert "**74.5** [72.3, 75.5]" in tables.markdown_table(summary)
    assert "[95% bootstrap interval of the mean over seeds (BCa)]" in tables.markdown_table(summary)


def test_t_intervals_are_written_plus_minus_and_the_note_says_which():
    summary = pd.DataFrame([summary_row("full", 0.745, 0.735, 0.755)])
    tex = tables.latex_table(summary)
    assert r"$\mathbf{74.5} \pm 1.0$" in tex
    assert r"Mean over $n$ seeds $\pm$ half the width of the 95\% Student-t interval of the mean over seeds" in tex


def test_a_cut_interval_is_written_low_high_and_the_note_says_where_it_was_cut():
    """BitFit at n = 2 near 86%: not 86.0 ± 23.8 (which reads as up to 109.9%) but 86.0 [62.2, 100.0], and the
    note says the interval was cut at 0 and 100."""
    df = pd.DataFrame(
        {"variant": ["bitfit"] * 2 + ["lora"] * 2, "status": ["completed"] * 4, "seed": [0, 1, 0, 1]}
        | {"metrics.test_top1": [0.84125, 0.87875, 0.70, 0.71]}
    )
    summary = summarize(df)
    latex = tables.latex_table(summary, caption="c", label="tab:t")
    assert r"$\mathbf{86.0}$ [62.2, 100.0]" in latex and r"\pm" not in latex
    assert "cut at 0 and 100 where it passed them" in latex
    markdown = tables.markdown_table(summary)
    assert "**86.0** [62.2, 100.0]" in markdown and "cut at 0 and 100 where it passed them" in markdown
