"""`peftlab paper` and `peftlab submission` on a small study directory of real-shaped run files.

The compile test needs pdflatex, latexmk and the LaTeX styles (scripts/install-latex.sh installs
them; CI runs it), and pdftotext / pdftoppm to read and render the PDF.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from studyfiles import set_data, write_study_dir
from test_report import TEXT_RUNS, text_study
from test_report_direction import lm_study
from testkit import REPO, cli_here

from peftlab.analysis.archive.submission import write_submission
from peftlab.analysis.paper import build as paper
from peftlab.analysis.paper.latex import compile_pdf, missing_latex, record_pdf
from peftlab.analysis.paper.macros import Numbers, define_numbers, macro_suffix, variant_suffixes
from peftlab.analysis.paper.methods import method_sentences
from peftlab.analysis.report.build import write_report
from peftlab.analysis.report.literature import LITERATURE, bib_keys, literature_section, load_literature
from peftlab.analysis.results.load import load_results
from peftlab.analysis.results.load import results_sha256 as load_results_sha256
from peftlab.utils.errors import UserError
from peftlab.utils.files import read_json

pytestmark = pytest.mark.usefixtures("quick_figures")  # figures written in cheap encodings (conftest.py)

MISSING_LATEX = missing_latex()


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    return write_study_dir(tmp_path_factory.mktemp("study") / "default")


@pytest.fixture(scope="module")
def sources(study_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    assert paper.write_paper(study_dir, out, compile=False) == out / "main.tex"
    return out


def macros(results_tex: str) -> dict[str, str]:
    found = re.findall(r"^\\newcommand\{\\(\w+)\}\{(.*)\}  % ", results_tex, flags=re.MULTILINE)
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), "a macro is defined twice"
    return dict(found)


def test_writes_every_part_of_the_paper(sources):
    for name in (
        "main.tex",
        "results.tex",
        "references.bib",
        "tables/main_table.tex",
        "tables/significance.tex",
        "figures/accuracy_vs_params.pdf",
        "figures/seed_boxplots.pdf",
        "figures/convergence.pdf",
        "figures/ablation_method_r.pdf",
    ):
        assert (sources / name).stat().st_size > 0, name
    # Fashion-MNIST: no published row of configs/literature.yaml was measured on it (test_literature_rows.py)
    assert not (sources / "tables" / "literature.tex").exists()


def test_results_tex_holds_the_study_numbers(sources):
    defined = macros((sources / "results.tex").read_text())
    # studyfiles.RUNS: full 0.745, 0.752, 0.739; linear 0.593, 0.591, 0.597; one failed LoRA run
    assert defined["topOneMeanFull"] == "74.5" and defined["topOneMeanLinear"] == "59.4"
    assert defined["topOneMinFull"] == "73.9" and defined["topOneMaxFull"] == "75.2"
    assert defined["studyRuns"] == "13" and defined["studyCompleted"] == "12" and defined["studyIncomplete"] == "1"
    assert defined["nameLoraREight"] == "lora r=8" and defined["baselineName"] == "full"
    assert defined["cfgTrainImages"] == "4{,}000" and not any(name.startswith("lit") for name in defined)
    assert defined["diffLinear"] == r"\ensuremath{-15.2}"
    # two ranks (r=4 and r=8) are one comparison, not a trend: no sentence about a trend with r
    assert "rankTrend" not in defined
    assert defined["baseData"] == "MNIST" and defined["baseTopOne"] == "95.8"  # the pretraining manifest


def test_main_tex_types_no_number_and_uses_only_defined_macros(sources):
    assert_no_typed_number(sources)


def assert_no_typed_number(sources):
    main = (sources / "main.tex").read_text()
    defined = macros((sources / "results.tex").read_text())
    body = main[main.index(r"\begin{document}") :]
    # what may hold a digit: citation keys, labels, file names, widths and the terms top-1 and SHA-256
    prose = re.sub(r"\\(cite\w*|ref|label|input|includegraphics|bibliography\w*)(\[[^\]]*\])*\{[^}]*\}", "", body)
    prose = re.sub(r"\d*\.?\d+\\linewidth|top-1|SHA-256", "", prose)
    assert not re.findall(r".{30}\d.{10}", prose), "a number typed into main.tex"
    used = set(re.findall(r"\\([a-z][A-Za-z]*)\{\}", body))
    assert used and used <= set(defined), used - set(defined)


def test_sections_and_places_for_the_author(sources):
    main = (sources / "main.tex").read_text()
    for section in (
        "Introduction",
        "Related work",
        "Setup",
        "Results",
        "Limitations",
        "Conclusion",
    ):
        assert rf"\section{{{section}}}" in main
    assert r"\begin{abstract}" in main and r"\begin{algorithm}" in main
    # its figures, drawn 5.8 in wide with 7 pt text, stand alone: in half the line their text would print at 3.8 pt
    assert r"\begin{subfigure}" not in main
    assert main.count(r"\authornote{") >= 6
    assert "Comparison with published results" not in main  # none measured on Fashion-MNIST
    assert r"\input{results}" in main and r"\bibliography{references}" in main


def test_every_citation_is_in_the_bibliography(sources):
    keys = bib_keys((sources / "references.bib").read_text())
    text = "".join(path.read_text() for path in [sources / "main.tex", *(sources / "tables").glob("*.tex")])
    cited = {
        key.strip() for group in re.findall(r"\\cite[pt]?(?:\[[^\]]*\])*\{([^}]*)\}", text) for key in group.split(",")
    }
    assert cited and cited <= keys, cited - keys


def test_each_bibliography_key_is_written_once():
    """BibTeX skips a repeated entry with an error, and latexmk then fails the whole paper."""
    from peftlab.analysis.paper import build as paper

    text = (Path(paper.__file__).parent / "references.bib").read_text()
    keys = re.findall(r"^@\w+\{([^,]+),", text, flags=re.MULTILINE)
    assert len(keys) == len(set(keys)), sorted(k for k in set(keys) if keys.count(k) > 1)


def test_literature_table_says_which_rows_are_cited_and_which_are_ours(study_dir, tmp_path):
    study = set_data(shutil.copytree(study_dir, tmp_path / "cifar"), name="cifar100")  # V-PETL's CIFAR-100 rows
    paper.write_paper(study, tmp_path / "paper", only="tables")
    table = (tmp_path / "paper" / "tables" / "literature.tex").read_text()
    assert r"\emph{Cited} \citep{xin2024vpetl}" in table and r"\emph{This study (measured)}" in table
    assert "Full fine-tuning (full) & 85.8M & 68.9" in table  # V-PETL Bench, CIFAR-100 (VTAB-1k)
    assert "Adapter (pfeiffer) & 0.16M & 69.2" in table  # each cited row names the peftlab method it stands for
    assert "full & 800.4K & 74.5" in table  # this study
    assert "comparable" in table  # the caption says the settings differ


def test_the_significance_table_gives_each_comparison_its_mde_and_the_seeds_one_point_needs(sources):
    table = (sources / "tables" / "significance.tex").read_text()
    assert r"& $p$ (t) & $p$ (Wilcoxon) & $d_z$ \\" in table and r"& MDE & Pairs for 1 pt &" in table
    assert "80\\% power" in table
    # lora r=8 - full on seeds 0-2: -6.1, -8.8, -3.7 points, sd 2.55; MDE 3.264 (statsmodels' d_z for 3 pairs)
    # x 2.55 = 8.3 points; 1 point is 0.39 sd: 54 pairs
    assert r"lora r=8 & 3 & \ensuremath{-6.2} & 0.053 & n/a &" in table and r"lora r=8 & 8.3 & 54 &" in table
    # an n/a says why: 3 seeds are too few pairs for Wilcoxon's test; every t-test here is defined
    assert "n/a, --: not computable from these pairs: the Wilcoxon test needs 5 or more pairs" in table
    assert "pairs whose differences are not all equal" not in table
    defined = macros((sources / "results.tex").read_text())
    assert defined["mdeLoraREight"] == "8.3" and defined["pairsOnePointLoraREight"] == "54"
    assert defined["statPower"] == "80"


def test_the_paper_says_which_differences_the_seeds_could_not_have_shown(sources, study_dir):
    main = (sources / "main.tex").read_text()
    sentence = next(line for line in main.splitlines() if line.startswith("Not significant, and smaller than"))
    # lora r=8 (-6.2, p = 0.053, MDE 8.3) only: lora r=4 (-6.9, p = 0.053) is above its MDE of 6.5
    assert r"\nameLoraREight{} (difference \diffLoraREight{}, MDE \mdeLoraREight{} points)." in sentence
    assert "LoraRFour" not in sentence and r"\statPower{}" in sentence
    # against linear every difference is significant and above its MDE: no such sentence
    assert "Not significant, and smaller than" not in main_tex_against(study_dir, "linear")


def main_tex_against(study_dir, baseline):
    """main.tex of the study with another baseline, without drawing the figures."""
    study = paper.Study(study_dir, load_results(study_dir), baseline)
    citations = load_literature(LITERATURE, bib_keys(paper.REFERENCES.read_text()))
    numbers = Numbers()
    define_numbers(numbers, study, citations)
    return paper.main_tex(study, citations, numbers, [])


def test_report_section_puts_published_numbers_beside_ours(study_dir):
    section = "\n".join(literature_section(load_results(study_dir)))
    assert section.startswith("## Published numbers beside this study")
    assert "| cited: xin2024vpetl, repository README, VTAB results |" in section
    assert (
        "- xin2024vpetl, CIFAR-100 (VTAB-1k): Full fine-tuning (68.9) > LoRA (67.1) > Linear probing (63.4)" in section
    )
    assert "- this study: full (74.5) > lora r=8 (68.3) > lora r=4 (67.6) > linear (59.4)" in section


def test_literature_file_is_valid_and_cites_only_known_papers():
    citations = load_literature(LITERATURE, bib_keys(paper.REFERENCES.read_text()))
    assert len(citations) >= 10 and {c.peftlab for c in citations} >= {"full", "linear", "lora"}


@pytest.mark.parametrize(
    "entry, needle",
    [
        ("{id: A, setting: s, method: m, peftlab: null, trainable: null, value: 89.9}", "entries[0].value=89.9"),
        ('{id: a, setting: s, method: m, peftlab: null, trainable: null, value: "1"}', "entries[0].id='a'"),
        ('{id: A, setting: t, method: m, peftlab: null, trainable: null, value: "1"}', "entries[0].setting='t'"),
        (
            '{id: A, setting: s, method: m, peftlab: vpt_deep, trainable: null, value: "1"}',
            "entries[0].peftlab='vpt_deep': expected null or a method of peftlab (full, linear, lora",
        ),
    ],
)
def test_bad_literature_entries_are_one_line_user_errors(tmp_path, entry, needle):
    path = tmp_path / "literature.yaml"
    path.write_text(
        "settings:\n  s: {paper: hu2022lora, table: T, model: M, dataset: D, metric: '%', checked: C}\n"
        f"entries:\n  - {entry}\n"
    )
    with pytest.raises(UserError) as err:
        load_literature(path, {"hu2022lora"})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_literature_paper_must_be_in_the_bibliography(tmp_path):
    path = tmp_path / "literature.yaml"
    path.write_text(
        "settings:\n  s: {paper: nobody2099, table: T, model: M, dataset: D, metric: '%', checked: C}\nentries: []\n"
    )
    with pytest.raises(UserError, match="nobody2099"):
        load_literature(path, {"hu2022lora"})


def test_macro_names_are_letters_and_distinct():
    assert macro_suffix("lora r=8") == "LoraREight"
    assert macro_suffix("lora_qv r=256 nf4") == "LoraQvRTwoHundredFiftySixNfFour"
    assert variant_suffixes(["lora r=8", "lora r8"]) == {"lora r=8": "LoraREight", "lora r8": "LoraREightAlt"}


def test_a_study_of_one_configuration_still_gets_a_paper(tmp_path):
    study_dir = write_study_dir(tmp_path / "one", with_failure=False, variants=["full"])
    main = paper.write_paper(study_dir, tmp_path / "paper", compile=False).read_text()
    assert r"\input{tables/main_table}" in main and "significance" not in main and "rankTrend" not in main


@pytest.mark.usefixtures("unrendered_figures")  # which files each part writes; the sources fixture draws them
def test_only_figures_or_tables(study_dir, tmp_path):
    assert paper.write_paper(study_dir, tmp_path, only="tables") == tmp_path / "tables"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tables"]
    assert paper.write_paper(study_dir, tmp_path, only="figures") == tmp_path / "figures"
    assert (tmp_path / "figures" / "cost.pdf").is_file() and not (tmp_path / "main.tex").exists()


def run_peftlab(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run(
        [sys.executable, "-m", "peftlab.cli", *args], capture_output=True, text=True, env=env, timeout=1200
    )


def assert_one_line_exit_2(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("peftlab: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_cli_refuses_a_directory_without_runs(tmp_path):
    assert_one_line_exit_2(run_peftlab("paper", str(tmp_path)), "not a study directory")


@pytest.mark.usefixtures("unrendered_figures")
def test_cli_names_the_missing_latex_packages(tmp_path, monkeypatch):
    study_dir = write_study_dir(tmp_path / "default", with_failure=False, variants=["full"])
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # what the command finds of LaTeX: nothing (its one line, exit 2)
    proc = cli_here("paper", str(study_dir), "--out", str(tmp_path / "paper"))
    assert_one_line_exit_2(proc, "latexmk", "texlive-latex-base", "scripts/install-latex.sh")
    assert (tmp_path / "paper" / "main.tex").is_file()  # the sources are written before compiling


def test_submission_packs_paper_results_configs_and_checksums(study_dir, sources, tmp_path):
    paper_dir = tmp_path / "paper"
    shutil.copytree(sources, paper_dir)
    study_yaml = REPO / "configs" / "studies" / "default.yaml"
    with pytest.raises(UserError, match="no main.pdf"):
        write_submission(study_dir, study_yaml, paper_dir=paper_dir)
    (paper_dir / "main.pdf").write_bytes(b"%PDF-1.5 placeholder\n")
    with pytest.raises(UserError, match="main.pdf was built from other results.*did not compile"):
        write_submission(study_dir, study_yaml, paper_dir=paper_dir)  # no compile recorded it
    record_pdf(paper_dir, load_results_sha256(study_dir))  # what a compile that succeeded records
    archive = write_submission(study_dir, study_yaml, paper_dir=paper_dir, out=tmp_path / "sub.tar.gz")
    with tarfile.open(archive) as tar:
        files = {m.name.removeprefix("default-submission/"): tar.extractfile(m).read() for m in tar if m.isfile()}
    for name in (
        "paper/main.tex",
        "paper/main.pdf",
        "paper/results.tex",
        "paper/references.bib",
        "paper/figures/accuracy_vs_params.pdf",
        "paper/figures/accuracy_vs_params.png",
        "results/results.csv",
        "results/results.parquet",
        "configs/default.yaml",
        "configs/downstream.yaml",
        "configs/pretrain.yaml",
        "configs/literature.yaml",
        "requirements.lock",
        "REPRODUCE.md",
        "SHA256SUMS",
    ):
        assert name in files, name
    sums = dict(reversed(line.split("  ")) for line in files["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(files) - {"SHA256SUMS"}
    assert all(hashlib.sha256(files[name]).hexdigest() == digest for name, digest in sums.items())
    reproduce = files["REPRODUCE.md"].decode()
    assert "git checkout 0123456789abcdef0123456789abcdef01234567" in reproduce
    assert (
        "make paper" in reproduce and "peftlab study" in reproduce and "| full | 3 | 74.5 | 73.9 | 75.2 |" in reproduce
    )
    assert "Pretraining the base model (cached after the first time): 110 s" in reproduce
    assert "2 threads per run" in reproduce


@pytest.mark.usefixtures("unrendered_figures")
def test_submission_refuses_a_paper_built_from_other_results(tmp_path):
    """A paper records the SHA-256 of the results it was built from (\\resultsSha, as the report does); a run
    added since (a third seed beside the paper's two) makes the submission refuse in one line, not pack both."""
    study_dir = write_study_dir(tmp_path / "default", with_failure=False, variants=["full", "linear"])
    extra = study_dir / "runs" / "linear-s2"
    shutil.move(extra, tmp_path / "later")  # the paper sees two seeds of linear
    paper_dir = tmp_path / "paper"
    paper.write_paper(study_dir, paper_dir, compile=False)
    (paper_dir / "main.pdf").write_bytes(b"%PDF-1.5 placeholder\n")
    recorded = macros((paper_dir / "results.tex").read_text())["resultsSha"]
    assert recorded == load_results_sha256(study_dir)
    record_pdf(paper_dir, recorded)  # as a compile of these sources records it
    shutil.move(tmp_path / "later", extra)  # then the third seed's run arrives
    study_yaml = REPO / "configs" / "studies" / "default.yaml"
    with pytest.raises(UserError, match=r"was built from other results than .* holds now .*run `peftlab paper"):
        write_submission(study_dir, study_yaml, paper_dir=paper_dir, out=tmp_path / "sub.tar.gz")
    (study_dir / "study.yaml").write_text("name: default\nseeds: 2\n")
    results = paper_dir / "results.tex"  # as a paper built from the three seeds records them
    results.write_text(results.read_text().replace(recorded, load_results_sha256(study_dir)))
    record_pdf(paper_dir, load_results_sha256(study_dir))
    with pytest.raises(UserError, match="differs from .*study.yaml, the study file the runs were made from"):
        write_submission(study_dir, study_yaml, paper_dir=paper_dir, out=tmp_path / "sub.tar.gz")
    # a header written after the runs (comments only) is no difference: the archive packs the file given
    (study_dir / "study.yaml").write_text("# the header before the runs were measured\n" + study_yaml.read_text())
    try:
        write_submission(study_dir, study_yaml, paper_dir=paper_dir, out=tmp_path / "sub.tar.gz")
    except UserError as err:
        assert "the study file the runs were made from" not in str(err)
    report = write_report(study_dir)
    assert f"Built from the results with SHA-256 `{load_results_sha256(study_dir)}`" in report.read_text()


@pytest.mark.usefixtures("unrendered_figures")
def test_the_reproducibility_paragraph_gives_the_command_that_ran_the_study(sources, tmp_path, monkeypatch):
    main = (sources / "main.tex").read_text()
    assert "make study" not in main and "studyCommand" not in main  # no record: no command is made up
    study_dir = write_study_dir(tmp_path / "mine", with_failure=False, variants=["full", "linear"])
    from peftlab.cli.study import record_command

    monkeypatch.setattr(sys, "argv", ["/venv/bin/peftlab", "study", "my_study.yaml", "--workers", "2"])
    record_command(study_dir)  # as peftlab study does once its runs are done
    paper.write_paper(study_dir, tmp_path / "paper", compile=False)
    main = (tmp_path / "paper" / "main.tex").read_text()
    assert "The runs were trained by\n\\commandline{\\studyCommand}\n" in main and "make study" not in main
    assert macros((tmp_path / "paper" / "results.tex").read_text())["studyCommand"] == (
        r"peftlab study my\_study.yaml --workers 2"
    )


@pytest.mark.e2e
@pytest.mark.skipif(
    bool(MISSING_LATEX),
    reason=f"LaTeX is not installed (missing Debian packages: "
    f"{' '.join(MISSING_LATEX)}; scripts/install-latex.sh installs them)",
)
def test_paper_compiles_and_the_pdf_shows_the_numbers(sources, tmp_path):
    shutil.copytree(sources, tmp_path, dirs_exist_ok=True)
    pdf = compile_pdf(tmp_path / "main.tex")
    assert pdf == tmp_path / "main.pdf"
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "Pairs for 1 pt" in text and "MDE" in text  # the significance table's power columns
    for number in (
        "74.5",
        "59.4",
        "67.6",
        "68.3",  # this study: main table and text
    ):
        assert number in text, number
    # no published row was measured on Fashion-MNIST: no literature table (test_literature_rows.py)
    assert "Comparison with published results" not in text and "This study (measured)" not in text
    assert "68.9" not in text and "72.25" not in text and "MMLU" not in text  # V-PETL Bench's and QLoRA's rows
    assert "??" not in text and "\\" not in text  # no unresolved reference, no LaTeX escape shown literally
    assert "For the author:" in text
    subprocess.run(
        ["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
        check=True,
        capture_output=True,
    )
    page = next(tmp_path.glob("page-*1.png"))
    assert page.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and page.stat().st_size > 5_000


@pytest.mark.skipif(bool(MISSING_LATEX), reason="LaTeX is not installed: scripts/install-latex.sh would install it")
def test_latexmk_reads_no_rc_file_from_the_paper_folder_its_parent_or_home(tmp_path, monkeypatch):
    """latexmk's rc files are Perl: a study folder from someone else's archive must not run code when its
    paper is built, and neither may rc files in $HOME, XDG_CONFIG_HOME or LATEXMKRCSYS."""
    out, home, markers = tmp_path / "study" / "paper", tmp_path / "home", tmp_path / "markers"
    for folder in (out, home / ".config" / "latexmk", markers):
        folder.mkdir(parents=True)
    rc_files = {
        "paper-latexmkrc": out / "latexmkrc",
        "paper-dot": out / ".latexmkrc",
        "parent-latexmkrc": out.parent / "latexmkrc",
        "parent-dot": out.parent / ".latexmkrc",
        "home": home / ".latexmkrc",
        "xdg": home / ".config" / "latexmk" / "latexmkrc",
        "system": tmp_path / "system-latexmkrc",
    }
    for name, rc in rc_files.items():
        rc.write_text(f'system("touch {markers / name}");\n$pdflatex = "touch {markers / name}-pdflatex; %O %S";\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("LATEXMKRCSYS", str(rc_files["system"]))
    (out / "main.tex").write_text("\\documentclass{article}\n\\begin{document}\nNo rc file.\n\\end{document}\n")
    assert compile_pdf(out / "main.tex").is_file()
    assert sorted(p.name for p in markers.iterdir()) == []


@pytest.mark.skipif(
    bool(MISSING_LATEX) or shutil.which("pdftotext") is None,
    reason="LaTeX is not installed: scripts/install-latex.sh would install it",
)
def test_install_latex_script_does_nothing_when_everything_is_installed():
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "install-latex.sh")], capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc


@pytest.mark.parametrize(
    "names,keys",
    [
        (["fashion_mnist"], "xiao2017fashionmnist"),
        (["vtab1k/caltech101", "vtab1k/dtd"], "zhai2019vtab"),
        (["mnist", "fashion_mnist"], "lecun1998mnist,xiao2017fashionmnist"),
        (["cifar100"], ""),  # no checked entry: no citation rather than Fashion-MNIST's
    ],
)
def test_the_setup_cites_the_study_s_own_datasets(names, keys):
    assert paper.data_citations(names) == keys
    assert set(filter(None, keys.split(","))) <= bib_keys(paper.REFERENCES.read_text())


def test_the_methods_paragraph_describes_only_the_method_families_the_study_ran():
    import pandas as pd

    plain = pd.DataFrame({"method": ["full", "lora"], "config.quant.mode": ["none", "none"]})
    text = method_sentences(plain)
    assert text.startswith("Full fine-tuning trains every parameter. LoRA adds") and "linear probe" not in text
    # a study that ran neither full fine-tuning nor the probe does not describe them; its labels name the rest,
    # in the order of its configurations
    zoo = pd.DataFrame({"method": ["dora", "bitfit", "adaptive"], "config.quant.mode": ["none"] * 3})
    text = method_sentences(zoo, labels={"dora": "DoRA", "adaptive": "Controller"})
    assert "Full fine-tuning" not in text and "linear probe" not in text and "LoRA adds" not in text
    assert text.startswith("DoRA splits") and "(Controller in the tables). Every method trains the classifier" in text
    assert "DoRA (DoRA" not in text and text.index("BitFit") < text.index("The rank controller")
    mixed = pd.DataFrame(
        {
            "method": ["lora", "lora", "adalora", "qalora"],
            "variant": ["lora", "lora nf4", "adalora", "qalora"],
            "config.quant.mode": ["none", "nf4", "none", "none"],
        }
    )
    text = method_sentences(mixed)
    assert text.index("AdaLoRA") < text.index("QA-LoRA") < text.index("QLoRA-style")
    assert "lora nf4 is applied on a base stored in 4-bit NF4 \\citep{dettmers2023qlora}" in text
    assert "rank controller" not in text and "\\citep{zhang2023adalora}" in text and "\\citep{xu2024qalora}" in text


def test_a_figure_much_wider_or_taller_than_others_stands_alone_at_the_text_s_width(tmp_path):
    """The paper pairs figures in half-width subfigures, except one whose page is wider than WIDE or taller than
    TALL allows (read from its PDF's MediaBox): the methods study's 48 seed boxes, a strip in half the width."""
    from peftlab.analysis.paper.figures import figure_layout

    for name, (width, height) in {"seed_boxplots": (460.8, 849.6), "convergence": (432, 288)}.items():
        (tmp_path / f"{name}.pdf").write_text(f"%PDF-1.4\n1 0 obj << /MediaBox [ 0 0 {width} {height} ] >>\n")
    layout = figure_layout(["seed_boxplots", "convergence"], tmp_path)
    assert layout["alone"] == [("seed_boxplots", "1"), ("convergence", "0.6")] and layout["pairs"] == []
    assert figure_layout(["seed_boxplots", "convergence"])["pairs"] == [["seed_boxplots", "convergence"]]
    (tmp_path / "seed_boxplots.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /MediaBox [ 0 0 400 300 ] >>\n")
    assert figure_layout(["seed_boxplots", "convergence"], tmp_path)["pairs"] == [["seed_boxplots", "convergence"]]


def test_the_paper_names_each_type_the_peft_bridge_ran():
    """A study of PEFT's types through method.name: peft names each type (by its configuration's label, else
    its method.peft_type) in the methods paragraph and in cfgMethods, not the bridge's one label: the methods
    study's paper named only 'HRA' for its 22 types before."""
    import pandas as pd

    from peftlab.analysis.paper.macros import method_words

    runs = pd.DataFrame(
        {
            "method": ["lora", "peft", "peft", "peft", "peft"],
            "variant": ["lora", "peft", "peft", "peft peft_type=C3A", "peft peft_type=ROAD"],
            "config.method.peft_type": [None, "HRA", "HRA", "C3A", "ROAD"],
            "config.quant.mode": ["none"] * 5,
        }
    )
    labels = {"peft": "HRA", "peft peft_type=ROAD": "RoAd"}
    text = method_sentences(runs, labels=labels)
    assert "HRA, C3A and RoAd ran through PEFT's own implementation of each type" in text
    assert "\\citep{mangrulkar2022peft}" in text and "(HRA in the tables)" not in text

    class Study:
        done = runs

    Study.labels = labels
    assert method_words(Study, "peft") == ["HRA", "C3A", "RoAd"]
    assert method_sentences(runs[runs["method"] == "lora"]).count("PEFT's own") == 0


@pytest.mark.usefixtures("unrendered_figures")
def test_the_paper_names_configurations_by_the_study_s_labels(tmp_path):
    """report.labels in the study file name the configurations in the paper's tables and text, as
    in report.md: plain text escaped, math kept."""
    study_dir = write_study_dir(tmp_path / "labelled")
    (study_dir / "study.yaml").write_text(
        'report:\n  labels:\n    full: "Full FT & more"\n    lora: "LoRA ($\\\\alpha$)"\n'
    )
    paper.write_paper(study_dir, tmp_path / "paper", compile=False)
    main_table = (tmp_path / "paper" / "tables" / "main_table.tex").read_text()
    assert r"Full FT \& more" in main_table and r"LoRA ($\alpha$)" in main_table
    significance = (tmp_path / "paper" / "tables" / "significance.tex").read_text()
    assert r"against Full FT \& more" in significance
    results = macros((tmp_path / "paper" / "results.tex").read_text())
    assert results["baselineName"] == r"Full FT \& more"


# every string a run folder or study file can hold that TeX would run or read were it not escaped
HOSTILE = {
    "full": r"full \input{/etc/hostname} & 50% #_~^^5cinput{x}",
    "lora r=4": "lora \\write18{touch pwned}\n\\input{/etc/hostname} r=4",  # a line break ends a comment
}
HOSTILE_METHOD = {"linear": r"linear\catcode`\@=11"}
HOSTILE_LABELS = {"lora r=8": r"LoRA ($\input{/etc/hostname}$)", "linear": r"Lin ($^^5cinput{x}$)"}
FROM_DATA = (r"\input{/etc", r"\write18", r"^^5c", r"\catcode", r"\input{x}")


def hostile_study(tmp_path):
    """write_study_dir's study with LaTeX commands in its variant, method, dataset, model and CPU names, its
    labels and its tuning record: what a study folder from someone else's archive may hold."""
    study_dir = write_study_dir(tmp_path / "hostile")
    for run in (study_dir / "runs").iterdir():
        spec, result = read_json(run / "spec.json"), read_json(run / "result.json")
        spec["variant"] = HOSTILE.get(spec["variant"], spec["variant"])
        spec["method"] = HOSTILE_METHOD.get(spec["method"], spec["method"])
        result["config"]["data"]["name"] = r"mnist\input{/etc/hostname}"
        result["config"]["model"]["name"] = r"vit\write18{id}"
        if result["provenance"]:
            result["provenance"]["hardware"]["cpu"] = r"EPYC \catcode`\%=12"
        (run / "spec.json").write_text(json.dumps(spec))
        (run / "result.json").write_text(json.dumps(result))
    labels = "".join(f"    {json.dumps(k)}: {json.dumps(v)}\n" for k, v in HOSTILE_LABELS.items())
    (study_dir / "study.yaml").write_text("report:\n  labels:\n" + labels)
    key, value = r"train.lr\input{/etc/hostname}", r"\input{/etc/hostname}"
    search = selection("lora", [{"key": key, "values": [0.01, value]}], [("COMPLETE", 0.7, {key: value}, {})], 0)
    (study_dir / "tune" / "lora").mkdir(parents=True)
    (study_dir / "tune" / "lora" / "selection.json").write_text(json.dumps(search))
    return study_dir


@pytest.fixture(scope="module")
def hostile_sources(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "paper"
    paper.write_paper(hostile_study(out.parent), out, compile=False)
    return out


def test_every_string_from_the_study_reaches_latex_escaped(hostile_sources):
    """Names from spec.json, result.json and the study file print literally: no command in them reaches TeX,
    in any table, caption, macro or paragraph (math in a label keeps only harmless symbols)."""
    out = hostile_sources
    for tex in sorted(out.rglob("*.tex")):
        text = re.sub(r"(?<!\\)%.*", "", tex.read_text())  # TeX skips a comment to the end of its line
        for command in FROM_DATA:
            assert command not in text, f"{tex.relative_to(out)}: {command}"
    main_table = (out / "tables" / "main_table.tex").read_text()
    assert r"full \textbackslash{}input\{/etc/hostname\} \& 50\% \#\_" in main_table
    assert r"LoRA (\$\textbackslash{}input\{/etc/hostname\}\$)" in main_table
    assert r"\textbackslash{}input\{/etc/hostname\}" in (out / "tables" / "tuning.tex").read_text()


@pytest.mark.e2e
@pytest.mark.skipif(
    bool(MISSING_LATEX) or shutil.which("pdftotext") is None,
    reason="LaTeX is not installed: scripts/install-latex.sh would install it",
)
def test_a_paper_prints_the_commands_in_its_names_literally(hostile_sources, tmp_path):
    shutil.copytree(hostile_sources, tmp_path, dirs_exist_ok=True)
    pdf = compile_pdf(tmp_path / "main.tex")
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert r"\input{/etc/hostname}" in text and os.uname().nodename not in text.split()


# --- a tuned study: tune/<method>/selection.json as peftlab.study.search writes them ---------------


def selection(method, axes, trials, chosen_trial, search="grid", done=True):
    """A selection.json record (search.py: write_selection; tune.py: Search.record): trials are
    (state, value, params, reported) and the chosen one is the search's best."""
    records = [
        {
            "number": i,
            "state": state,
            "value": value,
            "params": params,
            "run_ids": [f"{method}t{i}"],
            "reported": reported,
        }
        for i, (state, value, params, reported) in enumerate(trials)
    ]
    best = records[chosen_trial]
    return {
        "fingerprint": "0123456789",
        "done": done,
        "search": {
            "method": method,
            "axes": axes,
            "search": search,
            "trials": len(trials),
            "metric": "val_top1",
            "seeds": [1000],
            "sampler_seed": 0,
            "reduction_factor": 3,
        },
        "trials": records,
        "chosen": {"trial": best["number"], "value": best["value"], "metric": "val_top1", "params": best["params"]},
    }


GRID = [0.001, 0.003, 0.01, 0.03]
SELECTIONS = [
    # chosen inside the grid
    selection(
        "full",
        [{"key": "train.lr", "values": GRID}],
        [("COMPLETE", v, {"train.lr": lr}, {}) for lr, v in zip(GRID, [0.70, 0.76, 0.72, 0.60])],
        1,
    ),
    # chosen at the largest value of the grid: marked, and said in the text
    selection(
        "linear",
        [{"key": "train.lr", "values": GRID}],
        [("COMPLETE", v, {"train.lr": lr}, {}) for lr, v in zip(GRID, [0.50, 0.55, 0.58, 0.60])],
        3,
    ),
    # two axes, a range and a pruned trial
    selection(
        "lora",
        [{"key": "train.lr", "low": 1e-4, "high": 1e-1, "log": True}, {"key": "method.r", "values": [4, 8]}],
        [
            ("COMPLETE", 0.66, {"train.lr": 0.002, "method.r": 8}, {"25": 0.6}),
            ("PRUNED", None, {"train.lr": 0.05, "method.r": 4}, {"25": 0.41}),
            ("COMPLETE", 0.69, {"train.lr": 0.004, "method.r": 4}, {"25": 0.62}),
        ],
        2,
        search="random",
    ),
]


@pytest.fixture(scope="module")
def tuned_study(study_dir, tmp_path_factory):
    """The golden study, tuned: its runs are the main table's final runs (groups: main)."""
    tuned = tmp_path_factory.mktemp("tuned") / "default"
    shutil.copytree(study_dir, tuned)
    for spec_path in tuned.glob("runs/*/spec.json"):
        spec = json.loads(spec_path.read_text())
        spec_path.write_text(json.dumps({**spec, "groups": ["main"]}))
    for record in SELECTIONS:
        directory = tuned / "tune" / record["search"]["method"]
        directory.mkdir(parents=True)
        (directory / "selection.json").write_text(json.dumps(record, indent=2))
    return tuned


@pytest.fixture(scope="module")
def tuned_sources(tuned_study, tmp_path_factory):
    out = tmp_path_factory.mktemp("tuned_paper")
    paper.write_paper(tuned_study, out, compile=False)
    return out


def test_a_tuned_study_gets_one_row_per_tuned_method(tuned_sources):
    table = (tuned_sources / "tables" / "tuning.tex").read_text()
    rows = [line for line in table.splitlines() if line.endswith(r"\\") and "&" in line][2:]  # below the header
    # final runs (studyfiles.RUNS, val_top1 = test_top1): full 74.5, linear 59.4, lora r=4 and r=8 together 68.0
    assert rows == [
        r"full & \texttt{train.lr} $\in$ \{0.001, 0.003, 0.01, 0.03\} & 4/0 & "
        r"\texttt{train.lr}=\allowbreak\mbox{0.003} & 1 & 76.0 & 74.5 & 74.5 & 3 \\",
        r"linear & \texttt{train.lr} $\in$ \{0.001, 0.003, 0.01, 0.03\} & 4/0 & "
        r"\texttt{train.lr}=\allowbreak\mbox{0.03$^{\dagger}$} & 3 & 60.0 & 59.4 & 59.4 & 3 \\",
        r"lora & \texttt{train.lr} $\in$ [0.0001, 0.1] (log); \texttt{method.r} $\in$ \{4, 8\} & 2/1 & "
        r"\texttt{train.lr}=\allowbreak\mbox{0.004}, \texttt{method.r}=\allowbreak\mbox{4$^{\dagger}$} & 2 & 69.0 & "
        r"68.0 & 68.0 & 3 \\",
    ]
    assert r"$^{\dagger}$: the smallest or largest value searched" in table
    document = (tuned_sources / "tables" / "tuning_document.tex").read_text()
    assert r"\usepackage{tabularx}" in document and table in document
    assert (tuned_sources / "figures" / "tuning.pdf").stat().st_size > 0


def test_a_tuned_paper_says_how_it_was_tuned_through_macros(tuned_sources):
    main = (tuned_sources / "main.tex").read_text()
    defined = macros((tuned_sources / "results.tex").read_text())
    assert r"\paragraph{Hyper-parameter tuning.}" in main and r"\input{tables/tuning}" in main
    # at most 0.8 of the page high: a tuning figure of 21 methods (7 rows of panels) ran off the page
    tuning_figure = r"\includegraphics[width=\linewidth,height=0.8\textheight,keepaspectratio]{figures/tuning.pdf}"
    assert tuning_figure in main and r"Figure~\ref{fig:tuning}" in main
    assert "not tuned per method" not in main
    assert r"hyper-parameters (\tuneKeys{}; per \tuneUnit{} in Table~\ref{tab:tuning}) were chosen" in main
    assert defined["tuneUnit"] == "method"  # one search per method: lora's r is searched, not an axis
    assert r"\tuneEdges{}" in main
    assert defined["tuneKeys"] == r"\texttt{train.lr} and \texttt{method.r}"
    # budgets that differ are named by search, and the sentence drops its "trials per method"
    assert defined["tuneTrials"] == "4 trials for full and linear, and 3 for lora"
    assert r"search of \tuneTrials{} (Optuna)" in main and defined["tuneSearch"] == "grid or random"
    assert defined["tuneSeeds"] == "1000" and defined["tuneMethods"] == "3"
    assert r"on tuning \tuneSeedWord{} \tuneSeeds{}," in main and defined["tuneSeedWord"] == "seed"
    assert defined["tuneEdges"] == (  # a two-point axis's choice is at one of its ends
        r"the \texttt{train.lr} is the largest value searched for linear; the \texttt{method.r} is the "
        "smallest value searched for lora"
    )
    assert_no_typed_number(tuned_sources)


@pytest.mark.parametrize(
    "value,text",
    [
        (0.0040536, "0.00405"),
        (0.1, "0.1"),
        (3e-4, "0.0003"),
        (1e-5, "1e-05"),
        (4000.0, "4{,}000"),
        (1234.5, "1{,}234"),
        (64, "64"),
    ],
)
def test_config_values_read_as_prose_writes_them(value, text):
    """A searched learning rate such as 0.0040536 reads 0.00405 in the paper's setup sentence."""
    from peftlab.analysis.paper.macros import config_value

    assert config_value(value) == text


def test_an_untuned_paper_has_no_tuning_table_nor_figure(sources):
    main = (sources / "main.tex").read_text()
    assert "not tuned per method" in main
    assert "Hyper-parameter tuning" not in main and "tab:tuning" not in main and "fig:tuning" not in main
    assert not (sources / "tables" / "tuning.tex").exists() and not (sources / "figures" / "tuning.pdf").exists()
    assert "tune" not in (sources / "results.tex").read_text()


@pytest.mark.e2e
@pytest.mark.skipif(bool(MISSING_LATEX), reason="LaTeX is not installed: scripts/install-latex.sh would install it")
def test_a_tuned_paper_compiles_with_its_table_and_figure(tuned_sources, tmp_path):
    shutil.copytree(tuned_sources, tmp_path, dirs_exist_ok=True)
    pdf = compile_pdf(tmp_path / "main.tex")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "Hyper-parameter tuning." in text and "Hyper-parameter search of each method" in text
    assert "train.lr=0.003" in text and "76.0" in text and "??" not in text
    assert "train.lr is the largest value searched for linear" in " ".join(text.split())  # across a line break
    subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tuning_document.tex"],
        cwd=tmp_path / "tables",
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "tables" / "tuning_document.pdf").stat().st_size > 0


# --- a study of causal LMs: judged by test perplexity, lower is better, as the report judges it ---------


@pytest.fixture(scope="module")
def lm_sources(tmp_path_factory):
    """The paper of test_report_direction's causal-LM study: full fine-tuning has the highest per-token top-1
    (40.4%), LoRA r=8 the lowest perplexity (30.4; full 40.2, LoRA r=4 50.6)."""
    study = lm_study(tmp_path_factory.mktemp("lm") / "study")
    out = tmp_path_factory.mktemp("lm_paper")
    paper.write_paper(study, out, compile=False)
    return out


def test_a_causal_lm_paper_names_the_lowest_perplexity_best(lm_sources):
    defined = macros((lm_sources / "results.tex").read_text())
    assert defined["bestName"] == "lora r=8" and defined["worstName"] == "lora r=4"  # by top-1: full, lora r=4
    assert defined["perplexityMeanLoraREight"] == "30.4" and defined["perplexityMeanFull"] == "40.2"
    assert not any(name.startswith("topOne") for name in defined)
    assert defined["paretoNames"] == "lora r=4 and lora r=8"  # full: more parameters and a higher perplexity
    assert "rankTrend" not in defined  # r=4 and r=8: two ranks are no trend
    assert "ourOrder" not in defined  # the causal-LM rows of the literature (MMLU): data peftlab does not read
    main = (lm_sources / "main.tex").read_text()
    assert r"Mean test perplexity (lower is better) ranges from \bestMeans{} to \worstMeans{}." in main
    assert defined["bestMeans"] == r"\perplexityMeanLoraREight{} (\nameLoraREight{})"  # each its own value
    assert defined["worstMeans"] == r"\perplexityMeanLoraRFour{} (\nameLoraRFour{})"
    assert r"The lowest mean, the best, is that of \bestNamed{}" in main
    assert "the study is judged by test perplexity, lower is better" in main
    # the base row: the base alone on the runs' test tokens (metrics.base_test_perplexity), as the report gives it
    assert defined["noAdapterPerplexity"] == "868.2"
    assert r"the base has a test perplexity of \noAdapterPerplexity{} on the same test tokens" in main
    assert_no_typed_number(lm_sources)


def test_a_causal_lm_paper_compares_configurations_by_perplexity(lm_sources, tmp_path):
    table = (lm_sources / "tables" / "significance.tex").read_text()
    assert "against full on matched seeds (test perplexity, lower is better)." in table
    assert "where the configuration has the lower perplexity" in table and "test top-1" not in table
    # lora r=8 about 9.8 below full on every seed: it wins them all; lora r=4 about 10.4 above loses them all
    assert r"lora r=8 & 5 & \ensuremath{-9.8} & \ensuremath{3.3\times 10^{-8}} & 0.125 & " in table
    assert r"lora r=8 & 0.3 & 3 & " in table
    assert r"& 0.125 & \ensuremath{-61.98} \\" in table and r"& 1.00 & 1.00 [1.00, 1.00] \\" in table
    assert r"& \ensuremath{32.89} \\" in table and r"& 0.00 & 0.00 [0.00, 0.00] \\" in table  # rliable's P(X < Y)
    assert r"lora r=4 & 5 & \ensuremath{+10.4} & " in table
    # no published row was measured on the study's data: its order beside every row (--all-literature)
    paper.write_paper(lm_study(tmp_path / "study"), tmp_path / "every", only="tables", all_literature=True)
    literature = (tmp_path / "every" / "tables" / "literature.tex").read_text()
    assert "test perplexity (lower is better), mean over seeds" in literature
    assert literature.index("lora r=8 & 16.0K & 30.4") < literature.index("full & 800.0K & 40.2")


def test_a_causal_lm_paper_says_perplexity_without_percent_or_top1(lm_sources):
    main = (lm_sources / "main.tex").read_text()
    assert not re.search(r"\\perplexity\w+\{\}\\%", main) and "topOne" not in main
    assert "in points" not in main and "{} points" not in main and "highest mean" not in main
    for line in main.splitlines():
        if "top-1" in line:  # the sentence saying what a causal LM's top-1 is; the figure drawn on it
            assert "per token" in line, line
    for name in ("accuracy_vs_params", "seed_boxplots", "ablation_method_r", "convergence"):
        caption = main.split(f"{{figures/{name}.pdf}}")[1].split("\n")[1]
        assert "perplexity (lower is better)" in caption, caption


@pytest.mark.usefixtures("unrendered_figures")
def test_a_study_mixing_causal_lms_and_classifiers_is_judged_by_top1(tmp_path):
    study = lm_study(tmp_path / "mixed", runs=TEXT_RUNS, causal=lambda variant: variant == "full")
    main = paper.write_paper(study, tmp_path / "paper", compile=False).read_text()
    assert r"Mean test top-1 ranges from \worstMeans{} to \bestMeans{}." in main
    worst = macros((tmp_path / "paper" / "results.tex").read_text())["worstMeans"]
    assert worst == r"\topOneMeanLoraREight{}\% (\nameLoraREight{})"
    assert "judged by test perplexity" not in main
    assert "(test top-1)." in (tmp_path / "paper" / "tables" / "significance.tex").read_text()


@pytest.mark.usefixtures("unrendered_figures")
def test_a_causal_lm_paper_tuned_by_perplexity_says_lower_is_better(tmp_path):
    study = lm_study(tmp_path / "study")
    for path in study.glob("runs/*/spec.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "groups": ["main"]}))
    record = selection(
        "lora",
        [{"key": "train.lr", "values": GRID}],
        [("COMPLETE", v, {"train.lr": lr}, {}) for lr, v in zip(GRID, [40, 30, 35, 50])],
        1,
    )
    record["search"]["metric"] = record["chosen"]["metric"] = "val_perplexity"
    (study / "tune" / "lora").mkdir(parents=True)
    (study / "tune" / "lora" / "selection.json").write_text(json.dumps(record))
    main = paper.write_paper(study, tmp_path / "paper", compile=False).read_text()
    assert "the mean validation and test perplexity (lower is better) of the final runs" in main
    assert r"Validation score (\tuneMetric{}, lower is better, one tuning seed)" in main  # seeds: [1000]
    # the paragraph names the score in words, its key after them (it read "scored by val perplexity")
    results = (tmp_path / "paper" / "results.tex").read_text()
    assert r"scored by \tuneMetricWords{}" in main and r"validation perplexity (\texttt{val\_perplexity})" in results


@pytest.mark.e2e
@pytest.mark.skipif(bool(MISSING_LATEX), reason="LaTeX is not installed: scripts/install-latex.sh would install it")
def test_a_causal_lm_paper_compiles(lm_sources, tmp_path):
    shutil.copytree(lm_sources, tmp_path, dirs_exist_ok=True)
    pdf = compile_pdf(tmp_path / "main.tex")
    text = " ".join(
        subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout.split()
    )
    assert "ranges from 30.4 (lora r=8) to 50.6 (lora r=4)" in text and "Pairs for 1 " in text and "??" not in text


# --- what a text study's paper says it adapted: a text classifier or a causal LM, not a vision transformer ---

# phrases true of a timm ViT on images only
VISION_ONLY = ("vision transformer", "timm", "pixel", "image", "patches", "fashionmnist", "MNIST", "backbone is")


def text_paper(study: Path, out: Path, sizes: dict | None = None, **data) -> tuple[str, dict[str, str]]:
    """main.tex and the macros of the paper of ``study``, its runs' config.data updated with ``data`` (and their
    recorded split sizes, provenance.data.split_sizes, set to ``sizes``)."""
    for path in study.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        result["config"]["data"].update(data)
        if sizes is not None:
            result["provenance"]["data"] = {"split_sizes": sizes}
        elif result.get("provenance"):
            result["provenance"].pop("data", None)
        path.write_text(json.dumps(result))
    paper.write_paper(study, out, compile=False)
    return (out / "main.tex").read_text(), macros((out / "results.tex").read_text())


@pytest.mark.usefixtures("unrendered_figures")
def test_a_causal_lm_paper_describes_next_token_prediction_on_instructions(tmp_path):
    main, defined = text_paper(
        lm_study(tmp_path / "study"), tmp_path / "paper", sizes={"train": 400}, name="instructions", max_length=64
    )
    for phrase in VISION_ONLY + ("classifier", "linear probe", "the head train", "trains the head"):
        assert phrase not in main, phrase
    assert r"a controlled study of \cfgMethods{} on a causal language model." in main
    assert (
        r"The model is \texttt{\cfgModel{}}, a causal language model of Hugging Face transformers, fine-tuned to "
        r"predict the next token; the model's own tokenizer turns each example into at most \cfgMaxLength{} tokens. "
        r"It is adapted to \cfgDataSetup{} with \cfgTrainImages{} training examples"
    ) in main  # these runs record no train section: how long they trained is left unsaid
    assert "the output after it is the response." in main and "taken on the response tokens only." in main
    assert "Full fine-tuning trains every parameter, the language-model head included" in defined["methodsText"]
    assert r"$\mathcal{L} \gets$ next-token cross-entropy on the batch's response tokens" in main
    assert r"\studyModelCount{}, \studyDataCount{}, \cfgTrainImages{} training examples and" in main
    assert defined["studyModelCount"] == "one model" and defined["studyDataCount"] == "one dataset"
    assert r"torch \envTorch, transformers \envTransformers, peft" in main
    # the model is named by its directory, not by model.name's timm default
    assert defined["cfgModel"] == "tiny" and defined["cfgData"] == "instructions"
    assert defined["cfgMaxLength"] == "64" and defined["cfgTrainImages"] == "400"
    assert_no_typed_number(tmp_path / "paper")


@pytest.mark.usefixtures("unrendered_figures")
def test_a_text_classification_paper_describes_a_sequence_classifier(tmp_path):
    main, defined = text_paper(text_study(tmp_path / "mrpc", "classification"), tmp_path / "paper", max_length=128)
    for phrase in VISION_ONLY + ("training images", "LM head", "next token"):
        assert phrase not in main, phrase
    assert r"a controlled study of \cfgMethods{} on a text classifier." in main
    assert (
        r"The model is \texttt{\cfgModel{}}, a sequence classifier of Hugging Face transformers with a newly "
        r"initialised classification head; the model's own tokenizer turns each example into at most "
        r"\cfgMaxLength{} tokens. It is adapted to \cfgDataSetup{} with its training split"
    ) in main
    assert (
        "and tested on its test split." in main and r"The study uses \studyModelCount{}, \studyDataCount{} and" in main
    )
    assert "linear probe trains" not in defined["methodsText"]
    assert defined["methodsText"].startswith("Full fine-tuning trains every parameter. LoRA adds")
    assert r"PEFT \citep{mangrulkar2022peft} and Hugging Face transformers \citep{wolf2020transformers}." in main
    assert defined["cfgModel"] == "tiny" and defined["cfgData"] == "glue/mrpc" and defined["cfgMaxLength"] == "128"
    assert_no_typed_number(tmp_path / "paper")
    # three score columns: shrunk to the line width where they would overrun it, never below 7 pt of 10.95 pt
    table = (tmp_path / "paper" / "tables" / "main_table.tex").read_text()
    assert (
        r"\resizebox{\ifdim0.64\width>\linewidth0.64\width\else\ifdim\width>\linewidth\linewidth\else\width\fi\fi}"
        r"{!}{\begin{tabular}" in table
    )


def test_a_vision_paper_describes_the_timm_backbone_on_images(sources):
    main = (sources / "main.tex").read_text()
    assert r"on a vision transformer \citep{dosovitskiy2021vit,touvron2021deit}." in main
    # the test study's ViT is resized (4 blocks of width 128): said by what it is, not by an identifier
    assert r"The backbone is a vision transformer of timm at \cfgImgSize{}-pixel input with \cfgPatchSize{}" in main
    assert "texttt{\\cfgModel" not in main and "texttt{\\cfgData" not in main
    assert r"\cfgTrainImages{} training images" in main and "timm \\envTimm, peft" in main
    defined = macros((sources / "results.tex").read_text())
    assert "cfgMaxLength" not in defined and "envTransformers" not in defined
    assert "resizebox" not in (sources / "tables" / "main_table.tex").read_text()


@pytest.mark.usefixtures("unrendered_figures")
def test_the_setup_gives_the_split_sizes_the_runs_recorded_and_leaves_out_what_they_did_not(tmp_path):
    """The training and test images come from result.json's provenance.data.split_sizes, not data.*_subset;
    a run that recorded none leaves the words out rather than printing "n/a"."""
    study_dir = write_study_dir(tmp_path / "folder", with_failure=False, variants=["full", "lora r=8"])
    for path in study_dir.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        result["config"]["data"].update(name="imagefolder", root="/data/fashion", train_subset=None, test_subset=None)
        result["provenance"]["data"]["split_sizes"] = {"train": 540, "val": 60, "test": 300}
        path.write_text(json.dumps(result))
    paper.write_paper(study_dir, tmp_path / "paper", compile=False)
    defined = macros((tmp_path / "paper" / "results.tex").read_text())
    assert defined["cfgTrainImages"] == "540" and defined["cfgTestImages"] == "300"
    assert defined["cfgData"] == "fashion (imagefolder)"  # the format alone does not say which images
    main = (tmp_path / "paper" / "main.tex").read_text()
    assert "and load the base weights" in main and "random weights" not in main
    for path in study_dir.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        del result["provenance"]["data"]
        result["config"]["model"]["pretrained"] = "none"  # and a random base, which loads no weights
        path.write_text(json.dumps(result))
    paper.write_paper(study_dir, tmp_path / "bare", compile=False)
    main = (tmp_path / "bare" / "main.tex").read_text()
    assert "load the base weights" not in main and "The backbone starts from random weights" in main
    defined = macros((tmp_path / "bare" / "results.tex").read_text())
    assert "cfgTrainImages" not in defined and "n/a" not in defined.get("cfgTestImages", "")
    assert r"It is trained on \cfgDataSetup{} for \cfgEpochs{} \cfgEpochsNoun{} (batch size" in main  # random base
    assert "training images" not in main and "test images" not in main


@pytest.mark.usefixtures("unrendered_figures")
def test_the_abstract_names_methods_by_the_study_s_labels_and_counts_in_words_that_agree(tmp_path):
    study_dir = write_study_dir(tmp_path / "labelled")
    (study_dir / "study.yaml").write_text("report:\n  labels: {full: Full FT, linear: Probe}\n")
    for path in study_dir.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        if result.get("provenance"):
            result["provenance"]["threads"] = 1
        result["config"]["train"]["epochs"] = 1
        path.write_text(json.dumps(result))
    paper.write_paper(study_dir, tmp_path / "paper", compile=False)
    defined = macros((tmp_path / "paper" / "results.tex").read_text())
    assert defined["cfgMethods"] == "Full FT, Probe and LoRA"
    assert defined["envThreadsNoun"] == "thread" and defined["cfgEpochsNoun"] == "epoch"
    main = (tmp_path / "paper" / "main.tex").read_text()
    assert r"(\envThreads{} \envThreadsNoun{} per run" in main and r"\cfgEpochs{} \cfgEpochsNoun{}" in main


def test_a_significance_cell_that_cannot_be_computed_is_explained_and_only_then():
    import numpy as np
    import pandas as pd

    from peftlab.analysis.paper.tables import not_computable

    equal = pd.DataFrame({"cohens_dz": [np.nan, 1.2], "p_wilcoxon_holm": [0.5, 0.25]})
    assert not_computable(equal) == (
        "n/a, --: not computable from these pairs: the t-test, MDE, pairs needed and $d_z$ need two or more "
        "pairs whose differences are not all equal."
    )
    assert not_computable(pd.DataFrame({"cohens_dz": [0.4], "p_wilcoxon_holm": [0.03]})) == ""


def test_the_archive_travels_without_this_machines_paths(tmp_path, monkeypatch):
    """No absolute path of the packing machine anywhere in the archive (results.csv and .parquet, REPRODUCE.md,
    results.tex), the results hash the paper prints checkable from what is packed, every command that ran the study
    given, and where the data goes said."""
    study_dir = write_study_dir(tmp_path / "mine", with_failure=False, variants=["full", "linear"])
    data_root = tmp_path / "datasets" / "fashion-mnist"
    for result_file in study_dir.glob("runs/*/result.json"):  # the runs read their data from outside the checkout
        record = json.loads(result_file.read_text())
        record["config"]["data"]["root"] = str(data_root)
        result_file.write_text(json.dumps(record))
    from peftlab.cli.study import record_command

    study_yaml = REPO / "configs" / "studies" / "default.yaml"
    for argv in (["study", str(tmp_path / "my.yaml"), "--workers", "2"], ["study", str(tmp_path / "my.yaml")]):
        monkeypatch.setattr(sys, "argv", ["/venv/bin/peftlab", *argv, "--study-dir", str(study_dir)])
        record_command(study_dir)  # two calls trained the runs, the first most of them
    paper_dir = study_dir / "paper"
    paper.write_paper(study_dir, paper_dir, compile=False)
    (paper_dir / "main.pdf").write_bytes(b"%PDF-1.5 stand-in\n")
    record_pdf(paper_dir, load_results_sha256(study_dir))
    (study_dir / "study.yaml").unlink(missing_ok=True)
    archive = write_submission(study_dir, study_yaml, paper_dir=paper_dir, out=tmp_path / "sub.tar.gz")
    with tarfile.open(archive) as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar if m.isfile()}
    for name, data in files.items():
        text = data.decode("latin-1")
        for machine in (str(tmp_path), str(REPO), os.path.realpath(tmp_path)):
            assert machine not in text, (name, machine)
    csv = files["results/results.csv"].decode()
    assert "OUTSIDE/fashion-mnist" in csv
    lines = files["results/runs.sha256"]
    assert hashlib.sha256(lines).hexdigest() == load_results_sha256(study_dir)
    assert macros(files["paper/results.tex"].decode())["resultsSha"] == load_results_sha256(study_dir)
    reproduce = files["REPRODUCE.md"].decode()
    assert "The 2 commands that ran the study's runs" in reproduce
    assert "cd . && peftlab study OUTSIDE/my.yaml --workers 2 --study-dir STUDY\n" in reproduce  # run from the checkout
    assert "## Where the data goes" in reproduce and "data.root `OUTSIDE/fashion-mnist`" in reproduce


@pytest.mark.usefixtures("unrendered_figures")
def test_the_reproducibility_paragraph_counts_every_call_that_trained_the_runs(tmp_path, monkeypatch):
    """Earlier calls of `peftlab study` may have trained most runs: the paragraph says how many calls there were
    and names the last; REPRODUCE.md lists them all."""
    study_dir = write_study_dir(tmp_path / "mine", with_failure=False, variants=["full", "linear"])
    from peftlab.cli.study import record_command

    for argv in (["study", "my.yaml", "--workers", "2"], ["study", "my.yaml", "--retry-failed"]):
        monkeypatch.setattr(sys, "argv", ["/venv/bin/peftlab", *argv])
        record_command(study_dir)
    paper.write_paper(study_dir, tmp_path / "paper", compile=False)
    main = " ".join((tmp_path / "paper" / "main.tex").read_text().split())
    assert (
        r"The runs were trained by \studyCommandCount{} calls of \texttt{peftlab study}; the submission's "
        r"\texttt{REPRODUCE.md} gives them all, the last was \commandline{\studyCommand}" in main
    )
    results = macros((tmp_path / "paper" / "results.tex").read_text())
    assert results["studyCommandCount"] == "two"  # a small count in words, as the prose writes it
    assert results["studyCommand"] == r"peftlab study my.yaml --retry-failed"


def test_the_limitations_give_the_test_sets_resolution(sources):
    """A test set of N images reports test top-1 in steps of 100 / N points: the limitations say so."""
    main = " ".join((sources / "main.tex").read_text().split())
    assert r"one of them moves a test top-1 by \cfgTestStep{}," in main, main[main.find("Limitations") :][:600]
    results = macros((sources / "results.tex").read_text())
    images = int(re.sub(r"\D", "", results["cfgTestImages"]))  # "2{,}000"
    step, noun = results["cfgTestStep"].split()  # "0.05 points": its noun with it, "1 point" for one
    assert float(step) == pytest.approx(100 / images, rel=0.05) and noun == "points"
