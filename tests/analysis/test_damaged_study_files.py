"""A study folder's own files (selection.json, phases.jsonl, spec.json, command.json) read as their writers'
schemas (``study.records``, ``study.phases.PhaseRecord``): an edited or damaged one is one line (exit 2) naming the
file and the field, never a traceback, and ``peftlab report`` still writes report.md where the damage leaves the
rest readable (a damaged spec.json leaves no runs table; the paper is never written with a part left out).

The study is studyfiles' (run files written by hand, no training), tuned as test_paper's, with its phases and
its command; each case edits one file of a copy.
"""

import json
import shutil

import pytest
from studyfiles import write_study_dir
from test_paper import SELECTIONS
from testkit import command_in_process

pytestmark = pytest.mark.usefixtures("quick_figures")  # figures written in cheap encodings (conftest.py)

PHASE = {
    "phase": "final runs",
    "started": "2026-11-26T10:00:00+00:00",
    "wall_seconds": 100.0,
    "workers": 2,
    "executor": "local",
    "runs": 6,
    "train_eval_seconds": 150.0,
    "run_seconds": 180.0,
    "complete": True,
}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """Two configurations (full fine-tuning, LoRA r=4) over three seeds, each tuned (its final runs say by which
    trial), with the searches of test_paper, the phases of one call and the command that ran it."""
    study = write_study_dir(
        tmp_path_factory.mktemp("damaged") / "study", with_failure=False, variants=["full", "lora r=4"]
    )
    for path in study.glob("runs/*/spec.json"):
        spec = json.loads(path.read_text())
        search = next(s for s in SELECTIONS if s["search"]["method"] == spec["method"])
        path.write_text(json.dumps({**spec, "groups": ["main"], "tuned_by": search["chosen"]}))
    for record in SELECTIONS:
        directory = study / "tune" / record["search"]["method"]
        directory.mkdir(parents=True)
        (directory / "selection.json").write_text(json.dumps(record, indent=2))
    (study / "phases.jsonl").write_text(json.dumps(PHASE) + "\n")
    (study / "command.json").write_text(json.dumps({"argv": ["peftlab", "study", "s.yaml"], "cwd": "/tmp"}))
    return study


def edit(name, change):
    """A damage: ``change`` applied to the JSON of the study file ``name`` (of every run, for spec.json)."""

    def damage(study):
        for path in sorted(study.glob(name)):
            data = json.loads(path.read_text())
            change(data)  # in place
            path.write_text(json.dumps(data))

    return damage


def lora(change):
    return edit("tune/lora/selection.json", change)


def phases(**fields):
    return lambda study: (study / "phases.jsonl").write_text(json.dumps({**PHASE, **fields}) + "\n")


