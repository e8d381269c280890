"""The literature rows of the method zoo (V-PETL Bench) and how the report and the paper set a study's
methods beside them: the same methods on both sides, whichever of them the study ran."""

import re

import pytest
from studyfiles import set_data, write_study_dir
from test_report import write_study_dir as report_study_dir

from peftlab.analysis.paper import build as paper
from peftlab.analysis.report.literature import (
    LITERATURE,
    bib_keys,
    cited_methods,
    literature_section,
    load_literature,
    ranked_citations,
)
from peftlab.analysis.results.load import load_results
from peftlab.tuners import TUNERS
from peftlab.utils.errors import UserError

FIGURES_DRAWN = ()  # reads the papers' and reports' text: the figures written empty (conftest.py)
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
    assert "| cited: " not in text  # no row of the file is of its methods: none is listed, and it says so
    assert "No row of configs/literature.yaml is of a method this study ran (difffit, houlsby)." in text
    total = len(load_literature(LITERATURE))
    assert f"- not shown: {total} further rows of configs/literature.yaml (" in text


LORA_AND_ADALORA = [
    ("lora r=8", "lora", 8, {0: 0.70, 1: 0.72, 2: 0.71}),
    ("adalora", "adalora", 8, {0: 0.69, 1: 0.73, 2: 0.70}),
]
# a literature file of four settings: LoRA's and AdaLoRA's rows, and others of methods the study did not run
LITERATURE_FILE = """
settings:
  glue_mrpc: {paper: hu2022lora, table: T1, model: RoBERTa-base, dataset: MRPC, metric: accuracy, checked: here}
  mnli: {paper: zhang2023adalora, table: T1, model: DeBERTaV3-base, dataset: MNLI, metric: accuracy, checked: here}
  cifar: {paper: xin2024vpetl, table: README, model: ViT-B/16, dataset: CIFAR-100, metric: top-1, checked: here}
  mmlu: {paper: dettmers2023qlora, table: T4, model: LLaMA, dataset: MMLU, metric: accuracy, checked: here}
entries:
  - {id: MrpcFull, setting: glue_mrpc, method: "Fine-tune", peftlab: full, trainable: "125M", value: "90.2"}
  - {id: MrpcLora, setting: glue_mrpc, method: "LoRA", peftlab: lora, trainable: "0.8M", value: "89.7"}
  - {id: MnliFull, setting: mnli, method: "Full FT", peftlab: full, trainable: "184M", value: "89.90"}
  - {id: MnliAdalora, setting: mnli, method: "AdaLoRA", peftlab: adalora, trainable: "1.27M", value: "90.76"}
  - {id: MnliLora, setting: mnli, method: "LoRA", peftlab: lora, trainable: "1.33M", value: "90.65"}
  - {id: CifarVpt, setting: cifar, method: "VPT-Deep", peftlab: vpt, trainable: "0.56M", value: "78.8"}
  - {id: CifarLora, setting: cifar, method: "LoRA", peftlab: lora, trainable: "0.29M", value: "67.1"}
  - {id: MmluNf, setting: mmlu, method: "QLoRA", peftlab: null, trainable: null, value: "53.1"}
"""


def test_report_section_lists_only_the_rows_of_the_methods_the_study_ran(tmp_path):
    """A LoRA and AdaLoRA study: their published rows, the order of the two in the setting that has both,
    and one line on the file's other rows (of full fine-tuning, VPT and QLoRA) rather than all of them."""
    path = tmp_path / "literature.yaml"
    path.write_text(LITERATURE_FILE)
    study = report_study_dir(tmp_path / "adaptive", runs=LORA_AND_ADALORA)
    text = "\n".join(literature_section(load_results(study), path))
    cited = re.findall(r"^\| cited: [^|]+\| [^|]+\| ([^|]+) \|", text, flags=re.MULTILINE)
    assert cited == ["LoRA (lora)", "AdaLoRA (adalora)", "LoRA (lora)", "LoRA (lora)"]
    assert "- zhang2023adalora, MNLI: AdaLoRA (90.76) > LoRA (90.65)" in text
    assert (
        f"- not shown: 4 further rows of {path} (3 of methods this study did not run, 1 naming no peftlab method); "
        "`peftlab paper`'s literature table lists every row"
    ) in text
    assert "Full FT" not in text and "VPT-Deep" not in text and "QLoRA" not in text
    ours = "| this study (measured) | this study; test top-1 (%), mean over seeds |"
    assert f"{ours} lora r=8 | 16.0K | 71.0 |" in text and f"{ours} adalora | 16.0K | 70.7 |" in text


def test_report_section_of_the_literature_file_counts_the_rows_it_leaves_out(tmp_path):
    citations = load_literature(LITERATURE)
    study = report_study_dir(tmp_path / "adaptive", runs=LORA_AND_ADALORA)
    text = section(study)
    shown = [c for c in citations if c.peftlab in {"lora", "adalora"}]
    assert len(re.findall(r"^\| cited: ", text, flags=re.MULTILINE)) == len(shown) < len(citations)
    assert {c.peftlab for c in shown} <= {"lora", "adalora"}
    assert f"- not shown: {len(citations) - len(shown)} further rows of configs/literature.yaml (" in text


def macros(out) -> dict[str, str]:
    return dict(
        re.findall(r"^\\newcommand\{\\(\w+)\}\{(.*)\}  % ", (out / "results.tex").read_text(), flags=re.MULTILINE)
    )


