"""The paper says exactly what was done (issue 63): the Methods paragraph from each configuration's recorded config,
a plugin's method in its own words, related work and captions of what ran, datasets by their names, orders that
name what they leave out and report ties. Source only (compile=False): seconds."""

import json
import re

import pytest
import yaml
from studyfiles import set_data, write_study_dir

from peftlab.analysis.paper import build as paper
from peftlab.study.report_options import report_options

FIGURES_DRAWN = ()  # text and files read, no figure drawn (conftest.py)


def macros(results: str) -> dict[str, str]:
    return dict(re.findall(r"\\newcommand\{\\(\w+)\}\{(.*)\}  %", results))


def write_paper(study, out):
    main = paper.write_paper(study, out, compile=False).read_text()
    return main, macros((out / "results.tex").read_text()), (out / "references.bib").read_text()


def edit_results(study, pattern: str, change) -> None:
    for path in study.glob(f"runs/{pattern}/result.json"):
        result = json.loads(path.read_text())
        change(result)
        path.write_text(json.dumps(result))


def add_rank_ablation(study) -> None:
    """lora r=8 (main), and a rank ablation at r = 2 and 16 with alpha = 2r: the main r = 8 is not on it."""
    edit_results(study, "lorar8-*", lambda r: r["config"]["method"].update(lora_alpha=16.0))
    for rank, scores in ((2, (0.66, 0.65, 0.67)), (16, (0.69, 0.68, 0.70))):
        for seed, top1 in enumerate(scores):
            source = json.loads(next(study.glob("runs/lorar8-s0/result.json")).read_text())
            source["config"]["method"].update(r=rank, lora_alpha=float(2 * rank))
            source["config"]["seed"] = seed
            source["metrics"] = {**source["metrics"], "test_top1": top1}
            _write(study / "runs" / f"abl{rank}-s{seed}", f"abl{rank}-s{seed}", rank, seed, source)


def _write(run_dir, run_id, rank, seed, result):
    run_dir.mkdir(parents=True)
    spec = {"run_id": run_id, "variant": f"lora r={rank}", "method": "lora", "seed": seed, "groups": ["rank"]}
    (run_dir / "spec.json").write_text(json.dumps({**spec, "axes": {"method.r": rank}, "order": 90 + rank + seed}))
    (run_dir / "result.json").write_text(json.dumps(result))


def test_the_methods_paragraph_gives_each_configuration_its_own_options_and_what_an_ablation_varies(tmp_path):
    study = write_study_dir(tmp_path / "s", with_failure=False, variants=["linear", "lora r=8"])
    for path in study.glob("runs/lorar8-*/spec.json"):  # the main LoRA: its group is the main one
        path.write_text(json.dumps({**json.loads(path.read_text()), "groups": ["main"], "axes": {}}))
    add_rank_ablation(study)
    main, defined, _ = write_paper(study, tmp_path / "p")
    text = defined["methodsText"]
    assert r"\paragraph{Methods.} \methodsText{}" in main  # its numbers are the runs' options: in results.tex
    assert "on the query and value projections" not in text  # the fixed table's words, whatever the targets
    assert "applied on the attention's q and v projections of every block, with $A$ starting Kaiming-uniform" in text
    # each option said once for the method (issue 82): the values each configuration has of those that differ
    assert (
        r"they have rank 8 and $\alpha$ = 16 (lora r=8) or rank 2 and $\alpha$ = 4 (lora r=2) or rank 16 and "
        r"$\alpha$ = 32 (lora r=16)" in text
    )
    assert r"varies the rank $r$ over 2 and 16 and sets $\alpha = 2r$ with it" in text
    assert r"it leaves out $r$ = 8, the main configuration's (lora r=8)" in text
    assert "The linear probe trains only the classifier head" in text and "QLoRA" not in text
    # other targets are said as they are, never the preset's words
    edit_results(study, "lorar8-*", lambda r: r["config"]["method"].update(target_modules="all-linear"))
    text = write_paper(study, tmp_path / "q")[1]["methodsText"]
    assert (
        "lora r=8 is applied on the attention's q, k and v projections, the attention's output projection and " in text
    )


