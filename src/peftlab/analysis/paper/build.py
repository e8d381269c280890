"""``peftlab paper STUDY_DIR``: a LaTeX paper about a study, generated from its run files.

Writes OUT (default STUDY_DIR/paper):
  results.tex      one \\newcommand per reported number or generated word, with its source
  main.tex         Abstract to Conclusion; generated text states only what the numbers show,
                   and boxed "For the author" notes mark where the author writes the rest
  tables/*.tex     booktabs tables (paper_tables.py: main, significance, literature; tuning for a tuned
                   study, with a tuning_document.tex that compiles alone)
  figures/*.pdf    the study's figures (paper_figures.py; and .png at 300 dpi; tuning.pdf for a tuned study)
  references.bib   the checked bibliography (src/peftlab/analysis/paper/references.bib)
and compiles main.pdf with latexmk and pdflatex (latex.py). main.tex holds no digit of its own: every
number reaches it through a macro of results.tex (macros.py). Its prose is the template
templates/main.tex.jinja; this module decides what the template says about the study. The study is judged
as the report judges it (primary.py): by test top-1, or where every completed run is a causal LM by test
perplexity, lower is better. What it says the study adapts follows the runs' modality (``modality``): a vision
model, a text classifier or a causal LM.
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2
import pandas as pd

from peftlab.analysis.paper.figures import (
    SHORT_CAPTIONS,
    draw_figures,
    existing_figures,
    figure_captions,
    figure_layout,
)
from peftlab.analysis.paper.latex import PDF_RECORD, compile_pdf, record_pdf
from peftlab.analysis.paper.macro_text import macro_suffix, variant_suffixes
from peftlab.analysis.paper.macros import SCORE_MACROS, SIZE_MACROS, Numbers, citations_of, define_numbers
from peftlab.analysis.paper.methods import plugin_bibtex
from peftlab.analysis.paper.names import DATA_CITATIONS, typeset_model
from peftlab.analysis.paper.study import Study
from peftlab.analysis.paper.tables import ablations, write_tables
from peftlab.analysis.paper.tuning_words import tuning_text
from peftlab.analysis.report import protocol_card
from peftlab.analysis.report.build import choose_baseline
from peftlab.analysis.report.literature import (
    LITERATURE,
    Citation,
    bib_keys,
    load_literature,
    ranked_citations,
    study_citations,
    study_methods,
    study_rows,
)
from peftlab.analysis.results.escape import latex_escape
from peftlab.analysis.results.load import load_results
from peftlab.analysis.results.record import loads_weights
from peftlab.analysis.results.units import unit, words
from peftlab.analysis.stats.comparisons import below_detection
from peftlab.analysis.stats.intervals import completed_runs
from peftlab.config.tex import bibtex_entry
from peftlab.utils.errors import UserError
from peftlab.utils.files import check_kind, check_output, refuse_links_below, refuse_links_in, write_text_atomic

REFERENCES = Path(__file__).with_name("references.bib")


# the folders and files the paper writes: an entry of another kind is refused before anything is drawn
PAPER_FOLDERS = ("figures", "tables")
PAPER_OUTPUTS = ("results.tex", "references.bib", "main.tex", "main.pdf", PDF_RECORD)


def write_paper(
    study_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    baseline: str | None = None,
    literature: str | Path = LITERATURE,
    only: str | None = None,
    compile: bool = True,
    all_literature: bool = False,
) -> Path:
    """Write the paper's files (only="figures" or "tables": just those) and compile main.pdf. The literature
    table holds the cited rows measured on the study's datasets, and is left out where there are none
    (``all_literature``: every row of the file).

    Returns the path of main.pdf, of main.tex when compile is False, or of the figures /
    tables directory. UserError for a study without completed runs, a bad literature file,
    missing LaTeX tools (the sources are written first) or a LaTeX error.
    """
    study_dir = Path(study_dir)
    if not (study_dir / "runs").is_dir():
        raise UserError(f"{study_dir} is not a study directory (no runs/ inside)")
    df = load_results(study_dir)
    if df.empty or completed_runs(df).empty:
        raise UserError(f"{study_dir}: no completed run; run the study first (make study)")
    out = Path(out_dir) if out_dir else study_dir / "paper"
    if Path(os.path.abspath(out)).is_relative_to(os.path.abspath(study_dir)):
        refuse_links_below(study_dir, out, "paper folder entry")  # a received paper/ could point anywhere
    refuse_links_in(out, "paper folder entry")
    for name in PAPER_FOLDERS:  # before the work: not a traceback once the figures are drawn
        check_kind(out / name, True, "paper folder entry")
    for name in PAPER_OUTPUTS:
        check_output(out / name, False, "paper folder entry")
    (out / PDF_RECORD).unlink(missing_ok=True)  # main.pdf is of these results again only once it compiles
    bib = REFERENCES.read_text()
    bib += plugin_bibtex(df, bib)  # the papers of the plugins' methods the runs recorded
    citations = load_literature(literature, bib_keys(bib))
    baseline = baseline or choose_baseline(df)
    if baseline not in set(completed_runs(df)["variant"]):
        raise UserError(
            f"--baseline {baseline!r} has no completed run; variants: "
            f"{', '.join(map(str, completed_runs(df)['variant'].unique()))}"
        )
    study = Study(study_dir, df, baseline)
    bib += dataset_bibtex(study.datasets, bib)  # the entries a study gives its own datasets (report.datasets)
    if not all_literature:
        citations = study_citations(citations, study.modality, {str(name) for name in study.config("data.name")})

    if only in (None, "figures"):
        drawn = draw_figures(study, out / "figures")
        if only:
            return out / "figures"
    else:
        drawn = existing_figures(out / "figures")
    numbers = Numbers()
    define_numbers(numbers, study, citations)
    write_tables(study, citations, out / "tables")
    if only == "tables":
        return out / "tables"
    write_text_atomic(out / "results.tex", numbers.tex())
    write_text_atomic(out / "references.bib", bib)
    write_text_atomic(out / "main.tex", main_tex(study, citations, numbers, drawn, out / "figures"))
    if not compile:
        return out / "main.tex"
    pdf = compile_pdf(out / "main.tex")
    record_pdf(out, numbers.macros["resultsSha"][0])  # the hash results.tex prints: one hash for text and PDF
    return pdf


def dataset_bibtex(datasets: dict, bib: str) -> str:
    """The BibTeX entries of ``report.datasets`` whose keys ``bib`` lacks, to append to references.bib."""
    have = set(bib_keys(bib))
    entries = [
        bibtex_entry(e["bibtex"], f"study.yaml report.datasets['{name}'].bibtex").text
        for name, e in datasets.items()
        if e.get("bibtex") and e.get("cite") not in have
    ]
    return "".join(f"\n{entry}\n" for entry in dict.fromkeys(entries))


def model_setup(study: Study, n) -> str:
    """The backbone as the Setup paragraph says it: timm's ViT-Ti/16 at its input size (its blocks and width);
    a resized ViT by what it is; a model peftlab cannot name by its identifier."""
    named = [typeset_model(name, study) for name in study.models()]
    size = f"at {n('cfgImgSize')}-pixel input"
    if named and not any(t.startswith(("a ViT", "\\texttt")) for t in named):
        return f"timm's {n('cfgModelText')} {size} ({n('cfgDepth')} blocks of width {n('cfgEmbedDim')})"
    shape = f"with {n('cfgPatchSize')}-pixel patches, {n('cfgDepth')} blocks of width {n('cfgEmbedDim')}"
    if named and all(t.startswith("a ViT") for t in named):
        return f"a vision transformer of timm {size} {shape}"
    return f"timm's \\texttt{{{n('cfgModel')}}} {size} {shape}"


def related_work(done: pd.DataFrame, modality: str) -> str:
    """The Related work paragraph's sentences on the works behind what the study ran: LoRA where a low-rank method
    ran, AdaLoRA where ranks were allocated, QLoRA and bitsandbytes where a base was quantized, QA-LoRA where it
    ran, prompt tuning and visual prompt tuning where they ran; for vision, the benchmarks that compare PEFT methods
    on ViTs."""
    methods = set(done["method"])
    text = []
    if methods & LOW_RANK or quantized(done):
        text.append("LoRA trains a low-rank update of frozen weight matrices \\citep{hu2022lora}")
    if methods & {"adalora", "adaptive"}:
        text.append("AdaLoRA allocates the rank budget across matrices during training \\citep{zhang2023adalora}")
    stored = done.get("config.quant.mode")
    if stored is not None and stored.fillna("none").isin(QUANT_MODES).any():
        text.append(
            "QLoRA trains LoRA adapters on a base model quantized to four bits \\citep{dettmers2023qlora}, using the "
            "quantization kernels of bitsandbytes \\citep{dettmers2022llmint8}"
        )
    if "qalora" in methods:
        text.append("QA-LoRA makes the adapters mergeable into a group-wise quantized model \\citep{xu2024qalora}")
    if "prompt_tuning" in methods:
        text.append(
            "prompt tuning learns the embeddings of virtual tokens put before the input of a frozen language model "
            "\\citep{lester2021prompt}"
        )
    if "vpt" in methods:
        text.append(
            "visual prompt tuning learns prompt tokens put before the patch tokens of a frozen vision transformer "
            "\\citep{jia2022vpt}"
        )
    said = "; ".join(text) + ". " if text else ""
    said = said[:1].upper() + said[1:]
    if modality == "vision":
        said += (
            "For vision transformers, PEFT methods are compared on the VTAB benchmark \\citep{zhai2019vtab} by "
            "V-PETL Bench \\citep{xin2024vpetl} and by \\citet{mai2024lessons}. "
        )
    return said


LOW_RANK = {"lora", "dora", "adalora", "adaptive", "qalora", "vera", "loha", "lokr", "fact_tt", "fact_tk"}


def data_citations(names: list[str]) -> str:
    """The bibliography keys of the study's datasets that references.bib holds (a VTAB-1k task by its suite),
    comma-separated; "" when it holds none of them."""
    keys = (DATA_CITATIONS.get(str(name).split("/")[0]) for name in names)
    return ",".join(dict.fromkeys(key for key in keys if key))


# LaTeX-safe delimiters: \VAR{x} prints x, \BLOCK{if x} is a statement, \#{...} a comment. The
# output is LaTeX: nothing is escaped here; the macros of results.tex hold escaped text.
LATEX = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=False,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    block_start_string=r"\BLOCK{",
    block_end_string="}",
    variable_start_string=r"\VAR{",
    variable_end_string="}",
    comment_start_string=r"\#{",
    comment_end_string="}",
)


class MacroRefs:
    """The template's ``n``: ``n.name`` and ``n["name"]`` print \\name{} and fail for a macro results.tex lacks."""

    def __init__(self, numbers: Numbers):
        self._numbers = numbers

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._numbers.ref(name)

    def __getitem__(self, name: str) -> str:
        return self._numbers.ref(name)


