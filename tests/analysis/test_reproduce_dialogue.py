"""A dialogue study's archive (issue 89): a causal LM's tested run writes generations.jsonl, its greedy replies, which
the report's "Generations" section shows. The archive packs it beside the run's spec.json and result.json, runs.sha256
hashes it (a third hash on that run's line: a study without replies keeps the lines and the hash it had), and the
study folder reproduce makes from the archive holds it, so the paper regenerated there is the packed one and a
report made there has the section. An edited reply is a difference; one whose every hash was recomputed is named
among what the verdict did not check, and a rerun finds it: a pinned run's replies are held to their bits. A tiny
random GPT-2, LoRA r=2, 2 steps, one seed, pinned."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
import yaml
from archivefiles import here, paper_and_pack, peftlab
from test_reproduce_hostile import rehash
from testkit import extract_all, hf_text_dir

import peftlab as peftlab_api
from peftlab.training.run_result import GENERATIONS

NAME = "dialogue-submission"
EXCHANGES = [("w4 w5 w6", "", "w7 w8"), ("w9", "w10 w11", "w12"), ("w13 w14", "", "w15 w16 w17"), ("w18", "", "w19")]


def write_study(top: Path) -> Path:
    """The author's folder: a tiny random GPT-2 (its weights file makes it a folder the receiver supplies), a dialogue
    dataset in data.name instructions' layout, the configs and the study."""
    import torch

    torch.manual_seed(0)
    hf_text_dir(top / "model", "gpt2", causal=True)
    data = top / "dialogue"
    data.mkdir()
    for split, items in (("train", EXCHANGES * 4), ("validation", EXCHANGES[::-1]), ("test", EXCHANGES)):
        lines = [json.dumps({"instruction": a, "input": b, "output": c}) for a, b, c in items]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    configs = top / "work" / "configs"
    configs.mkdir(parents=True)
    base = {
        "name": "dialogue",
        "model": {"source": "hf-text", "path": "../../model", "task": "causal-lm"},
        "data": {"name": "instructions", "root": "../../dialogue", "max_length": 48, "prompt_format": "dialogue"},
        "method": {"name": "lora", "r": 2},
        "train": {"max_steps": 2, "batch_size": 8, "lr": 1e-2, "threads": 1, "reproducible": True},
    }
    study = {"name": "dialogue", "base": "base.yaml", "seeds": 1, "methods": {"lora": {}}}
    for name, content in (("base.yaml", base), ("study.yaml", study)):
        (configs / name).write_text(yaml.safe_dump(content))
    return configs / "study.yaml"


@pytest.fixture(scope="module")
def dialogue_archive(tmp_path_factory) -> dict:
    """The study run (a process of its own: it records its command line), its paper (``--no-compile``) and its
    archive packed on a PATH without LaTeX; the author's study folder and the archive."""
    top = tmp_path_factory.mktemp("author")
    study = write_study(top)
    work = top / "work"
    ran = peftlab("study", str(study), "--study-dir", "runs/dialogue", "--quiet", cwd=work)
    assert ran.returncode == 0, ran.stdout + ran.stderr[-2000:]
    archive = paper_and_pack(work, "runs/dialogue", top)
    assert archive.name == f"{NAME}.tar.gz"
    return {"top": top, "study_dir": work / "runs" / "dialogue", "archive": archive}


