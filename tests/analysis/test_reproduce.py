"""A submission that reruns itself (docs/reproduce.md): ``peftlab submission`` packs a study so that its
commands run from the unpacked folder, and ``peftlab reproduce`` checks the archive and reruns its runs.

The study (e2e; archivefiles.py, packed once per pytest process by conftest.py's ``archive``): two
configurations, LoRA and a plugin method of the test's own (tests/plugin_example installed into a folder of the
test), two seeds each, on an image folder the test writes; ``study``, ``paper --no-compile`` (a stand-in main.pdf
recorded as compiled, as tests/analysis/test_hostile_texts.py does), ``submission``, then ``reproduce`` from
another working directory without the plugin installed: every compared metric equal. A tampered archive (a
result.json, a config, a data file, the plugin's code) is named, exit 1, and stops the reruns before anything
trains; what is no archive is one line, exit 2. Hostile archives: test_reproduce_hostile.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from archivefiles import NAME, here, peftlab, unpacked  # noqa: F401 (NAME: read by the other files of reproduce)
from datafiles import write_image  # archivefiles puts tests/data on the path
from testkit import REPO

import peftlab as peftlab_api
from peftlab.analysis.archive.pack import ARCHIVE_VERSION, pack_configs
from peftlab.study.runner import pretrain_dir
from peftlab.study.spec import load_study
from peftlab.utils.errors import UserError


@pytest.mark.e2e
def test_the_archive_reruns_itself_elsewhere_every_metric_equal(archive, tmp_path):
    made = archive.parents[3]  # the study's own folder: no byte of the archive names it
    root = unpacked(archive, tmp_path / "received")
    leaked = [p for p in root.rglob("*") if p.is_file() and str(made).encode() in p.read_bytes()]
    assert leaked == []
    configs = yaml.safe_load((root / "configs" / "base.yaml").read_text())
    assert configs["data"]["root"] == "../data/pets"
    plugin = json.loads((root / "archive.json").read_text())["plugins"][0]
    assert plugin["distribution"] == "peftlab-mlpbias" and (root / plugin["folder"] / "peftlab_mlpbias").is_dir()
    text = (root / "REPRODUCE.md").read_text()
    steps = [line for line in text.splitlines() if line[:3] in {f"{n}. " for n in range(1, 10)}]
    assert [line.split(" ")[1] for line in steps] == ["The", "Install", "Plugin", "Data", "The", "The", "The"]
    assert steps[0].startswith("1. The integrity check, before anything runs code: `sha256sum -c SHA256SUMS`")
    dry = peftlab("study", "configs/study.yaml", "--dry-run", cwd=root, plugin_site=root / plugin["folder"])
    assert dry.returncode == 0, dry.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = here("reproduce", str(root), "--out", "check", "--quiet", cwd=elsewhere, watch=tmp_path)  # refused here
    assert done.returncode == 2 and "--run-archive-code" in done.stderr and done.left == [], (done, done.left)
    # every file it would put on the path listed first, in a file the refusal names, with its count and SHA-256
    code = done.stdout.split("archive code SHA-256: ")[1][:64]
    listing = elsewhere / "check" / "plugin-code.txt"
    assert hashlib.sha256(listing.read_bytes()).hexdigest() == code
    assert [line.split("  ")[2] for line in listing.read_text().splitlines()] == [
        f"{plugin['folder']}/{name}"
        for name in ("peftlab_mlpbias/__init__.py", "peftlab_mlpbias/config.py", "peftlab_mlpbias/model.py")
        + ("peftlab_mlpbias-0.1.dist-info/METADATA", "peftlab_mlpbias-0.1.dist-info/entry_points.txt")
    ]
    assert (
        f"peftlab-mlpbias 0.1: 5 files, SHA-256 {code[:12]}, each named in check/plugin-code.txt" in done.stderr
        and f"give --run-archive-code={code[:12]} to run exactly that code" in done.stderr
        and not (elsewhere / "check" / "rerun").exists()
    )
    # the API asks the same consent, in its parameter's name (before anything is imported or put on the path)
    path = list(sys.path)
    with contextlib.chdir(elsewhere), pytest.raises(UserError, match=f"give run_archive_code={code[:12]} to run"):
        peftlab_api.reproduce(str(root), out="check-api", progress=False)
    assert not (elsewhere / "check-api" / "rerun").exists() and sys.path == path
    done = peftlab(
        "reproduce", str(root), "--out", "check", "--quiet", f"--run-archive-code={code[:12]}", cwd=elsewhere
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "runs reproduced: level 2 of 3 (archive intact; runs reproduced; not said: claims reproduced)"
    assert any(line.startswith("runs reproduced: yes, 2 of 4 runs rerun (drawn with sample seed ") for line in lines)
    record = json.loads((elsewhere / "check" / "reproduce.json").read_text())
    assert record["reproduced"] and {run["variant"] for run in record["compared"]} == {"lora", "mlp_bias"}
    for run in record["compared"]:
        assert run["rule"] == "exact" and run["metrics"] and all(a == b for a, b in run["metrics"].values())
    # a kernel that let the API run the archive's code: afterwards no module, plugin or path of it is left
    call = (
        "import importlib.util, json, os, sys, peftlab; from peftlab.tuners.plugins import LOADED; "
        f"record = peftlab.reproduce({str(root)!r}, out='check-api', runs=1, run_archive_code={code!r}); "
        "print(json.dumps([record['reproduced'], [m for m in sys.modules if 'mlpbias' in m], sorted(LOADED), "
        "[p for p in sys.path + [os.environ.get('PYTHONPATH', '')] if 'plugin-code' in p], "
        "importlib.util.find_spec('peftlab_mlpbias') is None]))"
    )
    api = python_lines(call, elsewhere)
    assert api.returncode == 0, api.stdout + api.stderr
    assert json.loads(api.stdout.splitlines()[-1]) == [True, [], [], [], True]


def python_lines(call: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -c CALL`` from ``cwd`` with this checkout's peftlab, as a notebook's kernel would run it."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-c", call], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def tampered(archive: Path, where: Path, change) -> Path:
    root = unpacked(archive, where)
    change(root)
    return root


def edit_result(root: Path) -> None:
    path = next((root / "results" / "runs").glob("*/result.json"))
    result = json.loads(path.read_text())
    result["metrics"]["test_top1"] = 0.99
    path.write_text(json.dumps(result))


def edit_config(root: Path) -> None:
    path = root / "configs" / "base.yaml"
    path.write_text(path.read_text().replace("max_steps: 4", "max_steps: 5"))


def edit_plugin(root: Path) -> None:
    (path,) = root.glob("plugins/*/peftlab_mlpbias/model.py")
    path.write_text(path.read_text() + "\n# changed\n")


@pytest.mark.e2e
@pytest.mark.parametrize(
    "change, named",
    [
        (edit_result, ["result.json is not as packed", "results hash"]),
        (edit_config, ["configs/base.yaml is not as packed"]),
        (edit_plugin, ["model.py is not as packed", "plugin peftlab-mlpbias 0.1 in plugins/"]),
    ],
)
def test_a_tampered_archive_is_named(archive, tmp_path, change, named):
    root = tampered(archive, tmp_path / "received", change)
    done = here("reproduce", str(root), "--runs", "0", "--out", "check", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("not reproduced:")
    for words in named:
        assert any(words in line for line in done.stdout.splitlines() if line.startswith("differs: ")), done.stdout


@pytest.mark.e2e
def test_a_changed_data_file_is_named_by_the_check_and_stops_the_rerun(archive, tmp_path):
    def edit_data(root: Path) -> None:
        write_image(root / "data" / "pets" / "test" / "cat" / "0.png", (0, 0, 0), size=12)

    root = tampered(archive, tmp_path / "received", edit_data)
    done = here("reproduce", str(root), "--runs", "1", "--out", "check", "--quiet", "--run-archive-code", cwd=tmp_path)
    assert done.returncode == 1 and done.left == [], (done.stdout + done.stderr, done.left)
    lines = done.stdout.splitlines()
    assert any(line.startswith("differs: data data/pets (imagefolder): ") for line in lines), done.stdout
    assert lines[-1].startswith("not reproduced: no run was rerun, the checks found 1 difference: data data/pets")
    assert not (tmp_path / "check" / "rerun").exists() and not (tmp_path / "check" / "plugin-code").exists()
    assert json.loads((tmp_path / "check" / "reproduce.json").read_text())["rerun"] is False


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link_member(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


WELL_FORMED = {
    "version": ARCHIVE_VERSION,
    "study": "configs/s.yaml",
    "results_sha256": "0" * 64,
    "environment": {},
    "data": [],
    "plugins": [],
    "base": None,
    "supplied": [],
    "phases": {},
}


def hostile_record(where: Path, fields: dict) -> Path:
    """A folder whose archive.json holds ``fields`` over a well-formed record's."""
    root = where / "received"
    root.mkdir()
    (root / "archive.json").write_text(json.dumps({**WELL_FORMED, **fields}))
    return root


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: (d / "a.tar.gz").write_text("not an archive") and d / "a.tar.gz", "is no readable archive"),
        (lambda d: d / "missing.tar.gz", "does not exist"),
        (lambda d: write_tar(d / "a.tar.gz", [file_member("../evil")]), "leaves the archive"),
        (lambda d: write_tar(d / "a.tar.gz", [file_member("/etc/evil")]), "absolute path"),
        (lambda d: write_tar(d / "a.tar.gz", [link_member("s/link", "/etc/passwd")]), "is a link"),
        (lambda d: write_tar(d / "a.tar.gz", [file_member("s/x.txt")]), "no readable archive.json"),
        (lambda d: (d / "folder").mkdir() or d / "folder", "no readable archive.json"),
        (lambda d: hostile_record(d, {"study": "../../etc/passwd"}), "study is '../../etc/passwd': expected configs/"),
        (lambda d: hostile_record(d, {"plugins": [{"folder": "/etc"}]}), "plugins[0].distribution is missing"),
        (lambda d: hostile_record(d, {"environment": {"versions": []}}), "environment.versions is []: expected"),
        (
            lambda d: hostile_record(d, {"version": 1}),
            f"archive.json has version 1: expected {ARCHIVE_VERSION} (packed by an older peftlab",
        ),
        (
            lambda d: hostile_record(d, {"version": 99}),
            f"has version 99: expected {ARCHIVE_VERSION} (not an archive this peftlab reads",
        ),
    ],
)
def test_what_is_no_submission_is_one_line_exit_2(tmp_path, make, words):
    source = make(tmp_path)
    done = here("reproduce", str(source), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert not (tmp_path / "etc").exists() and not (tmp_path / "evil").exists()


def test_a_study_with_pretraining_points_its_runs_at_the_base_the_archive_trains(tmp_path):
    """The default study's configs packed: the study names its base and pretraining configs by their archive
    names, the runs' weights are base/model.safetensors (which the study's pretraining makes there, not packed),
    and no path of the machine is left."""
    study = load_study(REPO / "configs" / "studies" / "default.yaml")
    study_file, places = pack_configs(study, tmp_path, pretrain_dir(study))
    packed = yaml.safe_load((tmp_path / study_file).read_text())
    assert (packed["base"], packed["pretrain"]) == ("downstream.yaml", "pretrain.yaml")
    base = yaml.safe_load((tmp_path / "configs" / "downstream.yaml").read_text())
    assert base["model"]["pretrained"] == "../base/model.safetensors"
    assert not (tmp_path / "base").exists() and places.supplied == []
    for path in (tmp_path / "configs").iterdir():
        assert str(REPO) not in path.read_text()
    reloaded = load_study(tmp_path / study_file)
    assert pretrain_dir(reloaded) == tmp_path / "base" and len(reloaded.runs) == len(study.runs)


def test_reading_an_archive_imports_no_torch():
    code = (
        "import sys\nimport peftlab.analysis.archive.reproduce, peftlab.analysis.archive.received\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def result(
    top1: float, vendor: str = "AuthenticAMD", pinned: bool = True, loss: float = 0.5, branch: str = "AUTO,STRICT"
) -> dict:
    """A completed run's record as compare_runs reads it."""
    return {
        "status": "completed",
        "metrics": {"test_top1": top1, "test_loss": loss},
        "provenance": {
            "arithmetic": {"pinned": pinned, "cpu_vendor": vendor, "mkl_branch": branch},
            "threads": 2,
            "hardware": {"device": "cpu"},
            "versions": {"torch": "2.14.1"},
            "data_sha256": {"train.jsonl": "a" * 64},
            "base_sha256": None,
        },
    }


@pytest.mark.parametrize(
    "rerun, agrees, rule",
    [
        (result(0.80), True, "exact"),  # the same class, pinned: equal
        (result(0.8001), False, "exact"),  # the same class: any difference is one
        (result(0.806, vendor="GenuineIntel"), True, "tolerance"),  # another vendor: within 2 sd of the seeds
        (result(0.83, vendor="GenuineIntel"), False, "tolerance"),
        (result(0.80, pinned=False), True, "tolerance"),  # an unpinned run is never held to its bits
    ],
)
def test_a_rerun_is_compared_exactly_within_its_machine_class_and_by_the_seeds_spread_across(rerun, agrees, rule):
    from peftlab.analysis.archive.rerun import compare_runs

    archived = [result(0.80), result(0.81), result(0.79)]  # mean 0.80, sd 0.01: ± 0.02
    records, lines = compare_runs(
        [{"variant": "lora", "seed": 0, "run_id": "x", "archived": archived[0], "rerun": rerun}], {"lora": archived}
    )
    assert (records[0]["agrees"], records[0]["rule"]) == (agrees, rule), lines
    assert lines[0].startswith("run lora seed 0: " + ("reproduced" if agrees else "differs"))


@pytest.mark.parametrize("pinned", [True, False])
def test_an_archived_metric_the_rerun_did_not_compute_is_a_difference_not_skipped(pinned):
    """A metric the archive records and the rerun leaves null (an older archive's merged score of an exact merge, a
    metric a later peftlab stopped computing) is unverified: the run differs, named, under either rule."""
    from peftlab.analysis.archive.rerun import compare_runs

    archived = [result(0.80, pinned=pinned), result(0.81, pinned=pinned), result(0.79, pinned=pinned)]
    archived[0]["metrics"]["merged_test_top1"] = 0.80
    rerun = result(0.80, pinned=pinned)
    rerun["metrics"]["merged_test_top1"] = None
    records, lines = compare_runs(
        [{"variant": "lora", "seed": 0, "run_id": "x", "archived": archived[0], "rerun": rerun}], {"lora": archived}
    )
    assert not records[0]["agrees"]
    assert records[0]["problems"] == ["merged_test_top1 archived 0.8, the rerun has none"]
    assert lines[0].startswith("run lora seed 0: differs")
    rerun["metrics"]["merged_test_top1"] = 0.80  # computed again: agrees
    assert compare_runs(
        [{"variant": "lora", "seed": 0, "run_id": "x", "archived": archived[0], "rerun": rerun}], {"lora": archived}
    )[0][0]["agrees"]


@pytest.mark.parametrize("top1, agrees", [(0.80, True), (0.8001, False)])
def test_under_the_vendor_free_pin_another_vendors_rerun_is_held_to_the_bits(top1, agrees):
    """MKL's COMPATIBLE branch gives Intel and AMD the same bits (record.VENDOR_FREE_BRANCHES): an AMD run rerun on
    an Intel CPU is compared exactly, and its class names no vendor."""
    from peftlab.analysis.archive.rerun import compare_runs
    from peftlab.analysis.results.record import machine_class, machine_class_text

    compatible = "COMPATIBLE,STRICT"
    archived = [result(0.80, branch=compatible), result(0.81, branch=compatible), result(0.79, branch=compatible)]
    rerun = result(top1, vendor="GenuineIntel", branch=compatible)
    records, lines = compare_runs(
        [{"variant": "lora", "seed": 0, "run_id": "x", "archived": archived[0], "rerun": rerun}], {"lora": archived}
    )
    assert (records[0]["agrees"], records[0]["rule"]) == (agrees, "exact"), lines
    text = machine_class_text(machine_class(rerun))
    assert text == "Intel or AMD CPU, arithmetic pinned (MKL COMPATIBLE,STRICT), 2 threads a run, torch 2.14.1"
    other = result(0.80, vendor="SomeOtherVendor", branch=compatible)  # not a vendor the records cover
    assert machine_class(other)["cpu_vendor"] == "SomeOtherVendor"


@pytest.mark.parametrize(
    "branch, here, noted",
    [
        ("COMPATIBLE,STRICT", "GenuineIntel", False),
        ("AVX2,STRICT", "GenuineIntel", True),
        ("AVX2,STRICT", "AuthenticAMD", False),
    ],
)
def test_another_vendor_is_noted_only_where_the_pin_depends_on_the_vendor(monkeypatch, branch, here, noted):
    from peftlab.analysis.archive import checks

    monkeypatch.setattr(checks, "cpu_vendor", lambda: here)
    record = {"environment": {"arithmetic": {"pinned": True, "cpu_vendor": "AuthenticAMD", "mkl_branch": branch}}}
    notes = checks.environment_notes(record)
    assert (f"CPU vendor {here} here, AuthenticAMD in the runs" in notes) is noted, notes


def test_the_reruns_compute_the_products_the_runs_recorded():
    """An archive of pinned runs of MKL's products (the pin before 2026-11-29: no products recorded) reruns with them
    (reproduce sets MKL's switch), of the pin of 2026-11-29's its switch; one of the pin's products or of unpinned
    runs sets nothing, and reproduce removes a switch its shell left set."""
    from peftlab.analysis.archive.rerun import products_environment
    from peftlab.utils import cpu

    def record(products):
        return {
            "environment": {"arithmetic": {"pinned": True, "mkl_branch": "COMPATIBLE,STRICT", "products": products}}
        }

    assert products_environment(record(None)) == {cpu.PRODUCTS_SWITCH: cpu.PRODUCTS_MKL}
    assert products_environment(record(cpu.PRODUCTS_PIN)) == products_environment({}) == {}
    assert products_environment(record(cpu.PRODUCTS_ONEDNN)) == {cpu.PRODUCTS_SWITCH: "onednn"}  # 2026-11-29's
    unpinned = record(None)
    unpinned["environment"]["arithmetic"]["pinned"] = False
    assert products_environment(unpinned) == {}


def test_a_reruns_study_file_tests_every_merged_model_so_an_archived_merged_score_is_compared(tmp_path):
    """An archive made before exact merges went untested merged (train.merged_test auto) holds an fp32 LoRA run's
    merged test top-1: the rerun's copy of the study file sets always, the rest of its ``set`` kept, so the rerun
    scores it and the comparison has it on both sides; the other config files are copied as they were."""
    from peftlab.analysis.archive.rerun import rerun_configs

    configs = tmp_path / "archive" / "configs"
    configs.mkdir(parents=True)
    study = {"name": "s", "base": "base.yaml", "set": {"train.threads": 1}, "methods": {"lora": {}}}
    (configs / "study.yaml").write_text(yaml.safe_dump(study))
    (configs / "base.yaml").write_text(yaml.safe_dump({"train": {"epochs": 1}}))
    copy = rerun_configs(tmp_path / "archive", "configs/study.yaml", {}, tmp_path / "out")
    assert yaml.safe_load(copy.read_text())["set"] == {"train.threads": 1, "train.merged_test": "always"}
    assert yaml.safe_load((tmp_path / "out" / "base.yaml").read_text()) == {"train": {"epochs": 1}}
