"""Issue 73, item 2: ablations of any number of settings. Every axis a group varies is read from all of its runs
(a run shared with the main group records only the main group's axes), said in Methods as crossed (a full
factorial) or varied together, the group's name escaped for LaTeX; the paper has an ablation table, and the rank
figure draws a line per level of a setting crossed with r, as its caption says, instead of pooling over it."""

import re
import shutil

import pytest
from ablationfiles import write_crossed_study
from test_paper import macros

from peftlab.analysis.paper import build as paper

FIGURES_DRAWN = ()  # reads the papers' text and tables: the figures' files written empty (conftest.py)


@pytest.fixture(scope="module")
def crossed(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossed")
    main = paper.write_paper(write_crossed_study(root / "study"), root / "paper", compile=False).read_text()
    return root / "paper", main, macros((root / "paper" / "results.tex").read_text())


def test_methods_say_a_crossed_ablation_by_each_setting_and_its_levels(crossed):
    _, _, defined = crossed
    text = defined["methodsText"]
    assert (
        r"The rank\_targets ablation (lora r=4, lora r=4 targets=all-linear, lora r=8 and lora r=8 "
        r"targets=all-linear) crosses the rank $r$ over 4 and 8 with the adapted modules over standard and "
        "all-linear, a full factorial of 4 configurations." in text
    )
    assert "rank_targets" not in text.replace(r"rank\_targets", "")  # escaped wherever it is said
    assert "sets the adapted modules to" not in text  # a crossed setting is not one "set with" another


def test_methods_say_settings_varied_together_as_not_crossed(tmp_path):
    study = write_crossed_study(tmp_path / "study")
    for run in [*study.glob("runs/lora4all-s*"), *study.glob("runs/lorar8-s*")]:
        shutil.rmtree(run)  # left: r = 4 on the standard targets, r = 8 on all linears
    paper.write_paper(study, tmp_path / "paper", compile=False)
    text = macros((tmp_path / "paper" / "results.tex").read_text())["methodsText"]
    assert (
        r"The rank\_targets ablation (lora r=4 and lora r=8 targets=all-linear) varies the rank $r$ and the adapted "
        r"modules together, not crossed: ($r$, \texttt{method.target\_modules}) = (4, standard) and (8, all-linear)."
        in text
    )


def test_the_paper_has_an_ablation_table(crossed):
    out, main, _ = crossed
    assert r"Table~\ref{tab:ablation} gives the ablation's configurations by the settings it varies." in main
    assert r"\input{tables/ablation}" in main
    table = (out / "tables" / "ablation.tex").read_text()
    assert r"\caption{The rank\_targets ablation, which crosses its settings" in table
    rows = [line for line in table.splitlines() if line.endswith(r"\\")]
    assert rows == [
        r"Configuration & $r$ & Targets & Trainable & $n$ & Test top-1 (\%) \\",
        # the one order of every table and figure (figures/order.py: by r, then the targets' names)
        r"lora r=4 targets=all-linear & 4 & all-linear & 30.7K & 3 & $69.5 \pm 1.6$ \\",
        r"lora r=4 & 4 & standard & 9.5K & 3 & $67.6 \pm 3.4$ \\",
        r"lora r=8 targets=all-linear & 8 & all-linear & 57.4K & 3 & $\mathbf{70.5} \pm 1.6$ \\",
        r"lora r=8 & 8 & standard & 17.7K & 3 & $68.3 \pm 4.7$ \\",
    ]


def test_the_rank_figure_draws_a_line_per_crossed_level_and_says_so(crossed):
    _, main, _ = crossed
    caption = re.search(r"\\caption\{(Test top-1 against the LoRA rank[^}]*)\}", main).group(1)
    assert "one line per level of the adapted modules (not pooled over it)" in caption