def main_tex(
    study: Study, citations: list[Citation], numbers: Numbers, drawn: list[str], figure_dir: Path | None = None
) -> str:
    """main.tex from templates/main.tex.jinja: the sections, and what they say about this study (``figure_dir``:
    where the drawn figures are, whose shapes place them)."""
    n, score = numbers.ref, study.score
    suffixes = variant_suffixes(study.variants)
    compared = study.comparisons is not None
    differences, not_shown, not_significant = comparison_words(study, n, suffixes)
    return LATEX.get_template("main.tex.jinja").render(
        n=MacroRefs(numbers),
        suffixes=suffixes,
        lower=score.lower,  # judged by test perplexity: the lowest mean is the best
        judged=score.name + (" (lower is better)" if score.lower else ""),
        mean=SCORE_MACROS[score.metric] + "Mean",
        best=study.best,
        worst=study.worst,
        base=bool(study.base),
        no_adapter="noAdapterPerplexity" in numbers.macros,  # a causal-LM study's base row
        base_perplexity="basePerplexity" in numbers.macros,  # a text study's base: a causal LM
        base_steps="baseSteps" in numbers.macros,  # the pretraining run's optimizer steps, where its record is kept
        model_setup=model_setup(study, n),
        related=related_work(study.done, study.modality),
        best_tied="bestTies" in numbers.macros,  # configurations tied with the best: named with their own means
        best_group=", tied" in numbers.macros["bestMeans"][0],  # several names: a comma ends them mid-sentence
        worst_group=", tied" in numbers.macros["worstMeans"][0],
        borrowed="borrowedNote" in numbers.macros,  # configurations at another's tuned values: ‡ and a note
        tie_step="tieStep" in numbers.macros,  # the tie rule: one test example (stats.ties)
        chance="chanceRule" in numbers.macros,  # the task's chance rate and its rule (stats.chance)
        chance_datasets="chanceRates" in numbers.macros,  # a rate per dataset
        chance_rate=(  # the rate a configuration is held against, as a sentence names it
            r"its dataset's chance rate (\chanceRates{})"
            if "chanceRates" in numbers.macros
            else r"the task's chance rate of \chanceRate{}\%"
        ),
        at_chance="atChanceNames" in numbers.macros,  # configurations not above it
        chance_every="chanceEvery" in numbers.macros,  # no configuration above it: said first
        chance_baseline="chanceBaseline" in numbers.macros,  # the comparisons' baseline is at chance
        wilcoxon_limit="wilcoxonLimit" in numbers.macros,  # what the Wilcoxon test cannot reach with these seeds
        ablation_family="ablationComparisonCount" in numbers.macros,  # a Holm family of the ablations' own
        repeats="repeatWords" in numbers.macros,  # configurations not tested, each repeating another
        baseline=study.baseline,  # several configurations share the best mean
        modality=study.modality,  # vision, text or causal-lm: what the prose says was adapted, and on what data
        sizes={split: name in numbers.macros for split, name in SIZE_MACROS.items()},  # recorded split sizes
        max_length="cfgMaxLength" in numbers.macros,  # a text study's tokens per example, where the runs record it
        pair_join="cfgPairJoin" in numbers.macros,  # a sentence-pair task's separator or template, as recorded
        lm_data=set(study.config("data.name")),  # a causal LM's: instructions, plain text
        data_citations=data_citations(study.config("data.name")),
        compared=compared,
        ablations=[f"tab:ablation{i + 1 if i else ''}" for i in range(len(ablations(study)))],
        means=mean_intervals(study, n, suffixes),
        differences=differences,
        not_shown=not_shown,
        not_significant=not_significant,
        rank_trend="rankTrend" in numbers.macros,
        figures=figure_layout(drawn, figure_dir),
        captions=figure_captions(study),
        short_captions=SHORT_CAPTIONS,
        literature=literature_items(citations, study_methods(study.df), n),
        # an order needs two of this study's configurations of cited methods; one is named alone
        our_order=len(study_rows(study.df, citations, study.primary)),
        left_out="ourOrderLeftOut" in numbers.macros,  # configurations the order leaves out, and why
        incomplete=len(study.incomplete) > 0,
        length=run_length(numbers),  # epochs, or the steps where train.max_steps stopped the runs
        tuning=tuning_text(study, numbers, drawn),  # None: the study was not tuned
        protocol=bool(protocol_card.card(study.dir, study.done, study.labels)[0]),
        command="studyCommand" in numbers.macros,  # the recorded command that ran the study
        commands="studyCommandCount" in numbers.macros,  # several calls trained the runs
        cut="statCutAt" in numbers.macros,  # an interval of the primary score was cut at its range
        weights=loads_weights(study.done),  # a random base loads none
        wall_phases="studyWallPhases" in numbers.macros,
        elapsed="studyElapsedMinutes" in numbers.macros,  # the study's own wall time (phases.jsonl)
        workers="studyWorkers" in numbers.macros,  # the run time of every phase, from phases.jsonl
        test_step="cfgTestStep" in numbers.macros,  # the test set's resolution: one image in points
        quantized=quantized(study.done),  # Algorithm 1 says it quantizes the base only where a run did
        regularised=bool(REGULARISED & set(study.done["method"])),  # and adds a regulariser only where one has it
        mnist_base=bool(study.base) and str((study.base.get("data") or {}).get("name")) == "mnist",
    )  # runs with a protocol record


