"""The paper's tables under OUT/tables: the main table, the significance of each configuration against
the baseline, the literature, the protocol card, each ablation's configurations by the levels they vary and, for a
tuned study, the tuning table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from peftlab.analysis.figures.style import study_order
from peftlab.analysis.paper import tuning_table
from peftlab.analysis.paper.ablations import ablation_design, ablation_groups, axis_level, level_text
from peftlab.analysis.paper.findings import repeat_words
from peftlab.analysis.paper.macro_text import pairs_text, pct, pvalue, signed
from peftlab.analysis.paper.names import typeset_data, typeset_model
from peftlab.analysis.report import protocol_card
from peftlab.analysis.report.literature import Citation, literature_table, measured_words, study_rows
from peftlab.analysis.report.tables import format_count, latex_document, latex_table
from peftlab.analysis.results.escape import latex_escape
from peftlab.analysis.results.record import data_names
from peftlab.analysis.results.tuning_choices import borrowed_configurations, borrowed_note
from peftlab.analysis.results.units import decimal, display_name, metric_words
from peftlab.analysis.results.units import signed as signed_text
from peftlab.analysis.stats.comparisons import MIN_PAIRS_WILCOXON
from peftlab.analysis.stats.families import MAIN
from peftlab.analysis.stats.power import ALPHA, POWER
from peftlab.analysis.stats.ties import resolution, tied
from peftlab.utils.files import write_text_atomic

if TYPE_CHECKING:
    from peftlab.analysis.paper.study import Study


def write_tables(study: Study, citations: list[Citation], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    words = metric_words(study.metrics)  # "test accuracy", "test accuracy and perplexity"
    tex = latex_table(
        study.summary,
        study.comparisons,
        columns=study.metrics,
        # plain words only: read the same whether latex_table escapes its caption or not
        caption=f"{words[0].upper()}{words[1:]} and trainable parameters of each configuration on the test "
        "split; the note under the table says what each cell shows.",
        label="tab:main",
        labels=study.labels,
        borrowed=borrowed_configurations(study.df),
        resolution={metric: resolution(study.done, metric) for metric in study.metrics},
        chance=study.chance,
    )
    if study.modality != "vision":  # three score columns with long headers ("per token") overrun the margin
        tex = fit_width(tex)
    write_text_atomic(out / "main_table.tex", tex)
    if study.comparisons is not None:
        write_text_atomic(out / "significance.tex", significance_table(study))
    write_literature_table(study, citations, out / "literature.tex")
    card = protocol_card.latex_card(study.dir, study.done, study.labels)
    if card is not None:
        write_text_atomic(out / "protocol.tex", card)
    tables = [ablation_table(study, group, *found, i) for i, (group, found) in enumerate(ablations(study).items())]
    if tables:
        write_text_atomic(out / "ablation.tex", "\n".join(tables))
    if study.searches:
        tex = tuning_table.latex_table(study.searches, study.df, study.labels)
        write_text_atomic(out / "tuning.tex", tex)
        write_text_atomic(out / "tuning_document.tex", latex_document(tex, packages=("booktabs", "tabularx")))


def write_literature_table(study: Study, citations: list[Citation], path: Path) -> None:
    """The cited rows beside every configuration of the study, by its labels; none (and none left from an
    earlier paper) where no published row was measured on the study's data."""
    if not citations:
        path.unlink(missing_ok=True)
        return
    ours = [  # every configuration run, cited or not, by the study's labels
        {**row, "method": display_name(row["method"], None, study.labels)}
        for row in study_rows(study.df, citations, study.primary, every=True)
    ]
    setting = (  # the model and the data as the text names them (ViT-Ti/16, Fashion-MNIST, a study's dataset name)
        f"{', '.join(typeset_model(name, study) for name in study.models())}; "
        f"{', '.join(typeset_data(name, study.datasets) for name in data_names(study))}; "
        f"{latex_escape(measured_words(study.score.metric))}, mean over seeds"
    )
    write_text_atomic(path, literature_table(citations, ours, setting))


def ablations(study: Study) -> dict[str, tuple[list[str], list[str]]]:
    """{group: (configurations, the config keys it varies)} of the study's ablations (methods.ablation_groups)."""
    return ablation_groups(study.done)


# an axis key's column header in the ablation table, where it has a short one
AXIS_HEADERS = {"method.r": "$r$", "method.lora_alpha": "$\\alpha$", "method.target_modules": "Targets"}


