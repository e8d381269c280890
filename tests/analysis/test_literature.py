"""The literature rows of the method zoo (V-PETL Bench) and how the report and the paper set a study's
methods beside them: the same methods on both sides, whichever of them the study ran."""

import re

import pytest
from studyfiles import write_study_dir

from peftlab.analysis import paper
from peftlab.analysis.literature import (
    LITERATURE,
    bib_keys,
    cited_methods,
    literature_section,
    load_literature,
    ranked_citations,
)
from peftlab.analysis.load import load_results
from peftlab.tuners import TUNERS

VPETL = ("vpetl_cifar", "vpetl_vtab_mean")
# V-PETL Bench's VTAB table rows that peftlab has, and the method each stands for
VPETL_METHODS = {
    "Full fine-tuning": "full",
    "Linear probing": "linear",
    "LoRA": "lora",
    "VPT-Shallow": "vpt",
    "VPT-Deep": "vpt",
    "Adapter": "pfeiffer",
    "BitFit": "bitfit",
    "AdaptFormer": "adaptformer",
    "SSF": "ssf",
}
ZOO_STUDY = ["full", "vpt", "pfeiffer", "ssf", "houlsby", "difffit"]


@pytest.fixture(scope="module")
def citations():
    return load_literature(LITERATURE, bib_keys(paper.REFERENCES.read_text()))


def test_every_peftlab_name_is_a_registry_method(citations):
    assert {c.peftlab for c in citations if c.peftlab} <= set(TUNERS)


@pytest.mark.parametrize("setting", VPETL)
def test_vpetl_settings_hold_every_method_peftlab_has_once(citations, setting):
    rows = {c.method: c.peftlab for c in citations if c.setting == setting}
    assert rows == VPETL_METHODS
    assert all(c.trainable for c in citations if c.setting == setting)  # each with its trainable count


@pytest.mark.parametrize(
    "ran, order",
    [
        ({"full", "vpt", "pfeiffer", "ssf"}, ["VPT-Deep", "VPT-Shallow", "Adapter", "SSF", "Full fine-tuning"]),
        ({"bitfit", "houlsby", "difffit"}, ["BitFit"]),
        ({"houlsby"}, []),
    ],
)
def test_a_setting_is_ranked_over_the_methods_the_study_ran(citations, ran, order):
    assert [c.method for c in ranked_citations(citations, "vpetl_cifar", ran)] == order


def section(study_dir) -> str:
    return "\n".join(literature_section(load_results(study_dir)))


def test_report_section_of_a_zoo_study_sets_the_same_methods_side_by_side(tmp_path):
    text = section(write_study_dir(tmp_path / "zoo", with_failure=False, variants=ZOO_STUDY))
    assert (
        "- xin2024vpetl, CIFAR-100 (VTAB-1k): VPT-Deep (78.8) > VPT-Shallow (77.7) > Adapter (69.2) > SSF (69.0) "
        "> Full fine-tuning (68.9)"
    ) in text
    assert (
        "- xin2024vpetl, VTAB-1k, mean of 19 tasks: SSF (73.10) > Adapter (71.44) > VPT-Deep (69.43) > "
        "Full fine-tuning (65.57) > VPT-Shallow (64.85)"
    ) in text
    # houlsby (73.4) and difffit (71.5) have no cited row: they are not in the order
    assert "- this study: full (74.5) > ssf (72.2) > vpt (70.3) > pfeiffer (68.6)" in text
    assert "| VPT-Deep (vpt) | 0.56M | 78.8 |" in text
    assert "| this study (measured) | " in text and not re.search(r"\| (houlsby|difffit) \|", text)


def test_report_section_of_a_study_without_cited_methods_says_so(tmp_path):
    text = section(write_study_dir(tmp_path / "none", with_failure=False, variants=["houlsby", "difffit"]))
    assert "- this study: none of its methods (difffit, houlsby) is named by a cited row" in text
    assert "- xin2024vpetl" not in text  # no cited order without two of the study's methods
    assert "| cited: xin2024vpetl, repository README, VTAB results |" in text  # the cited rows are still listed


def macros(out) -> dict[str, str]:
    return dict(
        re.findall(r"^\\newcommand\{\\(\w+)\}\{(.*)\}  % ", (out / "results.tex").read_text(), flags=re.MULTILINE)
    )


def test_paper_of_a_zoo_study_ranks_its_cited_methods_and_lists_its_own(tmp_path):
    out = tmp_path / "paper"
    main = paper.write_paper(
        write_study_dir(tmp_path / "zoo", with_failure=False, variants=ZOO_STUDY), out, compile=False
    ).read_text()
    table = (out / "tables" / "literature.tex").read_text()
    ours = table[table.index(r"\emph{This study (measured)}") :]
    assert re.findall(r"^(\w+) & ", ours, flags=re.MULTILINE) == ["full", "ssf", "vpt", "pfeiffer"]
    assert "VPT-Shallow (vpt) & 0.08M & 77.7" in table and "AdaptFormer (adaptformer) & 0.16M & 72.32" in table
    defined = macros(out)
    assert defined["litOrderVpetlCifar"] == "VPT-Deep, VPT-Shallow, Adapter, SSF and Full fine-tuning"
    assert defined["ourOrder"] == "full, ssf, vpt and pfeiffer"
    assert main.count("Of the methods this study ran, the order is") == 2  # both V-PETL settings
    assert r"In this study the order is \ourOrder{}." in main


def test_paper_of_a_study_without_cited_methods_says_so(tmp_path):
    out = tmp_path / "paper"
    main = paper.write_paper(
        write_study_dir(tmp_path / "none", with_failure=False, variants=["houlsby", "difffit"]), out, compile=False
    ).read_text()
    table = (out / "tables" / "literature.tex").read_text()
    assert "No method of this study is named by a cited row." in table
    assert "Of the methods this study ran" not in main and "No method of this study is among the cited ones." in main
    assert macros(out)["litOrderVpetlCifar"] == "n/a"


def test_cited_methods_are_the_peftlab_names_of_the_cited_rows(citations):
    assert cited_methods(citations) >= set(VPETL_METHODS.values())
    assert not {"houlsby", "difffit", "ln"} & cited_methods(citations)
