"""A stranger receives a text study's archive (issue 71): a base pretrained by the study on a fortunes corpus, a
LoRA whose train.lr was tuned on a 2-point grid, both datasets made by ``peftlab data`` into folders named as the
author liked (not ``fortunes-task``). Only the archive travels; the author's folder is renamed away before the
receiver runs ``peftlab reproduce`` in another working directory.

What the receiver needs and did not get before: both datasets recorded (the pretraining's corpus too) with the
``peftlab data`` command that makes each; a dataset's absence said before anything trains, at the path where it
goes; ``--data DIR`` for datasets kept outside the archive, checked against their checksums; a check without reruns
that does not claim to have checked data it never saw.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml
from archivefiles import here, paper_and_pack
from test_reproduce import hostile_record, peftlab, tampered
from testkit import extract_all

NAME = "received-submission"
CLASSES = ("alpha", "beta", "gamma")
TASK = ("fortunes-task", "--seed", "3", "--categories", "alpha,beta,gamma")  # `peftlab data` without --out
CORPUS = ("fortunes-corpus", "--categories", "alpha,beta,gamma")


def command(made_by: tuple[str, ...], out: str) -> str:
    return " ".join(("peftlab", "data", made_by[0], "--out", out, *made_by[1:]))


def write_fortunes(root: Path) -> Path:
    """A fortunes folder in strfile's format: the task's three categories, each quote ending in its class's word
    (a classifier that reads the last token learns them in a few steps), and two others for the corpus, which
    holds 500 quotes out for its test split."""
    root.mkdir(parents=True)
    words = "dog sun rain code bug vote atom".split()
    last = {"alpha": "cat", "beta": "law", "gamma": "sky"}
    for n, (name, size) in enumerate({**dict.fromkeys(CLASSES, 30), "other": 400, "more": 400}.items()):
        quotes = [f"{i} {words[(i + n) % 7]} {words[(3 * i + n) % 7]} {last.get(name, name)}" for i in range(size)]
        (root / name).write_text("".join(f"{quote}\n%\n" for quote in quotes))
    return root


def write_study(top: Path) -> Path:
    """The author's folder: fortunes, both datasets, configs (a tiny GPT-2 architecture of its own); the study."""
    fortunes = write_fortunes(top / "fortunes")
    for made_by, out in ((TASK, "data/texttask"), (CORPUS, "data/lmcorpus")):
        made = here(*command(made_by, out).split()[1:], "--fortunes-dir", str(fortunes), cwd=top)
        assert made.returncode == 0, made.stderr
    configs = top / "work" / "configs"
    (configs / "arch").mkdir(parents=True)
    arch = {"model_type": "gpt2", "n_embd": 16, "n_head": 2, "n_layer": 1, "n_positions": 32, "vocab_size": 300}
    (configs / "arch" / "config.json").write_text(json.dumps({**arch, "bos_token_id": 0, "eos_token_id": 0}))
    train = {"reproducible": True, "threads": 1, "batch_size": 16, "eval_batch_size": 64}
    pretrain = {
        "name": "tiny-lm",
        "model": {"source": "hf-text", "task": "causal-lm", "path": "arch"},
        "data": {"name": "text", "root": "../../data/lmcorpus", "max_length": 16, "val_fraction": 0.1},
        "method": {"name": "full"},
        "train": {**train, "max_steps": 4, "lr": 3e-3},
    }
    down = {
        "name": "texttask",
        "model": {"source": "hf-text", "path": "../base/tiny"},
        "data": {"name": "text", "root": "../../data/texttask", "max_length": 16, "val_fraction": 0.2},
        "method": {"name": "lora", "r": 2, "lora_alpha": 4, "target_modules": "standard"},
        "train": {**train, "max_steps": 20, "lr": 3e-3},
    }
    study = {
        "name": "received",
        "base": "down.yaml",
        "pretrain": "pretrain.yaml",
        "seeds": 1,
        "methods": {"lora": {}},
        "tune": {"axes": {"train.lr": [1e-4, 5e-2]}, "search": "grid", "metric": "val_top1"},
    }
    for name, data in (("pretrain.yaml", pretrain), ("down.yaml", down), ("study.yaml", study)):
        (configs / name).write_text(yaml.safe_dump(data))
    return configs / "study.yaml"