def comparison_words(study: Study, n, suffixes: dict[str, str]) -> tuple[str, str, str]:
    """The Results' comparisons with the baseline: every configuration's difference; those below the minimum
    detectable difference (MDE); those not significant though at least as large as the MDE ("" each for a
    study without comparisons)."""
    if study.comparisons is None:
        return "", "", ""
    comparisons, points = study.comparisons, study.score.points
    differences = words([f"{n('name' + suffixes[v])} {n('diff' + suffixes[v])}" for v in comparisons["variant"]])
    small = comparisons[below_detection(comparisons)]["variant"]
    # not significant, though at least as large as the MDE: Holm's correction (which the MDE leaves out) kept them
    beyond = comparisons[
        ~comparisons["significant"].astype(bool) & ~below_detection(comparisons) & comparisons["mde_80"].notna()
    ]["variant"]
    not_shown, not_significant = (
        words(
            [
                f"{n('name' + suffixes[v])} (difference {n('diff' + suffixes[v])}, "
                f"MDE {n('mde' + suffixes[v])}{points})"
                for v in chosen
            ]
        )
        for chosen in (small, beyond)
    )
    return differences, not_shown, not_significant


# the methods whose tuner adds a term to the loss (Tuner.regularization is zero for the others)
REGULARISED = {"adalora"}
QUANT_MODES = ("int8", "nf4", "fp4")