SELECTION = "tune/lora/selection.json"
# case -> (the file damaged, the damage, what the line says of the field, whether report.md is still written)
CASES = {
    "chosen a string": (SELECTION, lora(lambda d: d.update(chosen="trial 2")), "chosen is 'trial 2'", True),
    "chosen.params a list": (SELECTION, lora(lambda d: d["chosen"].update(params=[1, 2])), "chosen.params is", True),
    "chosen.params nested": (
        SELECTION,
        lora(lambda d: d["chosen"].update(params={"train.lr": {"a": 1}})),
        "chosen.params['train.lr'] is {'a': 1}",
        True,
    ),
    "chosen.params without an axis": (
        SELECTION,
        lora(lambda d: d["chosen"].update(params={"train.lr": 0.004})),
        "chosen.params has no value of the axis method.r",
        True,
    ),
    "axes a string": (SELECTION, lora(lambda d: d["search"].update(axes="train.lr")), "search.axes is", True),
    "an axis without values": (
        "tune/full/selection.json",
        edit("tune/full/selection.json", lambda d: d["search"]["axes"][0].update(values=[])),
        "search.axes[0].values is []",
        True,
    ),
    "search.method missing": (SELECTION, lora(lambda d: d["search"].pop("method")), "search.method is missing", True),
    "search.metric an int": (SELECTION, lora(lambda d: d["search"].update(metric=3)), "search.metric is 3", True),
    "a trial without state": (
        SELECTION,
        lora(lambda d: d["trials"][0].pop("state")),
        "trials[0].state is missing",
        True,
    ),
    "a trial not an object": (SELECTION, lora(lambda d: d["trials"].__setitem__(1, 5)), "trials[1] is 5", True),
    "a trial value a string": (
        SELECTION,
        lora(lambda d: d["trials"][0].update(value="0.66")),
        "trials[0].value is '0.66'",
        True,
    ),
    "a range bound a string": (
        SELECTION,
        lora(lambda d: d["search"]["axes"][0].update(low="1e-4")),
        "search.axes[0].low is '1e-4'",
        True,
    ),
    "seeds a string": (SELECTION, lora(lambda d: d["search"].update(seeds="1000")), "search.seeds is '1000'", True),
    "not a JSON object": (SELECTION, lambda study: (study / SELECTION).write_text("[1, 2]"), "a JSON object", True),
    "phases with string fields": (
        "phases.jsonl",
        phases(wall_seconds="100", runs="6"),
        "line 1: wall_seconds is '100'",
        True,
    ),
    "phases of an unknown phase": ("phases.jsonl", phases(phase="warmup"), "line 1: phase is 'warmup'", True),
    "tuned_by a string": (
        "runs/full-s0/spec.json",
        edit("runs/*/spec.json", lambda d: d.update(tuned_by="t")),
        "tuned_by is 't'",
        False,
    ),
    "tuned_by.params a list": (
        "runs/full-s0/spec.json",
        edit("runs/*/spec.json", lambda d: d["tuned_by"].update(params=[1])),
        "tuned_by.params is [1]",
        False,
    ),
    "command argv a string": (
        "command.json",
        edit("command.json", lambda d: d.update(argv="peftlab study s.yaml")),
        "argv is 'peftlab study s.yaml'",
        True,
    ),
}
READERS = {  # the files each command reads
    "report": ("tune/", "phases.jsonl", "runs/"),
    "paper": ("tune/", "command.json", "runs/", "phases.jsonl"),  # the paper's run time sums every phase
}


peftlab = command_in_process  # (exit status, stderr) of ``peftlab ARGS`` in this process


def test_the_undamaged_study_gets_its_report_and_paper(tuned, tmp_path):
    study = shutil.copytree(tuned, tmp_path / "study")
    assert peftlab("report", str(study)) == (0, "")
    assert peftlab("paper", str(study), "--no-compile", "--out", str(tmp_path / "paper")) == (0, "")
    report = (study / "report" / "report.md").read_text()
    assert "## Tuning" in report and "- phases, as 1 call of `peftlab study`" in report


@pytest.mark.usefixtures("unrendered_figures")
@pytest.mark.parametrize("case", CASES)
def test_a_damaged_study_file_is_one_line_naming_it_and_the_report_is_still_written(tuned, tmp_path, case):
    name, damage, field, written = CASES[case]
    study = shutil.copytree(tuned, tmp_path / "study")
    damage(study)
    for command, reads in READERS.items():
        out = ("--no-compile", "--out", str(tmp_path / "paper")) if command == "paper" else ()
        status, stderr = peftlab(command, str(study), *out)
        if not name.startswith(reads):
            assert (status, stderr) == (0, ""), (command, stderr)
            continue
        assert status == 2 and stderr.count("\n") == 1 and stderr.startswith("peftlab: error: "), (command, stderr)
        assert f"{study / name} is " in stderr and field in stderr and "Traceback" not in stderr, (command, stderr)
    assert (study / "report" / "report.md").is_file() == written
    if written and name != "command.json":  # the report says what it left out, and why
        assert f"{study / name} is damaged: " in (study / "report" / "report.md").read_text()
    assert not (tmp_path / "paper" / "main.tex").exists() or not name.startswith(READERS["paper"])