@pytest.fixture(scope="module")
def received(tmp_path_factory) -> dict:
    """The archive alone in the receiver's folder (the author's renamed away), and the fortunes folder the
    receiver's ``peftlab data`` reads (PEFTLAB_FORTUNES_DIR: Debian's files stand in for it)."""
    top = tmp_path_factory.mktemp("author")
    study = write_study(top)
    work = top / "work"
    # found cached by the study; a process of its own, pinned before torch is imported (train.reproducible)
    base = peftlab("pretrain", "configs/pretrain.yaml", "--out", "base/tiny", "--quiet", cwd=work)
    assert base.returncode == 0, base.stderr[-2000:]
    # a process of its own: the study records its command line (commands.jsonl), which the archive packs
    ran = peftlab("study", str(study), "--study-dir", "runs/received", "--quiet", cwd=work)
    assert ran.returncode == 0, ran.stdout + ran.stderr[-2000:]
    assert paper_and_pack(work, "runs/received", top).name == f"{NAME}.tar.gz"
    receiver = tmp_path_factory.mktemp("receiver")
    tarball = receiver / f"{NAME}.tar.gz"
    shutil.copy(work / "runs" / "received" / tarball.name, tarball)
    fortunes = receiver / "debian-fortunes"
    shutil.copytree(top / "fortunes", fortunes)
    away = top.with_name(top.name + "-away")
    top.rename(away)  # nothing can be read from the author's folder now
    return {"archive": tarball, "fortunes": fortunes, "author": top, "chosen": chosen_lr(away)}


def chosen_lr(author: Path) -> float:
    (selection,) = (author / "work" / "runs" / "received" / "tune").glob("*/selection.json")
    return json.loads(selection.read_text())["chosen"]["params"]["train.lr"]


def receive(received: dict, where: Path, *args: str, fortunes: bool = True):
    """``peftlab ARGS`` from ``where`` (made), PEFTLAB_FORTUNES_DIR set as on a machine with Debian's fortunes, in
    this process (``archivefiles.here``): a check, a refusal, a dataset made."""
    where.mkdir(parents=True, exist_ok=True)
    env = {"PEFTLAB_FORTUNES_DIR": str(received["fortunes"])} if fortunes else {}
    return here(*args, cwd=where, env=env)


def rerun(where: Path, archive: str, **options) -> tuple[str, dict]:
    """``peftlab.reproduce(ARCHIVE, **options)`` from ``where`` (made) in this process, as a notebook's kernel calls
    what ``peftlab reproduce`` computes: the reruns train in its workers, started with the pin (this process trains
    nothing), as ``peftlab study`` trained the archive's runs in its own; the datasets are read from the folders
    ``data`` names, which the reruns' configs hold. The lines it printed, and its record (reproduce.json)."""
    import peftlab

    where.mkdir(parents=True, exist_ok=True)
    printed = io.StringIO()
    with contextlib.chdir(where), contextlib.redirect_stdout(printed):
        record = peftlab.reproduce(archive, progress=False, **options)
    return printed.getvalue(), record


def archive_file(tarball: Path, name: str) -> str:
    with tarfile.open(tarball) as tar:
        return tar.extractfile(f"{NAME}/{name}").read().decode()


def make_data(received: dict, where: Path, made_by: tuple[str, ...], out: str) -> None:
    """A dataset made by the receiver's ``peftlab data`` (REPRODUCE.md's command) in ``where``/``out``."""
    made = receive(received, where, *command(made_by, out).split()[1:])
    assert made.returncode == 0, made.stderr


@pytest.fixture(scope="module")
def receivers_data(received, tmp_path_factory) -> dict[tuple[str, ...], Path]:
    """Both datasets made once by the receiver's ``peftlab data`` (REPRODUCE.md's commands), by command: read only,
    each test copies those it needs (``put_data``)."""
    where = tmp_path_factory.mktemp("receivers-data")
    for made_by, out in ((TASK, "texttask"), (CORPUS, "lmcorpus")):
        make_data(received, where, made_by, out)
    return {TASK: where / "texttask", CORPUS: where / "lmcorpus"}


