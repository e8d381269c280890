"""Issue 82, "done when": every number of the paper's abstract and results section traces to results.csv.

The paper's main.tex holds no digit of its own; its macros (results.tex) are expanded, the configurations' names
(which may hold digits: "lora r=8") taken out, and every number left is recomputed here from the report's
results.csv with pandas, scipy and statsmodels, independently of peftlab's statistics: means, t-intervals, paired
differences, Holm-corrected paired t-tests (Holm within each family: the main table's configurations, the ablations'
apart), minimum detectable differences, correct counts, chance rates and each seed's binomial test, the Wilcoxon
floor. What is not of the runs is a stated setting of the method (alpha 0.05, 95% intervals, 80% power, Wilcoxon's 5
pairs, the 2 of its floor's 2/2^n) and is listed as such.
"""

import re

import numpy as np
import pandas as pd
import pytest
from paperkinds import default_kind, text_kind, vision_kind
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from test_paper import macros

from peftlab.analysis.paper import build as paper
from peftlab.analysis.results.load import load_results

FIGURES_DRAWN = ()  # text and files read, no figure drawn (conftest.py)

SETTINGS = {0.05, 95.0, 80.0, 5.0, 2.0}  # alpha, confidence, power, Wilcoxon's least pairs, its floor's 2


def expand(text: str, defined: dict[str, str]) -> str:
    """``text`` with every macro of results.tex replaced by its value, until none is left."""
    for _ in range(10):
        text = re.sub(r"\\([A-Za-z]+)\{\}", lambda m: defined.get(m.group(1), m.group(0)), text)
        text = re.sub(r"\\([A-Za-z]+)(?![A-Za-z{])", lambda m: defined.get(m.group(1), m.group(0)), text)
    return text


def sections(main: str) -> str:
    """The abstract and the Results section, without the figures, tables, author's notes and references."""
    abstract = main[main.index(r"\begin{abstract}") : main.index(r"\end{abstract}")]
    results = main[main.index(r"\section{Results}") :]
    results = results[: results.index(r"\section", len(r"\section{Results}"))]
    text = abstract + results
    text = re.sub(r"\\begin\{figure\}.*?\\end\{figure\}", "", text, flags=re.DOTALL)
    text = re.sub(r"\\authornote\{[^}]*\}", "", text)
    return re.sub(r"\\(input|ref|label|citep|citet)\{[^}]*\}", "", text)


def numbers_in(text: str) -> list[str]:
    return re.findall(r"\d+(?:\{,\}\d{3})*(?:\.\d+)?", text)


def expected(csv: pd.DataFrame, baseline: str) -> set[float]:
    """Every number the sections may print, recomputed from results.csv."""
    done = csv[csv["status"] == "completed"]
    top1 = done.pivot(index="seed", columns="variant", values="metrics.test_top1")
    values = {float(len(top1.columns)), float(top1.index.nunique()), float(len(done)), float(len(csv))}
    for column in [c for c in csv if c.startswith(("config.model.", "config.train."))]:  # the setup's sizes
        values |= {float(v) for v in pd.to_numeric(done[column], errors="coerce").dropna()}
    for variant in top1:
        x = top1[variant].dropna().to_numpy()
        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
        values |= {100 * x.mean(), 100 * (x.mean() - half), 100 * (x.mean() + half), float(len(x))}
    sizes = done.groupby("variant")["data.test_size"].sum()
    correct = (done["metrics.test_top1"] * done["data.test_size"]).round().groupby(done["variant"]).sum()
    values |= set(map(float, sizes)) | set(map(float, correct)) | {100 / s for s in done["data.test_size"]}
    classes = done["data.num_classes"].dropna().unique()
    if len(classes) == 1:  # each seed's own binomial test (the seeds share the test images); the largest p is told
        rate = 1 / classes[0]
        values |= {100 * rate, float(classes[0])}
        each = (done["metrics.test_top1"] * done["data.test_size"]).round()
        for _, runs in done.groupby("variant"):
            tests = [
                stats.binomtest(int(each[i]), int(runs.loc[i, "data.test_size"]), rate, alternative="greater")
                for i in runs.index
            ]
            values.add(max(t.pvalue for t in tests))
    others = [v for v in top1 if v != baseline]
    diffs = {v: (top1[v] - top1[baseline]).dropna() for v in others}
    # Holm within each family: the configurations with a run in the spec group "main", those only an ablation runs apart
    in_main = {v for v, g in zip(done["variant"], done["groups"].astype(str)) if "main" in g.split(",")}
    for family in ([v for v in others if v in in_main], [v for v in others if v not in in_main]):
        p = [stats.ttest_rel(top1[v], top1[baseline]).pvalue for v in family]
        values |= set(multipletests(p, method="holm")[1]) | {float(len(family))} if family else set()
        values |= {len(family) * 2 / 2 ** len(diffs[v]) for v in family}
    for d in diffs.values():
        n = len(d)
        values |= {100 * d.mean(), float(n), 2 / 2**n}
        effect = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
        values.add(100 * effect * d.std(ddof=1))
    return values | SETTINGS


def traces(number: str, values: set[float]) -> bool:
    """Whether ``number`` (as printed, to its decimals) is one of ``values`` rounded to as many decimals."""
    x = float(number.replace("{,}", ""))
    decimals = len(number.split(".")[1]) if "." in number else 0
    return any(abs(abs(v) - x) <= 0.5 * 10**-decimals + 1e-9 for v in values if np.isfinite(v))


@pytest.mark.parametrize("kind", [default_kind, vision_kind, text_kind])
def test_every_number_of_the_abstract_and_results_traces_to_results_csv(kind, tmp_path):
    study = kind(tmp_path)
    out = tmp_path / "paper"
    main = paper.write_paper(study, out, compile=False).read_text()
    defined = macros((out / "results.tex").read_text())
    load_results(study).to_csv(tmp_path / "results.csv", index=False)  # the report's results.csv (report/build.py)
    csv = pd.read_csv(tmp_path / "results.csv")
    baseline = "full"
    text = expand(sections(main), defined)
    for name in sorted({defined[k] for k in defined if k.startswith("name")}, key=len, reverse=True):
        text = text.replace(name, "NAME")  # a configuration's name is no number of the results
    found = numbers_in(text)
    assert len(found) > 20  # the sections say numbers, and each of them is checked
    values = expected(csv, baseline)
    untraced = [number for number in found if not traces(number, values)]
    assert not untraced, f"numbers of the abstract and results not in results.csv: {untraced}"