def ablation_table(study: Study, group: str, variants: list[str], keys: list[str], index: int) -> str:
    """One ablation's configurations by the levels of each key it varies, with their trainable parameters and
    mean primary score (t-interval half-width over seeds), the best in bold with those that tie it (stats.ties);
    labelled tab:ablation, then tab:ablation2, ...."""
    levels, crossed = ablation_design(study.done, variants, keys)
    rows = study_order(study.palette, variants)  # the order of every other table and figure
    score, means = study.score, study.primary["mean"]
    best = (min if score.lower else max)(means[v] for v in rows)
    headers = [AXIS_HEADERS.get(k) or f"\\texttt{{{latex_escape(k)}}}" for k in keys]
    unit = r" (\%)" if score.scale == 100 else ""
    if len(keys) == 1:
        design = "varies one setting"
    elif crossed:
        design = "crosses its settings (every combination of their levels)"
    else:
        design = "varies its settings together (not every combination of their levels)"
    borrowed = {v: lender for v, lender in borrowed_configurations(study.df).items() if v in set(rows)}
    at_chance = set(study.chance.at_chance()) if study.chance is not None else set()
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{The {latex_escape(group)} ablation, which {design}: {score.named} of each configuration, "
        r"mean over seeds $\pm$ the half-width of the \statConfidence\% Student-t interval; bold: the best mean of the "
        r"ablation and every mean that ties it.}",
        rf"\label{{tab:ablation{index + 1 if index else ''}}}",
        rf"\begin{{tabular}}{{@{{}}l{'l' * len(keys)}rrr@{{}}}}",
        r"\toprule",
        "Configuration & " + " & ".join(headers) + rf" & Trainable & $n$ & {latex_escape(score.title)}{unit} \\",
        r"\midrule",
    ]
    for v in rows:
        row = study.primary.loc[v]
        runs = study.done[study.done["variant"] == v]
        trainable = format_count(runs["params.trainable"].mean()) if "params.trainable" in runs else "--"
        mean = decimal(score.scale * row["mean"])
        half = (row["ci_high"] - row["ci_low"]) / 2 * score.scale
        cell = rf"\mathbf{{{mean}}}" if tied(row["mean"], best, study.tie) else mean
        cell = f"${cell} \\pm {half:.1f}$" if np.isfinite(half) else f"${cell}$"
        values = [level_text(study.done, k, axis_level(study.done, v, k)) for k in keys]
        mark = (r"$^{\ddagger}$" if v in borrowed else "") + (r"$^{\circ}$" if v in at_chance else "")
        lines.append(
            f"{study.name(v)}{mark} & " + " & ".join(values) + f" & {trainable} & {int(row['n'])} & {cell} \\\\"
        )
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = []
    if borrowed:  # a configuration at borrowed values never stands beside tuned ones without saying so
        notes.append(borrowed_note({study.name(v): study.name(b) for v, b in borrowed.items()}, str, r"$^{\ddagger}$"))
    if at_chance & set(rows):
        notes.append(
            r"$^{\circ}$: at chance (a seed's binomial test does not reject, the rule of the Statistics paragraph)."
        )
    for note in notes:
        lines += [r"\par\smallskip", r"\parbox{\linewidth}{\footnotesize " + note + "}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# the main table's type size (11pt article's \normalsize, in points) and the least share of it a shrunk table keeps:
# shrunk to the line width, never below 7 pt at print size (a table wider still overruns, which the box check sees)
NORMAL_SIZE = 10.95
LEAST_SCALE = 7 / NORMAL_SIZE


def fit_width(table: str) -> str:
    """``table`` (a latex_table) with its tabular shrunk to the line width where it is wider, never enlarged and
    never below LEAST_SCALE of its size (graphicx's \\resizebox, which main.tex loads)."""
    least = f"{math.ceil(1000 * LEAST_SCALE) / 1000:g}"  # rounded up: 0.64
    shrink = (
        rf"\resizebox{{\ifdim{least}\width>\linewidth{least}\width"
        r"\else\ifdim\width>\linewidth\linewidth\else\width\fi\fi}{!}{"
    )
    table = table.replace(r"\begin{tabular}", shrink + r"\begin{tabular}", 1)
    return table.replace(r"\end{tabular}", r"\end{tabular}}", 1)


def improvement(row) -> str:
    """rliable's probability of improvement with its interval, "0.67 [0.33, 1.00]"; "n/a" where not computed."""
    values = [row.prob_improvement, row.prob_improvement_low, row.prob_improvement_high]
    if not np.isfinite(np.asarray(values, dtype=float)).all():
        return "n/a"
    return f"{values[0]:.2f} [{values[1]:.2f}, {values[2]:.2f}]"


def not_computable(c) -> str:
    """Why a cell of the significance table reads n/a or --, when one does: a cell that says nothing must
    say why (equal differences have no spread to test; Wilcoxon's test needs more pairs than a few seeds)."""
    reasons = []
    if not np.isfinite(c["cohens_dz"].to_numpy(dtype=float)).all():
        reasons.append(
            "the t-test, MDE, pairs needed and $d_z$ need two or more pairs whose differences are not all equal"
        )
    if not np.isfinite(c["p_wilcoxon_holm"].to_numpy(dtype=float)).all():
        reasons.append(f"the Wilcoxon test needs {MIN_PAIRS_WILCOXON} or more pairs with a nonzero difference")
    return ("n/a, --: not computable from these pairs: " + "; ".join(reasons) + ".") if reasons else ""


# the significance table's two panels, stacked in one float at the text's size rather than one row shrunk to fit
# (a shrunk table of ten columns printed below 7 pt): the tests, then what the seeds could detect and the wins
TESTS_PANEL = ("Pairs", "Difference", "$p$ (t)", "$p$ (Wilcoxon)", "$d_z$")
DETECTION_PANEL = ("MDE", "Pairs for {one}", "Win share", "P(improve)")


def significance_table(study: Study) -> str:
    """The paired comparisons with the baseline, on the study's primary score (``study.score``: test top-1 in
    points, or a perplexity, where a difference below zero is the improvement), as two stacked panels."""
    c, score = study.comparisons, study.score
    # "Pairs for 1 (perplexity)", the report's header, would run the table past the margin
    unit, one, pairs_for = (
        ("perplexity", "a difference of 1 in perplexity", "1")
        if score.lower
        else ("points", "a one-point difference", "1 pt")
    )
    sign = " (the configuration's minus the baseline's; below zero is better)" if score.lower else ""
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{Each configuration against {study.name(study.baseline)} on matched seeds ({score.named}). "
        rf"(a) Difference: mean of the paired differences in {unit}{sign}; $p$: paired t-test and Wilcoxon "
        rf"signed-rank test, each Holm-corrected {family_words(c)} \citep{{holm1979}}; $d_z$: mean difference "
        r"over the standard deviation of the differences. (b) MDE: minimum detectable "
        rf"difference, the smallest true mean difference in {unit} that the paired t-test at "
        rf"$\alpha = {ALPHA:g}$ (before Holm's correction) finds with {100 * POWER:g}\% power, taking the "
        rf"standard deviation of the paired differences as known; pairs for {pairs_for}: the matched seeds "
        rf"that test needs for {one}; win share: share of matched seeds where the configuration {score.wins}, "
        rf"ties counted half; P(improve): rliable's probability of improvement {latex_escape(score.improvement)} "
        r"over all pairs of runs (a run of the configuration, a run of the baseline), ties counted half, with its "
        r"95\% stratified bootstrap percentile interval \citep{agarwal2021precipice}.}",
        r"\label{tab:significance}",
    ]
    borrowed = {v: lender for v, lender in borrowed_configurations(study.df).items() if v in set(c["variant"])}
    tests, detection = [], []
    c = c.sort_values("family", key=lambda f: f != MAIN, kind="stable")  # the main family first, the ablations'
    for row in c.itertuples():
        dz = "n/a" if not np.isfinite(row.cohens_dz) else rf"\ensuremath{{{signed_text(row.cohens_dz, 2).lstrip('+')}}}"
        pairs = pairs_text(row.pairs_for_1pt).replace("more than ", "$>$")
        name = study.name(row.variant) + (r"$^{\ddagger}$" if row.variant in borrowed else "")
        tests.append(
            [name, str(row.n_pairs), signed(score.scale * row.mean_diff), pvalue(row.p_ttest_holm)]
            + [pvalue(row.p_wilcoxon_holm), dz]
        )
        detection.append([name, pct(row.mde_80, score.scale), pairs, f"{row.win_rate:.2f}", improvement(row)])
    main = int((c["family"] == MAIN).sum())  # the ablations' rows below a heading of their own
    lines += panel("(a) Paired tests", TESTS_PANEL, tests, "r" * len(TESTS_PANEL), main)
    lines.append(r"\par\medskip")
    headers = [h.format(one=pairs_for) for h in DETECTION_PANEL]
    lines += panel("(b) Detectable differences and wins", headers, detection, "rrrl", main)
    notes = [not_computable(c)] if not_computable(c) else []
    if study.repeats:  # configurations left out of every family, each with the one it repeats
        notes.append(f"Not tested: {repeat_words(study)}.")
    if borrowed:  # an untuned configuration's comparison never stands without saying so
        notes.append(borrowed_note({study.name(v): study.name(b) for v, b in borrowed.items()}, str, r"$^{\ddagger}$"))
    for note in notes:
        lines += [r"\par\smallskip", r"\parbox{\linewidth}{\footnotesize " + note + "}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def panel(title: str, headers, rows: list[list[str]], align: str, main: int | None = None) -> list[str]:
    """One panel of a stacked table: its title over a booktabs tabular headed Configuration and ``headers``; the
    rows after the first ``main`` (the ablations' family) under a heading of their own."""
    lines = [
        rf"{{\itshape {title}}}\par\smallskip",
        rf"\begin{{tabular}}{{@{{}}l{align}@{{}}}}",
        r"\toprule",
        "Configuration & " + " & ".join(headers) + r" \\",
        r"\midrule",
    ]
    for i, cells in enumerate(rows):
        if i == main and i:
            heading = r"\itshape Ablations: a Holm family of their own"
            lines += [r"\midrule", rf"\multicolumn{{{len(cells)}}}{{@{{}}l}}{{{heading}}} \\"]
        lines.append(" & ".join(cells) + r" \\")
    return lines + [r"\bottomrule", r"\end{tabular}"]


def family_words(c) -> str:
    """Over which comparisons Holm's correction runs (stats.families), as the significance table's caption says."""
    if (c["family"] != MAIN).any():
        return (
            "within its family: the main table's configurations, and apart from them those only an ablation runs "
            "(below the rule)"
        )
    return "across the comparisons of the main table's configurations"