def put_data(receivers_data: dict, where: Path, *places: tuple[tuple[str, ...], str]) -> None:
    """The receiver's datasets copied to ``where``/OUT for each (command, OUT) of ``places``."""
    for made_by, out in places:
        shutil.copytree(receivers_data[made_by], where / out)


@pytest.mark.e2e
def test_both_datasets_are_recorded_with_the_command_that_makes_each(received):
    record = json.loads(archive_file(received["archive"], "archive.json"))
    data = {entry["folder"]: entry for entry in record["data"]}
    assert set(data) == {"data/texttask", "data/lmcorpus"}  # the pretraining's corpus too
    assert data["data/texttask"]["made_by"] == list(TASK) and data["data/lmcorpus"]["made_by"] == list(CORPUS)
    assert set(data["data/lmcorpus"]["sha256"]) == {"train.jsonl", "test.jsonl"}
    text = archive_file(received["archive"], "REPRODUCE.md")
    assert f"`{command(TASK, 'data/texttask')}`" in text and f"`{command(CORPUS, 'data/lmcorpus')}`" in text
    with tarfile.open(received["archive"]) as tar:
        for member in tar.getmembers():
            if member.isfile():
                assert str(received["author"]).encode() not in tar.extractfile(member).read(), member.name


@pytest.mark.e2e
def test_the_pretraining_step_says_how_long_the_base_took_though_the_study_found_it_trained(received):
    seconds = json.loads(archive_file(received["archive"], "archive.json"))["base"]["seconds"]
    assert seconds > 0
    text = archive_file(received["archive"], "REPRODUCE.md")
    (step,) = (line for line in text.splitlines() if line.startswith("5. Pretraining: "))
    assert "pretrain took 0.0 min" not in step and f"its run took {seconds:.0f} s on the runs' machine" in step


@pytest.mark.e2e
def test_a_check_without_data_names_where_each_dataset_goes_and_claims_no_data(received, tmp_path):
    done = receive(received, tmp_path, "reproduce", str(received["archive"]), "--runs", "0", "--out", "check")
    assert done.returncode == 0, done.stdout + done.stderr
    notes = [line for line in done.stdout.splitlines() if line.startswith("note: ")]
    task, corpus = (f"check/archive/{NAME}/data/{name}" for name in ("texttask", "lmcorpus"))
    assert notes == [
        f"note: data data/texttask (text) is absent: put it in {task} (`{command(TASK, task)}` makes it)",
        f"note: data data/lmcorpus (text) is absent: put it in {corpus} (`{command(CORPUS, corpus)}` makes it)",
    ]
    verdict = done.stdout.splitlines()[-1]
    assert verdict == "no verdict: nothing checked differs, but data not checked (absent: data/texttask, data/lmcorpus)"


@pytest.mark.e2e
def test_the_pretrainings_absent_corpus_stops_the_rerun_before_anything_trains(received, receivers_data, tmp_path):
    put_data(receivers_data, tmp_path, (TASK, "kept/texttask"))  # the task only, where --data looks
    done = receive(received, tmp_path, "reproduce", str(received["archive"]), "--data", "kept", "--out", "check")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "data data/lmcorpus (text) is absent: put it in kept/lmcorpus (`" in done.stderr, done.stderr
    assert not (tmp_path / "check" / "rerun").exists()


