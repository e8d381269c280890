"""Each macro of results.tex declares its source where the paper makes it (paper/macro_text.py), and a received
paper's macros are regenerated from the runs exactly where their source is packed (issue 79): a forged
``\\cfgDataSetup`` is caught, a study's phases, commands and tuning (which an archive does not pack) are named as
not regenerated. A text task's words come from the runs' records, not from a folder read at paper time."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from studyfiles import write_study_dir

from peftlab.analysis.archive.regenerate import paper_outputs, regenerate, study_folder
from peftlab.analysis.paper.macro_text import COMMANDS, PHASE_LOG, RUNS, made_from, source_of
from peftlab.analysis.paper.macros import Numbers
from peftlab.analysis.paper.names import text_task
from peftlab.analysis.paper.study import pretraining_manifest
from peftlab.analysis.results.load import load_results


def test_a_macro_is_held_to_its_familys_source():
    numbers = Numbers()
    numbers.add("studyRuns", "4", "runs")
    with pytest.raises(ValueError, match=r"studyWallMinutes is made from runs, its family from phases"):
        numbers.add("studyWallMinutes", "1.0", "a phases macro among the runs'")

    @made_from(COMMANDS)
    def define(numbers):
        numbers.add("studyCommand", "peftlab study", "commands")
        numbers.add("cfgLr", "0.001", "a runs macro among the commands'")

    with pytest.raises(ValueError, match=r"cfgLr is made from commands, its family from runs"):
        define(numbers)
    assert "studyCommand" in numbers.macros and numbers.made_from == RUNS  # the source restored after the family
    assert (source_of("studyWorkers"), source_of("cfgDataSetup"), source_of("tuneKeys")) == (PHASE_LOG, RUNS, "tuning")


def received(tmp_path):
    """An archive's folder of a study's runs, its study file and the results.tex its runs give."""
    study = write_study_dir(tmp_path / "study", with_failure=False, variants=["full", "linear"])
    root = tmp_path / "archive"
    shutil.copytree(study / "runs", root / "results" / "runs")
    (root / "configs").mkdir()
    (root / "configs" / "study.yaml").write_text("name: forged\n")
    record = {"study": "configs/study.yaml", "name": "forged"}
    made = paper_outputs(root, study_folder(root, record, tmp_path / "made"), tmp_path / "paper").macros
    (root / "paper").mkdir()
    (root / "paper" / "results.tex").write_text("\n".join(made.values()) + "\n")
    return root, record


def macro_lines(differ: list[str]) -> list[str]:
    return [line for line in differ if line.startswith("paper/results.tex")]


def test_a_forged_data_setup_is_caught_and_unpacked_sources_are_named_not_compared(tmp_path):
    root, record = received(tmp_path)
    clean = regenerate(root, record)
    assert macro_lines(clean.differ) == []
    skipped = [line for line in clean.skipped if " macros of paper/results.tex (" in line]
    assert "studyWallMinutes" in skipped[0] and "cfgDataSetup" not in skipped[0]
    tex = root / "paper" / "results.tex"
    lines = tex.read_text().splitlines()
    forged = [
        r"\newcommand{\cfgDataSetup}{ImageNet (1000 classes)}  % forged" if "{\\cfgDataSetup}" in line else line
        for line in lines
    ]
    forged.append(r"\newcommand{\studyElapsedMinutes}{12.0}  % phases.jsonl, which the archive does not pack")
    tex.write_text("\n".join(forged) + "\n")
    (line,) = macro_lines(regenerate(root, record).differ)
    assert line.startswith(r"paper/results.tex is not what the runs give: \cfgDataSetup ImageNet (1000 classes)")
    tex.write_text("\n".join(lines + [r"\newcommand{\cfgSecret}{x}"]) + "\n")
    assert macro_lines(regenerate(root, record).differ) == [
        r"paper/results.tex is not what the runs give: \cfgSecret not from the runs"
    ]


def test_the_bases_macros_are_named_not_packed_and_never_read_from_the_receivers_folders(tmp_path):
    """An archive leaves base/ to the receiver: \\baseTopOne and its family come from the base's manifest, which
    no archive packs. On 2026-11-28 the default study's archive was "not intact" from a folder away from the
    author's checkout and intact beside it: the manifest was looked for where the runs' config points (the current
    folder, peftlab's checkout), outside the archive."""
    root, record = received(tmp_path)
    tex = root / "paper" / "results.tex"
    tex.write_text(tex.read_text() + "\\newcommand{\\baseData}{MNIST}\n\\newcommand{\\baseTopOne}{96.04}\n")
    assert source_of("baseTopOne") == source_of("baseTrainMinutes") == "base manifest"
    assert source_of("baselineName") == RUNS  # the baseline configuration's macros stay the runs'
    done = load_results(root / "results")
    assert pretraining_manifest(done)["test_top1"] == 0.9576  # the fixture's manifest, outside the archive
    assert pretraining_manifest(done, root / "base") is None  # the archive's base/, empty: nothing read outside
    out = regenerate(root, record)
    assert macro_lines(out.differ) == []
    (skipped,) = [line for line in out.skipped if " macros of paper/results.tex (" in line]
    assert "baseData" in skipped and "baseTopOne" in skipped


def test_a_text_task_is_said_from_the_runs_records(tmp_path):
    study = write_study_dir(tmp_path / "study", with_failure=False, variants=["full"])
    for path in study.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        result["provenance"]["data"]["task"] = {"what": "fortunes-task", "categories": ["alpha", "be_ta"]}
        path.write_text(json.dumps(result))
    runs = load_results(study)
    assert set(runs["data.task"]) == {"fortunes-task"} and set(runs["data.task_categories"]) == {'["alpha", "be_ta"]'}
    assert (
        text_task(runs) == r"the task: which of the categories alpha and be\_ta a quote of Debian's fortunes comes from"
    )
    assert text_task(pd.DataFrame({"variant": ["full"]})) == ""  # no record: the words are left out
    two = pd.DataFrame({"data.task": ["fortunes-task"] * 2, "data.task_categories": ['["a", "b"]', '["c", "d"]']})
    assert text_task(two) == ""  # several tasks: no one sentence says them
