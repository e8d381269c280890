"""Issue 73, item 5: the sentences a reviewer reads. Methods' sentence shapes rendered over the fixtures'
variations (one configuration, several sharing their targets, several with their own), AdaLoRA's count said as
after pruning with its schedule, and a plugin's BibTeX marked as supplied by the plugin and not checked."""

import json
import re

import pandas as pd
from ablationfiles import write_crossed_study
from studyfiles import write_study_dir
from test_paper import macros

from peftlab.analysis.paper import build as paper
from peftlab.analysis.paper.methods import plugin_bibtex

FIGURES_DRAWN = ()  # text and files read, no figure drawn (conftest.py)


def methods_text(study, out) -> str:
    paper.write_paper(study, out, compile=False)
    return macros((out / "results.tex").read_text())["methodsText"]


def test_every_methods_sentence_has_a_subject_and_a_verb(tmp_path):
    one = write_study_dir(tmp_path / "one", with_failure=False, variants=["full", "lora r=8"])
    texts = {
        "one LoRA": methods_text(one, tmp_path / "p1"),
        "two alike": methods_text(write_study_dir(tmp_path / "two", with_failure=False), tmp_path / "p2"),
        "crossed": methods_text(write_crossed_study(tmp_path / "crossed"), tmp_path / "p3"),
    }
    for name, text in texts.items():
        assert "applied $A$" not in text and "applied ," not in text, name  # "are applied A starting ..."
        assert not re.search(r"(^|\. )lora r=\d+ on ", text), name  # "lora r=4 on the attention's ...": no verb
        assert ", ," not in text and "  " not in text.strip(), name
    assert (
        "Here it has rank 8 and $\\alpha$ = 16 and is applied on the attention's q and v projections of every block, "
        "with $A$ starting Kaiming-uniform and $B$ at zero." in texts["one LoRA"]
    )
    assert (
        "All its configurations are applied on the attention's q and v projections of every block, with $A$ "
        "starting Kaiming-uniform and $B$ at zero; they have rank 4 (lora r=4) or rank 8 (lora r=8) and $\\alpha$ = 16."
        in texts["two alike"]
    )  # what all its configurations share, said once (issue 82)
    assert "All its configurations have $A$ starting Kaiming-uniform and $B$ at zero;" in texts["crossed"]
    assert (
        "lora r=4 and lora r=8 are applied on the attention's q and v projections of every block; lora r=4 "
        "targets=all-linear and lora r=8 targets=all-linear are applied on the attention's q, k and v projections"
        in texts["crossed"]
    )


def test_adalora_is_said_with_its_schedule_and_its_count_after_pruning(tmp_path):
    study = write_study_dir(tmp_path / "s", with_failure=False, variants=["full", "lora r=8"])
    for path in study.glob("runs/lorar8-*/spec.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "variant": "adalora", "method": "adalora"}))
    for path in study.glob("runs/lorar8-*/result.json"):
        result = json.loads(path.read_text())
        result["config"]["method"] = {"name": "adalora", "init_r": 12, "target_r": 8, "tinit": 0.2, "tfinal": 0.3}
        result["ranks"] = {
            "strategy": "adalora",
            "sum": 64,
            "budget": 64,
            "schedule": {"tinit": 25, "tfinal": 37, "deltaT": 1, "total_step": 125, "fitted": None},
        }
        path.write_text(json.dumps(result))
    text = methods_text(study, tmp_path / "p")
    assert (
        "Its budget stays at the initial rank for the first 25 of its 125 optimizer steps ($t_i$), falls to the "
        "final budget over the steps after and is held there for the last 37 ($t_f$). The trainable parameters the "
        "tables give for AdaLoRA are counted after this pruning, at the end of training." in text
    )


def test_a_plugins_bibtex_is_marked_as_supplied_by_it_and_not_checked():
    entry = "@inproceedings{yosinski2014transferable,\n  title = {How transferable are features?},\n  year = {2014}\n}"
    done = pd.DataFrame(
        {
            "status": ["completed"],
            "run_id": ["lb-s0"],
            "method": ["last_blocks"],
            "provenance.plugin": ["peftlab-lastblocks 0.2 (code SHA-256 abababababab)"],
            "provenance.plugin_bibtex": [entry],
        }
    )
    added = plugin_bibtex(done, "@misc{other, title={x}}\n")
    assert added.startswith(
        "\n% Supplied by the plugin peftlab-lastblocks 0.2 (its runs' result.json): not checked by peftlab\n"
        "@inproceedings{yosinski2014transferable,"
    )


def test_a_difference_larger_than_its_mde_yet_not_significant_is_said(tmp_path):
    # the crossed study, against full: lora r=4 -6.9 points (MDE 6.5) at Holm-corrected p = 0.053 over the main
    # table's three configurations; r=4 on all linears (-5.1, MDE 4.2), Holm over the ablation's two, differs
    main = paper.write_paper(write_crossed_study(tmp_path / "s"), tmp_path / "p", compile=False).read_text()
    assert (
        r"Not significant, although at least as large as the MDE of its comparison: \nameLoraRFour{} (difference "
        r"\diffLoraRFour{}, MDE \mdeLoraRFour{} points)." in main
    )