@pytest.mark.e2e
def test_data_kept_outside_is_checked_and_read_and_the_tuned_choice_reruns_without_its_trials(
    received, receivers_data, tmp_path
):
    put_data(receivers_data, tmp_path, (TASK, "datasets/texttask"), (CORPUS, "datasets/lmcorpus"))
    stdout, record = rerun(tmp_path / "cwd", str(received["archive"]), data="../datasets", out="c")
    verdict = stdout.splitlines()[-1]
    assert record["reproduced"] and verdict.startswith("runs reproduced: level 2 of 3"), stdout
    assert "archive intact: yes (" in stdout and "2 datasets" in stdout
    assert "1 of 1 runs rerun (drawn with sample seed " in stdout and "the tuning taken as recorded" in stdout
    assert "base: reproduced, its weights' SHA-256 " in stdout  # the rerun's pretraining made the same base
    check = tmp_path / "cwd" / "c"
    assert not (check / "archive" / NAME / "data").exists()  # read where it is kept, not copied
    (result,) = (check / "rerun" / "runs").glob("*/result.json")
    rerun_result = json.loads(result.read_text())
    assert rerun_result["config"]["train"]["lr"] == received["chosen"] and not (check / "rerun" / "tune").exists()
    assert Path(rerun_result["config"]["data"]["root"]) == (tmp_path / "datasets" / "texttask").resolve()
    assert record == json.loads((check / "reproduce.json").read_text())
    assert all(a == b for a, b in record["compared"][0]["metrics"].values())


@pytest.mark.e2e
def test_a_changed_file_of_data_kept_outside_is_named_by_its_path(received, receivers_data, tmp_path):
    put_data(receivers_data, tmp_path, (TASK, "kept/texttask"))
    (tmp_path / "kept" / "texttask" / "test.jsonl").write_text('{"text": "changed", "label": "alpha"}\n')
    done = receive(received, tmp_path, "reproduce", str(received["archive"]), "--data", "kept", "--runs", "0")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "differs: data data/texttask (text): kept/texttask/test.jsonl differs (SHA-256 " in done.stdout


def edit_architecture(root: Path) -> None:
    path = root / "files" / "arch" / "config.json"
    path.write_text(path.read_text().replace('"n_head": 2', '"n_head": 1'))


def edit_record(root: Path) -> None:
    path = root / "archive.json"
    record = json.loads(path.read_text())
    record["data"][0]["sha256"] = {name: "0" * 64 for name in record["data"][0]["sha256"]}
    path.write_text(json.dumps(record))


