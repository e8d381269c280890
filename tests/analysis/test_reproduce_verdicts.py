"""The parts of ``peftlab reproduce``'s verdicts that need no archive (issue 79): the drawn sample, the three
levels and their last line, the supplied files' record and check, the datasets by name. The end-to-end checks (a
supplied base, a tampered archive with every hash recomputed, the claims) are in test_reproduce_supplied.py."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from testkit import REPO

sys.path.insert(0, str(REPO / "tests" / "data"))
from datafiles import write_idx_dataset

from peftlab.analysis.archive.claims import Claims
from peftlab.analysis.archive.datasets import check_data, check_named_data, rerun_environment
from peftlab.analysis.archive.regenerate import frame_differences
from peftlab.analysis.archive.rerun import draw, sample_seed
from peftlab.analysis.archive.supplied import check_supplied, supplied_entries
from peftlab.analysis.archive.verdicts import Evidence, verdict_lines
from peftlab.utils.errors import UserError


def runs(configs: int = 3, seeds: int = 4) -> list[dict]:
    return [
        {"variant": f"c{c}", "seed": s, "order": c * seeds + s, "result": {"status": "completed"}}
        for c in range(configs)
        for s in range(seeds)
    ]


def test_the_default_sample_is_one_seed_of_each_configuration_drawn_from_the_receivers_seed():
    packed = runs()
    first = draw(packed, "one-seed", 7)
    assert sorted(run["variant"] for run in first) == ["c0", "c1", "c2"]
    assert draw(packed, "one-seed", 7) == first  # the same seed draws the same runs
    reordered = draw(list(reversed(packed)), "one-seed", 7)
    assert sorted(reordered, key=lambda r: r["order"]) == first  # the same runs whatever the files' order
    drawn = {run["seed"] for seed in range(40) for run in draw(packed, "one-seed", seed) if run["variant"] == "c1"}
    assert drawn == {0, 1, 2, 3}  # a forger cannot know which seed: each is drawn by some seed
    counted = draw(packed, "5", 7)
    assert counted[:3] == first and len(counted) == 5 and len({id(r) for r in counted}) == 5
    assert draw(packed, "all", 7) == packed and draw(packed, "0", 7) == []


@pytest.mark.parametrize("given", ["x", "-1", str(2**63), "1.5"])
def test_a_sample_seed_that_is_no_whole_number_is_one_line(given):
    with pytest.raises(UserError, match=r"--sample-seed .* is invalid"):
        sample_seed(given)


def test_a_sample_seed_given_is_kept_and_none_is_random():
    assert sample_seed("12") == 12 and sample_seed(None) != sample_seed(None)


def compared(n: int, rule: str = "exact") -> list[dict]:
    return [{"variant": f"c{i}", "seed": 0, "rule": rule, "agrees": True, "metrics": {}} for i in range(n)]


def test_a_check_that_reran_nothing_says_only_the_archive_is_intact():
    lines, level, agree = verdict_lines(Evidence(checked={"files": 3}, runs_total=4))
    assert (level, agree) == (1, True)
    assert lines[-1] == "archive intact: level 1 of 3 (archive intact; not said: runs reproduced, claims reproduced)"
    assert not any(line.startswith("reproduced") for line in lines)
    assert "runs reproduced: not checked" in lines[1] and "claims reproduced: not checked" in lines[2]


def test_each_level_needs_the_ones_below():
    evidence = Evidence(checked={"files": 3}, runs_total=2, compared=compared(2), sample="all")
    evidence.claims = Claims(held=["the best configuration (c0)"])
    lines, level, agree = verdict_lines(evidence)
    assert (level, agree) == (3, True) and lines[-1].startswith("claims reproduced: level 3 of 3")
    evidence.not_checked = ["data not checked (absent: data/x)"]
    lines, level, agree = verdict_lines(evidence)
    assert (level, agree) == (0, True) and lines[-1].startswith("no verdict: nothing checked differs, but data")
    evidence.not_checked, evidence.claims = [], Claims(differ=["the best configuration flips: c1 in the reruns"])
    lines, level, agree = verdict_lines(evidence)
    assert (level, agree) == (2, False) and lines[-1].startswith("not reproduced: 1 difference: the best")


def test_a_tuned_study_says_its_tuning_was_taken_as_recorded():
    evidence = Evidence(checked={"files": 3}, runs_total=2, compared=compared(1), sample="drawn", tuned=True)
    lines, _, _ = verdict_lines(evidence)
    assert "the tuning taken as recorded (--trials reruns its searches)" in lines[1]


def test_rerun_searches_say_how_many_choices_came_out_as_archived():
    said = dict(checked={"files": 3}, runs_total=2, compared=compared(1), sample="drawn", tuned=True)
    lines, _, _ = verdict_lines(Evidence(**said, trials=["full: train.lr 0.001", "lora: train.lr 0.01"]))
    assert lines[1].startswith("runs reproduced: yes") and "searches rerun, 2 of 2 choices as archived" in lines[1]
    moved = Evidence(**said, trials=["full: train.lr 0.001"], trial_differences=["tuning of lora: ..."])
    lines, _, _ = verdict_lines(moved)
    assert lines[1].startswith("runs reproduced: no") and "1 of 2 choices as archived" in lines[1]


def test_supplied_files_are_checked_by_their_recorded_hash(tmp_path):
    (tmp_path / "supplied").mkdir()
    (tmp_path / "supplied" / "base.safetensors").write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    entry = {"path": "supplied/base.safetensors", "sha256": good, "bytes": 7, "field": "model.pretrained"}
    found = check_supplied(tmp_path, {"supplied": [entry]})
    assert (found.differ, found.absent, found.checked) == ([], [], {"supplied/base.safetensors": good})
    wrong = check_supplied(tmp_path, {"supplied": [{**entry, "sha256": "0" * 64}]})
    assert wrong.differ[0].startswith(
        "supplied file supplied/base.safetensors (model.pretrained) is not the file the runs read: its SHA-256 is "
    )
    absent = check_supplied(tmp_path, {"supplied": [{**entry, "path": "supplied/other.bin"}]})
    assert absent.absent[0].startswith("supplied file supplied/other.bin (model.pretrained) is absent: put it in ")


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "files/x", "supplied", "supplied/../../x"])
def test_a_supplied_path_outside_supplied_is_one_line(tmp_path, path):
    with pytest.raises(UserError, match=r"supplied.path=.* is invalid: expected a path inside supplied/"):
        supplied_entries({"supplied": [{"path": path, "sha256": "0" * 64}]}, tmp_path / "archive.json")


def named_record(folder: Path) -> dict:
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}
    return {"data": [{"name": "fashion_mnist", "folder": None, "sha256": sha}]}


def test_a_dataset_by_name_is_checked_where_peftlab_finds_it_or_under_data(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "debian", n_train=10, n_test=5)
    monkeypatch.setenv("PEFTLAB_FASHION_MNIST_DIR", str(tmp_path / "debian"))
    monkeypatch.setenv("PEFTLAB_DATA_CACHE", str(tmp_path / "cache"))
    record = named_record(tmp_path / "debian")
    found = check_named_data(record, None)
    assert found.differ == [] and found.found == {"fashion_mnist": (tmp_path / "debian").resolve()}
    assert found.checked["fashion_mnist"] == record["data"][0]["sha256"]

    kept = tmp_path / "kept"
    write_idx_dataset(kept / "fashion_mnist", n_train=11, n_test=5)  # another copy: other bytes
    other = check_named_data(record, kept)
    assert other.found["fashion_mnist"] == (kept / "fashion_mnist").resolve() and other.kept == {"fashion_mnist"}
    assert other.differ and all("(by name): " in line and str(kept) in line for line in other.differ)
    env = rerun_environment(other, kept)
    assert env == {"PEFTLAB_FASHION_MNIST_DIR": str((kept / "fashion_mnist").resolve())}  # the reruns read it

    monkeypatch.setenv("PEFTLAB_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    absent = check_named_data(record, None)
    assert absent.absent and absent.absent[0].startswith("data fashion_mnist (by name) is absent: no fashion_mnist")
    assert "--data DIR" in absent.absent[0]


def test_a_fifo_under_data_is_named_as_a_fifo_not_called_missing(tmp_path, monkeypatch):
    """--data DIR/<name> that is a FIFO, or a FIFO in its place of a file the runs read: one line naming it and
    what was expected, never "missing" (or, for the folder, the copy found elsewhere checked instead)."""
    write_idx_dataset(tmp_path / "debian", n_train=10, n_test=5)
    monkeypatch.setenv("PEFTLAB_FASHION_MNIST_DIR", str(tmp_path / "debian"))
    record = named_record(tmp_path / "debian")
    kept = tmp_path / "kept"
    kept.mkdir()
    os.mkfifo(kept / "fashion_mnist")
    with pytest.raises(UserError, match=f"^--data folder {kept / 'fashion_mnist'} is a FIFO: expected a directory$"):
        check_named_data(record, kept)
    (kept / "fashion_mnist").unlink()
    write_idx_dataset(kept / "fashion_mnist", n_train=10, n_test=5)
    recorded = next(name for name in record["data"][0]["sha256"] if "images" in name)
    (kept / "fashion_mnist" / recorded).unlink()
    os.mkfifo(kept / "fashion_mnist" / recorded)
    fifo = kept / "fashion_mnist" / recorded
    with pytest.raises(
        UserError, match=f"^data fashion_mnist \\(by name\\): file {fifo} is a FIFO: expected a regular"
    ):
        check_named_data(record, kept)
    archive = {"data": [{"name": "imagefolder", "folder": "data/fashion_mnist", "sha256": {recorded: "0" * 64}}]}
    with pytest.raises(UserError, match=f"^dataset entry {fifo} is a FIFO: expected a regular file"):
        check_data(tmp_path / "archive", archive, kept)  # a dataset the archive packs, kept under --data


def test_a_cell_of_the_table_that_is_not_the_runs_is_named():
    made = pd.DataFrame({"run_id": ["a", "b"], "metrics.test_top1": [0.5, 0.25]})
    assert frame_differences(made.copy(), made) == []
    edited = made.copy()
    edited.loc[1, "metrics.test_top1"] = 0.99
    assert frame_differences(edited, made) == ["run b metrics.test_top1 0.99 (the runs give 0.25)"]
    assert frame_differences(made.iloc[:1], made) == ["run b missing"]


def test_a_dataset_by_name_without_a_layout_here_is_left_to_the_reruns_not_called_absent():
    found = check_named_data({"data": [{"name": "vtab1k/cifar", "folder": None, "sha256": {"x": "0" * 64}}]}, None)
    assert (found.absent, found.differ, found.rerun_checked) == ([], [], {"vtab1k/cifar"})
    assert found.by_reruns == [
        "data vtab1k/cifar (by name): checked only by the reruns, which record its files' SHA-256"
    ]


def test_a_recorded_command_from_a_folder_outside_names_no_folder_of_the_authors_machine(tmp_path):
    import json

    from peftlab.analysis.archive.reproduce_md import command_lines
    from peftlab.analysis.archive.submission import made_commands

    (tmp_path / "study").mkdir()
    record = {"argv": ["peftlab", "study", "s.yaml"], "cwd": "/srv/alice-private-project/work"}
    (tmp_path / "study" / "commands.jsonl").write_text(json.dumps(record) + "\n")
    (line,) = [line for line in command_lines(made_commands(tmp_path / "study")) if line.startswith("peftlab ")]
    assert (
        line == "peftlab study s.yaml  # from a folder of the machine of the runs, outside the checkout and the study"
    )


def test_superseded_runs_are_named_in_reproduce_md_with_their_time():
    from peftlab.analysis.archive.reproduce_md import superseded_lines

    assert superseded_lines({"superseded": []}) == []
    lines = superseded_lines({"superseded": [{"run": "old1", "seconds": 90.0}, {"run": "old2", "seconds": 30.0}]})
    assert lines[0] == "## Superseded runs"
    assert "2 runs of another version of the study" in lines[2] and "`old1`, `old2` (2.0 min of run time)" in lines[2]


def test_a_count_of_runs_in_other_digits_is_one_line():
    with pytest.raises(UserError, match=r"--runs '²' is invalid"):
        draw(runs(), "²", 7)


def test_trials_with_runs_0_is_one_line_before_anything_is_unpacked(tmp_path):
    """On 2026-11-28 ``--runs 0 --trials`` checked the archive and said nothing of the searches it never reran."""
    from peftlab.analysis.archive.reproduce import reproduce

    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"--trials with --runs 0 would rerun nothing: .* give --runs N, one-seed"):
        reproduce(tmp_path / "absent.tar.gz", runs="0", out=out, trials=True)
    assert not out.exists()


def test_a_file_under_supplied_that_no_run_or_dataset_names_is_a_difference(tmp_path):
    (tmp_path / "supplied" / "folder").mkdir(parents=True)
    (tmp_path / "supplied" / "base.safetensors").write_bytes(b"weights")
    (tmp_path / "supplied" / "folder" / "config.json").write_text("{}")  # packed: SHA256SUMS lists it
    (tmp_path / "supplied" / "supplied.sha256").write_text("")
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  supplied/folder/config.json\n")
    good = hashlib.sha256(b"weights").hexdigest()
    record = {"supplied": [{"path": "supplied/base.safetensors", "sha256": good, "bytes": 7, "field": "x"}]}
    assert check_supplied(tmp_path, record).differ == []
    (tmp_path / "supplied" / "folder" / "sitecustomize.py").write_text("print('hi')")
    (tmp_path / "supplied" / "extra.bin").write_bytes(b"x")
    assert check_supplied(tmp_path, record).differ == [
        f"supplied/{name} is no file a run or dataset names (archive.json's supplied does not record it, "
        "SHA256SUMS does not list it): remove it"
        for name in ("extra.bin", "folder/sitecustomize.py")
    ]


def test_a_moved_tuning_choice_differs_on_the_archive_s_class_and_is_a_note_on_another():
    from peftlab.analysis.archive.trials import said_choices

    moved = ["tuning of lora: the rerun search chose train.lr 0.01 (archived 0.004)"]
    assert said_choices(moved, other_class=False) == (moved, [])
    differences, notes = said_choices(moved, other_class=True)
    assert differences == [] and notes == [
        moved[0] + " (another machine class: its runs are compared by the tolerance)"
    ]
    assert said_choices([], other_class=True) == ([], [])


def test_a_base_inside_the_checkout_gives_the_archived_table_cell_for_cell(tmp_path):
    """The default study's base lies in the checkout (cache/pretrained/): the author's table says cache/..., each packed
    run ./cache/... (its portable form). The table regenerated from the packed runs is the archived one: the default
    study's own archive was once "not intact" for 40 such cells."""
    import json

    from studyfiles import write_study_dir

    from peftlab.analysis.archive.pack import pack_runs
    from peftlab.analysis.archive.regenerate import Regenerated, compare_tables, study_folder
    from peftlab.analysis.results.load import load_results
    from peftlab.analysis.results.portable import portable_frame

    study = tmp_path / "study"
    write_study_dir(study, with_failure=False)
    base = str(REPO / "cache" / "pretrained" / "mnist-vit" / "model.safetensors")
    for result in (study / "runs").glob("*/result.json"):
        data = json.loads(result.read_text())
        data["config"]["model"]["pretrained"] = base
        result.write_text(json.dumps(data))
    root = tmp_path / "archive"
    pack_runs(study, root)
    table = portable_frame(load_results(study), study)
    assert set(table["config.model.pretrained"]) == {"cache/pretrained/mnist-vit/model.safetensors"}
    table.to_csv(root / "results" / "results.csv", index=False)
    out = Regenerated()
    compare_tables(root, study_folder(root, {"name": "study", "study": "none.yaml"}, tmp_path / "made"), out)
    assert [line for line in out.differ if "results.csv" in line] == []