def received(made: dict, where: Path, change=None) -> Path:
    """The archive unpacked in ``where`` (``change`` made to it), the dataset and the supplied model folder put where
    REPRODUCE.md says."""
    with tarfile.open(made["archive"]) as tar:
        extract_all(tar, where)
    root = where / NAME
    if change is not None:
        change(root)
    shutil.copytree(made["top"] / "dialogue", root / "data" / "dialogue")
    record = json.loads((root / "archive.json").read_text())
    assert [Path(entry["path"]).name for entry in record["supplied"]] == ["model.safetensors"]  # its small files packed
    for entry in record["supplied"]:
        shutil.copy(made["top"] / "model" / Path(entry["path"]).name, root / entry["path"])
    return root


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.e2e
def test_the_replies_are_packed_hashed_and_in_the_study_folder_reproduce_makes(dialogue_archive, tmp_path):
    from peftlab.analysis.archive.regenerate import study_folder
    from peftlab.analysis.results.generations import report_section
    from peftlab.analysis.results.load import results_lines, results_sha256

    study_dir = dialogue_archive["study_dir"]
    (run,) = [path for path in (study_dir / "runs").iterdir() if path.is_dir()]
    assert (run / GENERATIONS).is_file()
    root = received(dialogue_archive, tmp_path)
    packed = root / "results" / "runs" / run.name / GENERATIONS
    assert packed.read_bytes() == (run / GENERATIONS).read_bytes()  # no path of the machine in it to make portable
    assert f"{sha(packed)}  results/runs/{run.name}/{GENERATIONS}" in (root / "SHA256SUMS").read_text().splitlines()
    spec, result, replies = (
        sha(root / "results" / "runs" / run.name / f) for f in ("spec.json", "result.json", GENERATIONS)
    )
    lines = (root / "results" / "runs.sha256").read_text()
    assert lines == results_lines(study_dir) == f"{run.name} {spec} {result} {replies}\n"
    record = json.loads((root / "archive.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:  # the study as reproduce makes it: the replies, the hash, the section
        folder = study_folder(root, record, Path(tmp))
        assert results_sha256(folder) == record["results_sha256"] == results_sha256(study_dir)
        section = report_section(folder)
    assert section[0] == "## Generations" and "**Prompt 1.** w18" in section  # the first validation prompt
    (run / GENERATIONS).rename(tmp_path / "kept.jsonl")  # a study without replies hashes the lines it always did
    try:
        assert results_lines(study_dir) == f"{run.name} {spec} {result}\n"
    finally:
        (tmp_path / "kept.jsonl").rename(run / GENERATIONS)


@pytest.mark.e2e
def test_a_check_without_reruns_finds_the_archive_intact_and_names_what_it_did_not_check(dialogue_archive, tmp_path):
    root = received(dialogue_archive, tmp_path)
    done = here("reproduce", str(root), "--runs", "0", "--out", "check", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "archive intact: yes (" in done.stdout, done.stdout
    assert_named_as_not_checked(done.stdout, tmp_path / "check")


def assert_named_as_not_checked(stdout: str, out: Path) -> None:
    """The verdict names the replies after "not checked:", and reproduce.json says why."""
    (verdict,) = [line for line in stdout.splitlines() if line.startswith("archive intact: yes (")]
    assert f"results/runs/*/{GENERATIONS}" in verdict.partition("; not checked: ")[2], verdict
    why = f"results/runs/*/{GENERATIONS} (1 file: held to runs.sha256 and the results hash alone; no packed table"
    assert any(line.startswith(why) for line in json.loads((out / "reproduce.json").read_text())["not_checked"])


def edit_reply(root: Path) -> Path:
    (path,) = (root / "results" / "runs").glob(f"*/{GENERATIONS}")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["reply"] = "w59 w59 w59"  # a reply the run never gave
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.e2e
def test_an_edited_reply_is_a_difference_though_sha256sums_was_recomputed(dialogue_archive, tmp_path):
    root = received(dialogue_archive, tmp_path)
    path = edit_reply(root)
    name = path.relative_to(root).as_posix()
    sums = (root / "SHA256SUMS").read_text().splitlines()
    (root / "SHA256SUMS").write_text(
        "".join(f"{sha(path)}  {name}\n" if line.endswith(f"  {name}") else line + "\n" for line in sums)
    )
    done = here("reproduce", str(root), "--runs", "0", "--out", "check", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    run = path.parent.name
    assert f"differs: results/runs/{run}: its files are not those results/runs.sha256 names" in done.stdout
    assert "archive intact: yes" not in done.stdout and done.stdout.splitlines()[-1].startswith("not reproduced: ")


@pytest.mark.e2e
def test_an_edited_reply_with_every_hash_recomputed_is_named_as_not_checked(dialogue_archive, tmp_path):
    """runs.sha256, \\resultsSha, archive.json, REPRODUCE.md and SHA256SUMS recomputed (``rehash``): no packed table or
    paper shows a reply, so the verdict cannot call it a difference; it says that it held the replies to the hashes
    alone."""
    root = received(dialogue_archive, tmp_path, lambda root: (edit_reply(root), rehash(root)))
    done = here("reproduce", str(root), "--runs", "0", "--out", "check", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_named_as_not_checked(done.stdout, tmp_path / "check")


@pytest.mark.e2e
def test_a_rerun_holds_the_replies_to_their_bits_and_finds_one_forged_with_every_hash_recomputed(
    dialogue_archive, tmp_path
):
    """The forger who recomputed every hash is caught by the rerun alone: its greedy replies, a pinned run's on its
    machine class, are the archive's to the token, but the one forged."""
    root = received(dialogue_archive, tmp_path, lambda root: (edit_reply(root), rehash(root)))
    (packed,) = (root / "results" / "runs").glob(f"*/{GENERATIONS}")
    prompts = len(packed.read_text().splitlines())
    printed = io.StringIO()
    with contextlib.chdir(tmp_path), contextlib.redirect_stdout(printed):  # what the command computes, as a kernel
        record = peftlab_api.reproduce(str(root), runs="all", out="check")  # calls it: its workers start pinned
    stdout = printed.getvalue()
    assert not record["reproduced"], stdout
    (line,) = [line for line in stdout.splitlines() if line.startswith("run lora seed 0: ")]
    said = f"{GENERATIONS}: 1 of {prompts} greedy replies differ, the first to prompt 1: "
    assert line.startswith(f"run lora seed 0: differs (exact): {said}"), line
    assert line.endswith("here, 'w59 w59 w59' archived") and "metric" not in line, line  # the metrics are equal
    assert stdout.splitlines()[-1].startswith("not reproduced: ")
    assert record == json.loads((tmp_path / "check" / "reproduce.json").read_text())
    compared = record["compared"]
    assert compared[0]["replies"] == {"compared": prompts, "differ": 1} and prompts > 1


def test_replies_on_another_machine_class_are_a_note_and_a_missing_one_is_named():
    from peftlab.analysis.archive.rerun import reply_differences, reply_note

    row = {"index": 0, "prompt": "w1", "reference": "w2", "reply": "w3", "new_tokens": 1, "stopped": "eos"}
    moved = [row, {**row, "reply": "w4"}]
    line, record = reply_differences(([row, row], moved))
    assert line == f"{GENERATIONS}: 1 of 2 greedy replies differ, the first to prompt 2: 'w4' here, 'w3' archived"
    assert record == {"compared": 2, "differ": 1}
    assert reply_note(line, record).startswith(f"; note: {GENERATIONS}: 1 of 2 greedy replies differ")
    assert (
        reply_differences(([row], None))[0] == f"{GENERATIONS}: the rerun wrote no greedy replies (the archive packs 1)"
    )
    assert reply_differences((None, [row])) == (None, None) and reply_note(None, None) == ""
    assert reply_differences(([row], [row])) == (None, {"compared": 1, "differ": 0})
    assert reply_note(None, {"compared": 1, "differ": 0}) == "; greedy replies: 1 of 1 equal"