@pytest.mark.e2e
@pytest.mark.parametrize(
    "change, named",
    [(edit_architecture, "files/arch/config.json is not as packed"), (edit_record, "archive.json is not as packed")],
)
def test_a_changed_packed_file_or_record_is_named(received, tmp_path, change, named):
    with tarfile.open(received["archive"]) as tar:
        extract_all(tar, tmp_path)
    change(tmp_path / NAME)
    done = receive(received, tmp_path, "reproduce", NAME, "--runs", "0", "--out", "check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"differs: {named} (its SHA-256 differs from SHA256SUMS)" in done.stdout.splitlines()
    assert done.stdout.splitlines()[-1].startswith("not reproduced: ")


def test_a_recorded_data_command_that_is_no_list_of_words_is_one_line(tmp_path):
    data = {"name": "text", "folder": "data/t", "sha256": {}, "made_by": "fortunes-task; rm -rf ~"}
    root = hostile_record(tmp_path, {"data": [data]})
    done = here("reproduce", str(root), "--out", "out", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "data[0].made_by is 'fortunes-task; rm -rf ~': expected a list or null" in done.stderr


@pytest.mark.e2e
def test_a_changed_image_of_an_image_folder_is_named_without_a_rerun(archive, tmp_path):
    """tests/analysis/test_reproduce.py's image-folder study, whose runs record one hash over the folder's images:
    a check without reruns hashes them as the runs did, never saying "data as recorded" of an image it changed."""

    def edit_image(root: Path) -> None:
        write_image(root / "data" / "pets" / "test" / "cat" / "0.png", (0, 0, 0), size=12)

    from datafiles import write_image  # tests/data, on the path as test_reproduce puts it

    kept = tampered(archive, tmp_path / "kept", lambda root: None)
    done = here("reproduce", str(kept), "--runs", "0", "--out", "check", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.splitlines()[-1].startswith("archive intact: level 1"), done.stdout
    root = tampered(archive, tmp_path / "received", edit_image)
    done = here("reproduce", str(root), "--runs", "0", "--out", "check", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    line = f"differs: data data/pets (imagefolder): {root / 'data' / 'pets'} (images:"
    assert any(x.startswith(line) and ") differs (SHA-256 " in x for x in done.stdout.splitlines()), done.stdout


def test_a_data_folder_that_is_not_one_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    done = here("reproduce", "missing.tar.gz", "--data", "file", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--data file is not a folder" in done.stderr


@pytest.mark.e2e
def test_a_rerun_base_other_than_the_recorded_one_is_a_difference_on_the_runs_machine_class(
    received, receivers_data, tmp_path
):
    """The archive says which base the pretraining made (its SHA-256); a rerun whose pretraining makes other
    weights on the runs' own machine class is named. The pretraining config is what nothing packed checks (its run
    is not packed: the verdict names it), so an edit of it, every hash recomputed, is found by the rerun's base."""
    import hashlib

    with tarfile.open(received["archive"]) as tar:
        extract_all(tar, tmp_path)
    root = tmp_path / NAME
    config = yaml.safe_load((root / "configs" / "pretrain.yaml").read_text())
    config["train"]["lr"] = 2 * config["train"]["lr"]  # as if the author's base had been trained otherwise
    (root / "configs" / "pretrain.yaml").write_text(yaml.safe_dump(config))
    digest = hashlib.sha256((root / "configs" / "pretrain.yaml").read_bytes()).hexdigest()
    sums = (root / "SHA256SUMS").read_text().splitlines()
    (root / "SHA256SUMS").write_text(
        "".join(
            f"{digest}  configs/pretrain.yaml\n" if line.endswith(" configs/pretrain.yaml") else line + "\n"
            for line in sums
        )
    )
    put_data(receivers_data, tmp_path, (TASK, "datasets/texttask"), (CORPUS, "datasets/lmcorpus"))
    stdout, record = rerun(tmp_path, NAME, data="datasets", out="check")
    assert not record["reproduced"], stdout
    assert "base: other weights on the runs' machine class: SHA-256 " in stdout
    assert "not checked: " in stdout and "configs/pretrain.yaml" in stdout  # named before the reruns
    last = stdout.splitlines()[-1]
    assert last.startswith("not reproduced: ") and "base: other weights" in last, stdout


def test_a_pretraining_phase_that_found_its_base_trained_says_so_not_zero_minutes(tmp_path):
    import pandas as pd

    from peftlab.analysis.archive.reproduce_md import runtime_lines
    from peftlab.analysis.archive.submission import phase_seconds, pretrain_cached

    phases = [
        {"phase": "pretrain", "started": "2026-11-27T09:29:34+00:00", "wall_seconds": 0.008, "workers": 1,
         "executor": "local", "runs": 0, "train_eval_seconds": 0.0, "run_seconds": 0.0, "complete": True},
        {"phase": "final runs", "started": "2026-11-27T09:29:35+00:00", "wall_seconds": 289.8, "workers": 2,
         "executor": "local", "runs": 40, "train_eval_seconds": 414.6, "run_seconds": 575.8, "complete": True},
    ]  # fmt: skip
    (tmp_path / "phases.jsonl").write_text("".join(json.dumps(p) + "\n" for p in phases))
    record = {"phases": phase_seconds(tmp_path), "made": {"pretrain_cached": pretrain_cached(tmp_path)}}
    (line,) = [line for line in runtime_lines(pd.DataFrame(), record, None) if "Every phase" in line]
    assert "pretrain: its base already trained, final runs 4.8 min." in line and "pretrain 0.0 min" not in line


@pytest.mark.e2e
def test_trials_rerun_the_search_and_compare_its_choice(received, receivers_data, tmp_path):
    put_data(receivers_data, tmp_path, (TASK, "datasets/texttask"), (CORPUS, "datasets/lmcorpus"))
    stdout, record = rerun(tmp_path, str(received["archive"]), data="datasets", trials=True, out="c")
    assert record["reproduced"], stdout
    assert re.search(r"the tuning searches rerun, (\d+) of \1 choices? as archived", stdout), stdout
    assert (tmp_path / "c" / "rerun" / "tune").is_dir()  # the trials ran again
    assert record == json.loads((tmp_path / "c" / "reproduce.json").read_text())
    assert record["tuning"] == "rerun" and record["tuning_choices"] == [f"lora: train.lr {received['chosen']}"]