def quantized(done: pd.DataFrame) -> bool:
    """Whether a completed run stored its base quantized (quant.mode) or ran QA-LoRA, which quantizes it."""
    mode = done.get("config.quant.mode")
    stored = mode is not None and mode.fillna("none").isin(QUANT_MODES).any()
    return bool(stored or (done["method"] == "qalora").any())


def run_length(numbers: Numbers) -> str:
    """How long the runs trained, as their protocol record says (macros: cfgEpochs, cfgSteps): epochs where
    train.epochs bounded them, optimizer steps where train.max_steps stopped them first; "" with neither."""
    n, macros = numbers.ref, numbers.macros
    epochs = f"{n('cfgEpochs')} {n('cfgEpochsNoun')}" if "cfgEpochs" in macros else ""
    steps = f"{n('cfgSteps')} optimizer {n('cfgStepsNoun')}" if "cfgSteps" in macros else ""
    if epochs and steps:
        return f"{epochs}, or {steps} where \\texttt{{train.max\\_steps}} stopped a run first"
    if steps:
        return f"{steps}, where \\texttt{{train.max\\_steps}} stopped them short of \\texttt{{train.epochs}}"
    return epochs


def mean_intervals(study: Study, n, suffixes: dict[str, str]) -> str:
    """Each configuration's name and mean primary score (test top-1 in %, or a perplexity as it is), with its
    interval where it has several seeds."""
    name, percent = SCORE_MACROS[study.score.metric], latex_escape(unit(study.score.metric))
    return words(
        [
            f"{n('name' + s)} {n(name + 'Mean' + s)}{percent}"
            + (f" [{n(name + 'Low' + s)}, {n(name + 'High' + s)}]" if study.primary.loc[v, "n"] > 1 else "")
            for v, s in suffixes.items()
        ]
    )


def literature_items(citations: list[Citation], ran: set[str], n) -> list[dict]:
    """Per published setting: the paper, its macro suffix, its methods and values, and whether it ranks
    more than one of the methods this study ran (``ran``: their peftlab names)."""
    items = []
    for setting in dict.fromkeys(c.setting for c in citations):
        rows = citations_of(citations, setting)
        items.append(
            {
                "paper": rows[0].paper,
                "suffix": macro_suffix(setting),
                "methods": words([f"{n('litMethod' + c.id)} {n('lit' + c.id)}" for c in rows]),
                "ranked": len(ranked_citations(citations, setting, ran)) > 1,
            }
        )
    return items