PLUGIN = {
    "distribution": "peftlab-lastblocks",
    "version": "0.2",
    "code_sha256": "ab" * 32,
    "description": "Last-blocks tuning trains every parameter of the last block and the head (50% of it).",
    "bibtex": "@inproceedings{yosinski2014transferable,\n  title = {How transferable are features?},\n"
    "  author = {Yosinski, Jason},\n  year = {2014}\n}",
}


def test_a_plugin_s_method_is_said_in_its_own_words_and_cited_by_its_own_entry(tmp_path):
    study = write_study_dir(tmp_path / "s", with_failure=False, variants=["full", "lora r=8"])
    for path in study.glob("runs/lorar8-*/spec.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "variant": "last_blocks", "method": "last_blocks"}))

    def plugin(result):
        result["config"]["method"] = {"name": "last_blocks", "blocks": 1}
        result["provenance"]["plugin"] = PLUGIN

    edit_results(study, "lorar8-*", plugin)
    (study / "study.yaml").write_text(yaml.safe_dump({"name": "s", "report": {"labels": {"last_blocks": "Last"}}}))
    main, defined, bib = write_paper(study, tmp_path / "p")
    assert (
        r"Last-blocks tuning trains every parameter of the last block and the head (50\% of it) "
        r"\citep{yosinski2014transferable} (Last in the tables)."
    ) in defined["methodsText"]
    assert "@inproceedings{yosinski2014transferable," in bib and bib.count("yosinski2014transferable") == 1
    # a plugin that gives no words: its label, its plugin and the options its configurations set
    edit_results(study, "lorar8-*", lambda r: r["provenance"]["plugin"].update(description=None, bibtex=None))
    main, defined, bib = write_paper(study, tmp_path / "q")
    assert (
        r"Last is the method \texttt{last\_blocks} (plugin peftlab-lastblocks 0.2), with \texttt{method.blocks} = 1."
        in defined["methodsText"]
    )
    assert "yosinski" not in bib


def test_related_work_and_the_introduction_say_only_what_fits_what_ran(tmp_path):
    study = write_study_dir(tmp_path / "s", with_failure=False, variants=["full", "linear"])
    edit_results(study, "*", lambda r: r["config"]["model"].update(pretrained="none"))  # a random base
    main, defined, _ = write_paper(study, tmp_path / "p")
    related = main[main.index(r"\section{Related work}") : main.index(r"\section{Setup}")]
    for name in ("QLoRA", "QA-LoRA", "AdaLoRA", "bitsandbytes", "LoRA trains"):
        assert name not in related, name
    assert "compared on the VTAB benchmark" in related
    intro = main[main.index(r"\section{Introduction}") : main.index(r"\section{Related work}")]
    abstract = main[main.index(r"\begin{abstract}") : main.index(r"\end{abstract}")]
    assert "adapts a pretrained model" not in intro and "randomly initialised backbone" in intro
    assert r"training \cfgModelText{}, randomly initialised, on \cfgDataText{}" in abstract
    assert "adapting" not in abstract and "every method adapts" not in main
    # a study that ran LoRA on a quantized base: LoRA, QLoRA and bitsandbytes, still no AdaLoRA nor QA-LoRA
    study = write_study_dir(tmp_path / "q", with_failure=False, variants=["lora r=8"])
    edit_results(study, "*", lambda r: r["config"].setdefault("quant", {}).update(mode="nf4"))
    main = write_paper(study, tmp_path / "qp")[0]
    related = main[main.index(r"\section{Related work}") : main.index(r"\section{Setup}")]
    assert "LoRA trains" in related and "QLoRA" in related and "bitsandbytes" in related
    assert "AdaLoRA" not in related and "QA-LoRA" not in related


def test_the_setup_names_the_backbone_and_an_image_folder_s_dataset_as_the_study_does(tmp_path):
    study = write_study_dir(tmp_path / "s", with_failure=False, variants=["full", "linear"])

    def folder(result):
        result["config"]["data"].update(name="imagefolder", root="/data/hues")
        result["provenance"]["data"]["num_classes"] = 4

    edit_results(study, "*", folder)
    main, defined, _ = write_paper(study, tmp_path / "p")
    assert defined["cfgDataText"] == r"the image folder \texttt{hues}" and "(4 classes)" in defined["cfgDataSetup"]
    entry = "@misc{smith2026hues,\n  title = {Hues},\n  author = {Smith, Ann},\n  year = {2026}\n}"
    datasets = {"hues": {"name": "Hues", "classes": 4, "chance": 0.25, "cite": "smith2026hues", "bibtex": entry}}
    (study / "study.yaml").write_text(yaml.safe_dump({"name": "s", "report": {"datasets": datasets}}))
    main, defined, bib = write_paper(study, tmp_path / "q")
    assert defined["cfgDataText"] == "Hues"
    assert defined["cfgDataSetup"] == r"Hues \citep{smith2026hues} (4 classes, chance level 25\%)"
    assert "@misc{smith2026hues," in bib
    setup = main[main.index(r"\section{Setup}") : main.index(r"\paragraph{Methods.}")]
    assert r"\cfgDataSetup{}" in setup and r"\texttt{\cfgModel{}}" not in setup and r"\cfgData{}" not in setup
    # an image folder is no dataset any published row was measured on: no literature table beside it
    assert not (tmp_path / "q" / "tables" / "literature.tex").exists() and "tab:literature" not in main


def test_a_study_s_dataset_entry_is_checked():
    from peftlab.utils.errors import ConfigError

    good = report_options({"datasets": {"hues": {"name": "Hues", "classes": 4}}}).datasets["hues"]
    assert good == {"name": "Hues", "classes": 4, "chance": 0.25, "cite": None, "bibtex": None}
    for entry, message in (
        ({"classes": 4}, r"datasets\['hues'\].name=None is invalid"),
        ({"name": "Hues", "chance": 2}, r"chance=2 is invalid: expected a share in \(0, 1\)"),
        ({"name": "Hues", "cite": "a", "bibtex": "@misc{b, title={x}}"}, "whose key is cite"),
        ({"name": "Hues", "colour": "red"}, "unknown key 'colour'"),
    ):
        with pytest.raises(ConfigError, match=message):
            report_options({"datasets": {"hues": entry}})


def test_the_order_names_what_it_leaves_out_and_reports_ties_as_ties(tmp_path):
    study = write_study_dir(tmp_path / "s", with_failure=False, variants=["full", "linear", "lora r=8"])
    set_data(study, name="cifar100")  # the dataset of V-PETL Bench's CIFAR-100 rows: the order beside them
    for path in study.glob("runs/lorar8-*/spec.json"):  # DoRA: no cited setting has a row of it
        path.write_text(json.dumps({**json.loads(path.read_text()), "variant": "dora", "method": "dora"}))
    edit_results(study, "lorar8-*", lambda r: r["config"]["method"].update(name="dora"))
    main, defined, _ = write_paper(study, tmp_path / "p")
    assert defined["ourOrder"] == "full and linear"
    assert defined["ourOrderLeftOut"].startswith("dora is left out of it: no cited setting has a published row")
    assert r"\ourOrder{}. \ourOrderLeftOut{}." in main
    # the probe scores exactly what full fine-tuning does on every seed: a tie, neither before the other
    for seed in range(3):
        top1 = json.loads((study / "runs" / f"full-s{seed}" / "result.json").read_text())["metrics"]["test_top1"]
        edit_results(study, f"linear-s{seed}", lambda r, top1=top1: r["metrics"].update(test_top1=top1))
    main, defined, _ = write_paper(study, tmp_path / "q")
    assert defined["ourOrder"] == "full and linear, tied"
    assert defined["bestName"] == "full and linear" and "bestTied" in defined
    assert r"The highest mean is that of \bestNamed{}; \bestTies{}." in main  # each with its own mean


def test_reproduce_md_names_the_plugin_packages_the_runs_need():
    import pandas as pd

    from peftlab.analysis.archive.reproduce_md import plugin_lines

    done = pd.DataFrame(
        {
            "method": ["lora", "last_blocks", "last_blocks"],
            "provenance.plugin": [None, "peftlab-lastblocks 0.2 (code SHA-256 abababababab)"] + [None],
        }
    )
    lines = plugin_lines(done)
    assert (
        lines[0] == "## Plugin methods"
        and "- `last_blocks`: peftlab-lastblocks 0.2 (code SHA-256 abababababab)" in lines
    )
    assert plugin_lines(done[done["method"] == "lora"]) == []