def test_reruns_the_checks_stopped_are_not_called_a_runs_0_check():
    """Found on a hostile copy of the default study's archive (a plugins/ folder archive.json does not declare, every
    hash recomputed) reproduced with --runs 1: the runs line blamed --runs 0."""
    evidence = Evidence(archive=["plugins/evil-0.1 is no plugin archive.json declares"], runs_total=40)
    assert (
        verdict_lines(evidence)[0][1] == "runs reproduced: not checked (no run rerun: --runs 0 checks the archive only)"
    )
    evidence.stopped = True
    lines, level, agree = verdict_lines(evidence)
    assert lines[1] == "runs reproduced: not checked (no run rerun: the checks' differences stopped the reruns)"
    assert (level, agree) == (0, False)


def test_reruns_the_archives_code_stopped_are_a_difference_not_a_check_left_out():
    """Issue 86: what the archive's plugin code raised in a consented rerun is the verdict, not `--runs 0`'s words."""
    stop = "the reruns stopped with the archive's plugin code on the path: ConfigError: ... RuntimeError: boom"
    lines, level, agree = verdict_lines(Evidence(checked={"files": 3}, runs_total=4, run_differences=[stop]))
    assert lines[1] == f"runs reproduced: no, no run compared: {stop}"
    assert lines[-1] == f"not reproduced: 1 difference: {stop}" and (level, agree) == (1, False)