def test_paper_of_a_zoo_study_ranks_its_cited_methods_and_lists_its_own(tmp_path):
    """On CIFAR-100, which V-PETL Bench's CIFAR-100 (VTAB-1k) rows were measured on (tests/analysis/
    test_literature_rows.py: the rows of a setting are shown only beside its dataset)."""
    out = tmp_path / "paper"
    study = set_data(write_study_dir(tmp_path / "zoo", with_failure=False, variants=ZOO_STUDY), name="cifar100")
    main = paper.write_paper(study, out, compile=False).read_text()
    table = (out / "tables" / "literature.tex").read_text()
    ours = table[table.index(r"\emph{This study (measured)}") :]
    # every configuration run, cited or not (houlsby and difffit have no cited row), by mean test top-1
    assert re.findall(r"^(\w+) & ", ours, flags=re.MULTILINE) == [
        "full",
        "houlsby",
        "ssf",
        "difffit",
        "vpt",
        "pfeiffer",
    ]
    assert "VPT-Shallow (vpt) & 0.08M & 77.7" in table and "AdaptFormer (adaptformer) & 0.16M & 70.8" in table
    defined = macros(out)
    assert defined["litOrderVpetlCifar"] == "VPT-Deep, VPT-Shallow, Adapter, SSF and Full fine-tuning"
    assert defined["ourOrder"] == "full, ssf, vpt and pfeiffer"
    assert main.count("Of the methods this study ran, the order is") == 1  # V-PETL's CIFAR-100 (not its VTAB mean)
    assert r"In this study the order by mean is \ourOrder{}." in main


def test_paper_of_a_study_without_cited_methods_says_so(tmp_path):
    out = tmp_path / "paper"
    study = write_study_dir(tmp_path / "none", with_failure=False, variants=["houlsby", "difffit"])
    main = paper.write_paper(set_data(study, name="cifar100"), out, compile=False).read_text()
    table = (out / "tables" / "literature.tex").read_text()
    ours = table[table.index(r"\emph{This study (measured)}") :]
    assert "houlsby & 9.8K & 73.4" in ours and "difffit & 7.1K & 71.5" in ours
    assert "Of the methods this study ran" not in main and "No method of this study is among the cited ones." in main
    assert macros(out)["litOrderVpetlCifar"] == "n/a"


def test_cited_methods_are_the_peftlab_names_of_the_cited_rows(citations):
    assert cited_methods(citations) >= set(VPETL_METHODS.values())
    assert not {"houlsby", "difffit", "ln"} & cited_methods(citations)


def test_an_image_study_s_paper_cites_rows_of_its_modality_and_lists_every_method_it_ran(tmp_path):
    """No MMLU, MNLI or GLUE rows in an image study's literature table (the file's text and LLM settings), unless
    asked for all; its "This study" block holds every configuration, those no cited row names included."""
    study = write_study_dir(tmp_path / "image", with_failure=False, variants=["full", "lora r=8", "houlsby"])
    set_data(study, name="cifar100")
    out = tmp_path / "paper"
    paper.write_paper(study, out, only="tables")
    table = (out / "tables" / "literature.tex").read_text()
    for text_row in ("MMLU", "MNLI", "GLUE", "RoBERTa", "LLaMA"):
        assert text_row not in table, text_row
    assert "CIFAR-100 (VTAB-1k)" in table and "VTAB-1k, mean of 19 tasks" not in table  # one task, not all 19
    ours = table[table.index(r"\emph{This study (measured)}") :]
    assert re.findall(r"^(.+?) & ", ours, flags=re.MULTILINE) == ["full", "houlsby", "lora r=8"]
    paper.write_paper(study, tmp_path / "all", only="tables", all_literature=True)
    assert "MMLU" in (tmp_path / "all" / "tables" / "literature.tex").read_text()
    report = "\n".join(literature_section(load_results(study), metric="metrics.test_top1", modality="vision"))
    assert "GLUE" not in report and "CIFAR-100" in report


def test_a_literature_setting_names_its_modality_from_a_known_list(tmp_path):
    path = tmp_path / "literature.yaml"
    path.write_text(LITERATURE_FILE.replace("checked: here}", "checked: here, modality: audio}", 1))
    with pytest.raises(UserError, match=r"settings.glue_mrpc.modality='audio': expected one of vision, text"):
        load_literature(path)


@pytest.mark.parametrize(
    "field, text",
    [
        ("settings.glue_mrpc.model", "RoBERTa\\u202e-base"),  # a bidirectional override
        ("settings.glue_mrpc.model", "RoBERTa\\x1b[2J"),  # an escape sequence
        ("settings.glue_mrpc.model", "RoBERTa\\nbase"),  # a newline: a line of its own in report.md
        ("settings.glue_mrpc.model", "x" * 301),
        ("entries[0].method", "Fine\\x07tune"),
        ("entries[0].trainable", "[1, 2]"),
    ],
)
def test_a_literature_file_s_texts_are_checked_as_any_received_text(tmp_path, field, text):
    """The --literature file's texts reach report.md, the paper and the terminal: each is one line of printable
    text of at most 300 characters, else one line naming the field (issue 78, round 7's leftover)."""
    import yaml

    data = yaml.safe_load(LITERATURE_FILE)
    where, _, key = field.rpartition(".")
    owner = data["settings"]["glue_mrpc"] if where.startswith("settings") else data["entries"][0]
    owner[key] = yaml.safe_load(text) if text.startswith("[") else text.encode().decode("unicode_escape")
    path = tmp_path / "literature.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(UserError, match=re.escape(field)) as err:
        load_literature(path)
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value) and "\u202e" not in str(err.value)
