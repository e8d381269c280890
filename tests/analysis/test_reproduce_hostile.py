"""A corpus of hostile archives against ``peftlab reproduce`` (issue 78), each made from one real tiny archive (the
image-folder study of archivefiles.py, its plugin included: one study, packed once per pytest process) as its
author would make it: the change, then every hash the author controls recomputed (the plugin's code hash,
runs.sha256, the paper's \\resultsSha, archive.json, SHA256SUMS), so that only what reproduce refuses by its own
rules stops it.

Every case runs ``peftlab reproduce`` (HOME a folder of the test's, a clean working directory) and holds it to the
same four invariants: no code of the archive ran (its hostile modules write a marker file), nothing outside the
archive and --out was read or written (a secret beside it and in HOME: unchanged, its hash never printed), no
traceback, no hang (a time limit); then the case's own exit status and words. It runs in the test's process
(archivefiles.here: nothing of the archive may be left on this process's path, in its plugins or its modules, or
the code counts as run), but for the cases that give --run-archive-code to an archive whose checks must keep code
that a fresh interpreter would run (a sitecustomize.py, a module named as Python's own, an entry point torch or
Python loads) off the reruns' path: those run in a process of their own, where that code would run.

``CASES`` and ``run_case`` are plain, so that a script can tally them against another version of peftlab.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from archivefiles import NAME, Hang, Here, here
from testkit import REPO

SECRET = "the receiver's own secret\n"
SECRET_SHA = hashlib.sha256(SECRET.encode()).hexdigest()
LIMIT_S = 240  # a hang is a failure, not a wait (a process's wall clock)
LIMIT_CPU_S = 60  # the same in the test's process: CPU seconds (archivefiles.here waits 600 s at most)


@dataclasses.dataclass
class Place:
    """A case's folders: the received copy, outside (a secret, and where hostile code leaves its marker), HOME, the
    working directory reproduce runs in."""

    top: Path

    def __post_init__(self):
        for folder in (self.outside, self.home / ".ssh", self.cwd):
            folder.mkdir(parents=True, exist_ok=True)
        (self.outside / "secret.txt").write_text(SECRET)
        (self.home / ".ssh" / "id_rsa").write_text(SECRET)

    outside = property(lambda self: self.top / "outside")
    home = property(lambda self: self.top / "home")
    cwd = property(lambda self: self.top / "cwd")
    marker = property(lambda self: self.top / "code-ran")

    def secrets_unchanged(self) -> bool:
        """Nothing read or written outside the archive and --out: the secrets' folders as made (HOME's other
        folders are the libraries' caches of a rerun), the working directory holding --out alone."""
        folders = (self.outside, self.home / ".ssh")
        files = {path.relative_to(self.top).as_posix() for top in folders for path in top.rglob("*")}
        return (
            files == {"outside/secret.txt", "home/.ssh/id_rsa"}
            and all((self.top / name).read_text() == SECRET for name in files)
            and {path.name for path in self.cwd.iterdir()} <= {"out"}
        )


def hostile_code(place: Place) -> str:
    """Python that proves it ran: it writes the marker file."""
    return f"open({str(place.marker)!r}, 'w').write('ran')\n"


# --- the author's tools ------------------------------------------------------------------------------------------


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rehash(root: Path) -> None:
    """Every hash the archive's author controls, recomputed from what the folder holds now, and every file reproduce
    makes again from them (issue 86): the plugins' code hashes in archive.json and in the runs' records, the results
    tables, runs.sha256 (a run's generations.jsonl too, where it has one), the paper's \\resultsSha, REPRODUCE.md,
    SHA256SUMS."""
    from peftlab.tuners.plugins import folder_code_sha256

    record = json.loads((root / "archive.json").read_text())
    codes = {}
    for plugin in record.get("plugins") or []:
        if isinstance(plugin, dict) and (root / str(plugin.get("folder"))).is_dir():
            plugin["code_sha256"] = folder_code_sha256(root / plugin["folder"], set(plugin["packages"]))
            codes[plugin.get("distribution")] = plugin["code_sha256"]
    if recorded_codes(root, codes):
        results_tables(root, record)
    lines = []
    for line in (root / "results" / "runs.sha256").read_text().splitlines():
        name = line.split(" ")[0]
        run = root / "results" / "runs" / name
        digests = [sha(run / f) if (run / f).is_file() else "-" for f in ("spec.json", "result.json")]
        digests += [sha(run / "generations.jsonl")] if (run / "generations.jsonl").is_file() else []
        lines.append(f"{name} {' '.join(digests)}\n")
    (root / "results" / "runs.sha256").write_text("".join(lines))
    results = hashlib.sha256("".join(lines).encode()).hexdigest()
    tex = root / "paper" / "results.tex"
    text = re.sub(r"(\\newcommand\{\\resultsSha\}\{)[0-9a-f]{64}", rf"\g<1>{results}", tex.read_text())
    tex.write_text(re.sub(r"(\\newcommand\{\\resultsShaShort\}\{)[0-9a-f]{16}", rf"\g<1>{results[:16]}", text))
    record["results_sha256"] = results
    (root / "archive.json").write_text(json.dumps(record))
    try:  # REPRODUCE.md as the forged archive.json makes it (one whose record reproduce refuses has none to make)
        from peftlab.analysis.archive.regenerate import study_folder
        from peftlab.analysis.archive.reproduce_md import reproduce_md

        with tempfile.TemporaryDirectory() as tmp:
            (root / "REPRODUCE.md").write_text(reproduce_md(root, record, study_folder(root, record, Path(tmp))))
    except Exception:
        pass
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name != "SHA256SUMS" and "data" != p.relative_to(root).parts[0]
    )
    (root / "SHA256SUMS").write_text("".join(f"{sha(root / f)}  {f}\n" for f in files))


def recorded_codes(root: Path, codes: dict[str, str]) -> bool:
    """Each packed run's record of its plugin's code hash made ``codes``' (by distribution); whether one changed."""
    changed = False
    for path in sorted((root / "results" / "runs").glob("*/result.json")):
        result = json.loads(path.read_text())
        provenance = result.get("provenance") if isinstance(result, dict) else None
        plugin = provenance.get("plugin") if isinstance(provenance, dict) else None
        if isinstance(plugin, dict) and plugin.get("code_sha256") != codes.get(plugin.get("distribution"), None):
            if plugin.get("distribution") in codes:
                plugin["code_sha256"] = codes[plugin["distribution"]]
                path.write_text(json.dumps(result, indent=2))
                changed = True
    return changed


def results_tables(root: Path, record: dict) -> None:
    """results.csv and results.parquet as ``peftlab submission`` writes them from the packed runs."""
    from peftlab.analysis.archive.regenerate import study_folder
    from peftlab.analysis.results.load import load_results, typed_frame
    from peftlab.analysis.results.portable import portable_frame

    with tempfile.TemporaryDirectory() as tmp:
        study = study_folder(root, record, Path(tmp))
        table = portable_frame(load_results(study), study)
        table.to_csv(root / "results" / "results.csv", index=False)
        typed_frame(table).to_parquet(root / "results" / "results.parquet", index=False)


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def edit_yaml(path: Path, change: Callable[[dict], None]) -> None:
    import yaml

    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def plugin_folder(root: Path) -> Path:
    (folder,) = (root / "plugins").iterdir()
    return folder


def first_run(root: Path) -> Path:
    return root / "results" / "runs" / (root / "results" / "runs.sha256").read_text().split(" ")[0]


def repack(root: Path, at: Path) -> Path:
    with tarfile.open(at, "w:gz") as tar:
        tar.add(root, arcname=NAME)  # its data too, as a receiver who put it there would pack it
    return at


def raw_tar(path: Path, members: list[tuple[str, bytes, int | None]]) -> Path:
    """A tar.gz of (name, data, the size its header claims) members, written as is (no padding of a lie)."""
    buffer = io.BytesIO()
    for name, data, claimed in members:
        info = tarfile.TarInfo(name)
        info.size = len(data) if claimed is None else claimed
        buffer.write(info.tobuf(format=tarfile.GNU_FORMAT))
        buffer.write(data + b"\0" * (-len(data) % 512))
    buffer.write(b"\0" * 1024)
    import gzip

    path.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=1))
    return path


# --- the cases ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    id: str
    cls: str  # the class: code, gate, paths, escapes, bounds, out, tracebacks
    make: Callable[[Path, Place], tuple[Path, list[str]]]  # (received copy, place) -> (source, extra arguments)
    exit: int
    words: str  # in the last line of stderr (exit 2) or of stdout (exit 1)
    process: bool = False  # consent given, a failed check runs code only a process shows: reproduce in one


def sitecustomize(root: Path, place: Place, name: str = "sitecustomize.py", rehashed: bool = True):
    (plugin_folder(root) / name).write_text(hostile_code(place))
    if rehashed:
        rehash(root)
    return root


def plugin_init(root: Path, place: Place, rehashed: bool):
    (init,) = plugin_folder(root).glob("*/__init__.py")
    init.write_text(hostile_code(place) + init.read_text())
    if rehashed:
        rehash(root)
    return root


def declared_json(root: Path, place: Place):
    (plugin_folder(root) / "json.py").write_text(hostile_code(place) + "from _json import *\n")
    edit_json(root / "archive.json", lambda r: r["plugins"][0]["packages"].append("json"))
    rehash(root)
    return root


def entry_point_elsewhere(root: Path, place: Place):
    (info,) = plugin_folder(root).glob("*.dist-info")
    (info / "entry_points.txt").write_text("[peftlab.methods]\nmlp_bias = antigravity:METHOD\n")
    rehash(root)
    return root


def entry_point_group(group: str):
    """An entry point of another group than peftlab's methods, pointing at a hostile module inside the plugin's
    own package (so that its code hash, recomputed, covers it): ``import torch`` loads torch.backends' itself."""

    def make(root: Path, place: Place):
        (package,) = (p for p in plugin_folder(root).iterdir() if not p.name.endswith(".dist-info"))
        (package / "zen.py").write_text(hostile_code(place) + "def run():\n    pass\n")
        (info,) = plugin_folder(root).glob("*.dist-info")
        points = info / "entry_points.txt"
        points.write_text(points.read_text() + f"\n[{group}]\nzen = {package.name}.zen:run\n")
        rehash(root)
        return root

    return make


def dist_info_file(name: str):
    """A file that is no metadata in the plugin's dist-info, the code hash and SHA256SUMS recomputed."""

    def make(root: Path, place: Place):
        (info,) = plugin_folder(root).glob("*.dist-info")
        (info / name).write_text(hostile_code(place))
        rehash(root)
        return root

    return make


def runs_code_hash(root: Path, place: Place) -> tuple[Path, list[str]]:
    """Consent bound to the code hash the runs recorded (archive.json's, REPRODUCE.md's): not the listed files'."""
    plugin_init(root, place, True)
    code = json.loads((root / "archive.json").read_text())["plugins"][0]["code_sha256"]
    return root, [*RERUN, f"{CODE}={code[:16]}"]


def data_key(key: str):
    def make(root: Path, place: Place):
        edit_json(root / "archive.json", lambda r: r["data"][0]["sha256"].update({key: "0" * 64}))
        rehash(root)
        return root

    return make


def config_field(file: str, change: Callable[[dict, Place], None]):
    def make(root: Path, place: Place):
        edit_yaml(root / "configs" / file, lambda data: change(data, place))
        rehash(root)
        return root

    return make


def spec_field(key: str, value, file: str = "spec.json"):
    def make(root: Path, place: Place):
        edit_json(first_run(root) / file, lambda d: d.update({key: value}))
        rehash(root)
        return root

    return make


def runs_line(name: str):
    def make(root: Path, place: Place):
        path = root / "results" / "runs.sha256"
        path.write_text(path.read_text() + f"{name} - -\n")
        (root / "SHA256SUMS").write_text(re.sub(r"\S+  results/runs.sha256", f"{sha(path)}  results/runs.sha256",
                                                (root / "SHA256SUMS").read_text()))  # fmt: skip
        return root

    return make


def escape_in_version(root: Path, place: Place):
    edit_json(
        root / "archive.json", lambda r: r["environment"]["versions"].update({"torch": "\x1b]0;owned\x07\x1b[2J"})
    )
    edit_json(first_run(root) / "spec.json", lambda d: d.update({"variant": "lora\u202e\x1b[2J"}))
    rehash(root)
    return root


def link_to(where: str, target: Callable[[Place], Path]):
    def make(root: Path, place: Place):
        path = root / where
        path.unlink()
        path.symlink_to(target(place))
        return root

    return make


def fifo(root: Path, place: Place):
    os.mkfifo(root / "results" / "runs" / "fifo")
    return root


def many_members(root: Path, place: Place):
    return raw_tar(place.top / "many.tar.gz", [(f"{NAME}/m/{n}", b"", None) for n in range(30_000)])


def huge_member(root: Path, place: Place):
    return raw_tar(place.top / "huge.tar.gz", [(f"{NAME}/archive.json", b"{}", None), (f"{NAME}/big", b"", 3 << 30)])


def long_name(root: Path, place: Place):
    return raw_tar(place.top / "long.tar.gz", [(f"{NAME}/" + "d/" * 40 + "x", b"x", None)])


def added_files(root: Path, place: Place):
    for n in range(300):
        (root / "results" / f"added-{n}.txt").write_text("x")
    return root


def as_tar(make):
    def tarred(root: Path, place: Place):
        return repack(make(root, place), place.top / f"{NAME}.tar.gz")

    return tarred


def user_out(root: Path, place: Place):
    (place.cwd / "out" / "configs").mkdir(parents=True)
    (place.cwd / "out" / "configs" / "base.yaml").write_text(SECRET)
    return root


def other_archive_out(root: Path, place: Place):
    other = place.top / "other"
    shutil.copytree(root, other, symlinks=True)
    edit_json(other / "archive.json", lambda r: r.update({"name": "another"}))
    rehash(other)
    done = reproduce(other, place, "--runs", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def linked_out(where: str):
    def make(root: Path, place: Place):
        done = reproduce(root, place, "--runs", "0")
        assert done.returncode == 0, done.stdout + done.stderr
        (place.cwd / "out" / where).parent.mkdir(parents=True, exist_ok=True)
        (place.cwd / "out" / where).symlink_to(place.outside, target_is_directory=True)
        return root

    return make


def wrapped(make):
    """A case maker as ``Case.make``: (source, extra arguments)."""

    def run(root: Path, place: Place) -> tuple[Path, list[str]]:
        return make(root, place), []

    return run


def with_args(make, *args: str):
    def run(root: Path, place: Place) -> tuple[Path, list[str]]:
        return make(root, place), list(args)

    return run


RERUN = ("--runs", "1")
CODE = "--run-archive-code"
OUTSIDE_KEY = "../../outside/secret.txt"
CASES = [
    # 1. nothing from an archive runs unless asked; with the option, its declared packages alone
    Case("sitecustomize", "code", with_args(sitecustomize, *RERUN), 1, "sitecustomize.py is none of its packages"),
    Case("sitecustomize-allowed", "code", with_args(sitecustomize, *RERUN, CODE), 1, "sitecustomize.py is none", True),
    Case(
        "json-py-allowed",
        "code",
        with_args(lambda r, p: sitecustomize(r, p, "json.py"), *RERUN, CODE),
        1,
        "json.py is none of its packages",
        True,
    ),  # fmt: skip
    Case(
        "declared-json",
        "code",
        with_args(declared_json, *RERUN, CODE),
        1,
        "has the name of Python's own module",
        True,
    ),  # fmt: skip
    Case(
        "entry-point-elsewhere",
        "code",
        with_args(entry_point_elsewhere, *RERUN, CODE),
        1,
        "its method mlp_bias points outside its packages",
        True,
    ),  # fmt: skip
    Case(
        "entry-point-torch-backends",
        "code",
        with_args(entry_point_group("torch.backends"), *RERUN, CODE),
        1,
        "declares [torch.backends] zen = peftlab_mlpbias.zen:run",
        True,
    ),  # fmt: skip
    Case(
        "entry-point-console-scripts-check",
        "code",
        with_args(entry_point_group("console_scripts"), "--runs", "0"),
        1,
        "not reproduced: 1 difference: plugin peftlab-mlpbias 0.1 in plugins/peftlab-mlpbias-0.1: its entry_points",
    ),  # fmt: skip
    Case("dist-info-pth-check", "code", with_args(dist_info_file("zen.pth"), "--runs", "0"), 1, "is no metadata file"),
    # consent bound to the listed code's SHA-256: another hash (the runs' code hash too) is refused before any import
    Case(
        "consent-hash-other",
        "code",
        with_args(lambda r, p: plugin_init(r, p, True), *RERUN, f"{CODE}=000000000000"),
        2,
        "--run-archive-code=000000000000 is not the archive's code: its files hash to ",
    ),  # fmt: skip
    Case("consent-hash-of-runs", "code", runs_code_hash, 2, "is not the archive's code"),
    Case(
        "consent-hash-short",
        "code",
        with_args(lambda r, p: plugin_init(r, p, True), *RERUN, f"{CODE}=885c387c"),
        2,
        "expected the first 12 to 64 hex digits",
    ),  # fmt: skip
    Case("plugin-code-unasked", "code", with_args(lambda r, p: plugin_init(r, p, True), *RERUN), 2, CODE),
    Case("plugin-code-unasked-tar", "code", with_args(as_tar(lambda r, p: plugin_init(r, p, True)), *RERUN), 2, CODE),
    # 2. a failed check stops the rerun before anything imports
    Case(
        "plugin-hash-wrong",
        "gate",
        with_args(lambda r, p: plugin_init(r, p, False), *RERUN, CODE),
        1,
        "not reproduced: no run was rerun",
    ),  # fmt: skip
    Case("sums-missing", "gate", with_args(added_files, *RERUN, CODE), 1, "and 299 more"),
    # 3. every path an archive names stays inside it
    Case("data-key-environ", "paths", wrapped(data_key("/proc/self/environ")), 2, "data[0].sha256"),
    Case("data-key-mem", "paths", wrapped(data_key("/proc/self/mem")), 2, "data[0].sha256"),
    Case("data-key-home", "paths", wrapped(data_key("~/.ssh/id_rsa")), 2, "data[0].sha256"),
    Case("data-key-dotdot", "paths", wrapped(data_key(OUTSIDE_KEY)), 2, "data[0].sha256"),
    Case(
        "base-outside",
        "paths",
        wrapped(config_field("study.yaml", lambda d, p: d.update({"base": str(p.outside / "secret.txt")}))),
        2,
        "base=",
    ),  # fmt: skip
    Case(
        "pretrained-home",
        "paths",
        wrapped(config_field("base.yaml", lambda d, p: d["model"].update({"pretrained": "~/.ssh/id_rsa"}))),
        2,
        "model.pretrained='~/.ssh/id_rsa' names the home folder",
    ),  # fmt: skip
    Case(
        "data-root-home",
        "paths",
        wrapped(config_field("base.yaml", lambda d, p: d["data"].update({"root": "~/.ssh"}))),
        2,
        "data.root='~/.ssh'",
    ),  # fmt: skip
    Case(
        "data-root-dotdot",
        "paths",
        wrapped(config_field("base.yaml", lambda d, p: d["data"].update({"root": "../../outside"}))),
        2,
        "leaves the archive",
    ),  # fmt: skip
    Case(
        "set-root-absolute",
        "paths",
        wrapped(config_field("study.yaml", lambda d, p: d.update({"set": {"data.root": str(p.outside)}}))),
        2,
        "set.data.root=",
    ),  # fmt: skip
    Case("runs-line-dotdot", "paths", wrapped(runs_line("../../../outside")), 2, "results/runs.sha256 line"),
    Case(
        "result-link",
        "paths",
        wrapped(link_to("results/runs.sha256", lambda p: p.outside / "secret.txt")),
        2,
        "symbolic link",
    ),  # fmt: skip
    Case("fifo", "paths", wrapped(fifo), 2, "is a FIFO"),
    # 4. received texts reach the terminal escaped, reproduce.json keeps them
    # a label edited with every hash recomputed: named by the table regenerated from the runs (issue 79)
    Case("escapes", "escapes", with_args(escape_in_version, "--runs", "0"), 1, "not reproduced: "),
    # 5. unpacking is bounded
    Case("members", "bounds", wrapped(many_members), 2, "more than 20,000 members"),
    Case("huge-member", "bounds", wrapped(huge_member), 2, "unpacks to more than 2 GiB"),
    Case("deep-name", "bounds", wrapped(long_name), 2, "lies deeper than 32 folders"),
    Case("added-files", "bounds", with_args(added_files, "--runs", "0"), 1, "and 297 more"),
    # 6. --out is peftlab's
    Case("out-user-files", "out", wrapped(user_out), 2, "holds files that no `peftlab reproduce` made"),
    Case("out-other-archive", "out", wrapped(other_archive_out), 2, "holds the reproduction of another archive"),
    Case("out-link-rerun", "out", wrapped(linked_out("rerun")), 2, "symbolic link"),
    Case("out-link-configs", "out", wrapped(linked_out("configs")), 2, "symbolic link"),
    # 7. tracebacks of reproduce itself
    Case("runs-superscript", "tracebacks", with_args(lambda r, p: r, "--runs", "²"), 2, "--runs '²' is invalid"),
    Case(
        "spec-variant-list",
        "tracebacks",
        wrapped(spec_field("variant", ["lora"])),
        2,
        "spec.json is invalid: variant is ['lora']",
    ),  # fmt: skip
    Case(
        "result-provenance-string",
        "tracebacks",
        wrapped(spec_field("provenance", "x", "result.json")),
        2,
        "result.json is invalid: provenance is 'x'",
    ),  # fmt: skip
]


def reproduce(source: Path, place: Place, *args: str, process: bool = False):
    """``peftlab reproduce SOURCE --out out --quiet ARGS`` from the place's working directory, HOME the place's: in
    this process (``here``: what it left of the archive, ``left``, counts as its code run), or in a process of its
    own (``left`` empty: what ran there ended with it, and the marker file says whether it ran)."""
    argv = ["reproduce", str(source), "--out", "out", "--quiet", *args]
    if not process:
        return here(*argv, cwd=place.cwd, env={"HOME": str(place.home)}, watch=place.top, cpu_s=LIMIT_CPU_S)
    env = dict(os.environ, HOME=str(place.home), PYTHONPATH=str(REPO / "src"))
    done = subprocess.run(
        [sys.executable, "-m", "peftlab", *argv],
        cwd=place.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )
    return Here(done.returncode, done.stdout, done.stderr, [])


@dataclasses.dataclass
class Outcome:
    hang: bool
    traceback: bool
    code_ran: bool
    outside: bool  # a file outside changed, or a secret's hash printed
    refused: bool  # the exit status and the words the case expects
    output: str


def run_case(case: Case, pristine: Path, top: Path) -> Outcome:
    place = Place(top)
    root = top / "received" / NAME
    shutil.copytree(pristine, root, symlinks=True)
    source, args = case.make(root, place)
    try:
        done = reproduce(source, place, *args, process=case.process)
    except (subprocess.TimeoutExpired, Hang) as err:
        return Outcome(True, False, place.marker.exists(), not place.secrets_unchanged(), False, str(err))
    output = done.stdout + done.stderr + "".join(f"\nleft in the test's process: {what}" for what in done.left)
    last = (done.stderr if done.returncode == 2 else done.stdout).strip().splitlines()[-1:] or [""]
    return Outcome(
        hang=False,
        traceback="Traceback" in output or (done.returncode == 2 and done.stderr.count("\n") != 1),
        code_ran=place.marker.exists() or bool(done.left),
        outside=not place.secrets_unchanged() or SECRET_SHA[:12] in output,
        refused=done.returncode == case.exit and case.words in last[0],
        output=output[-3000:],
    )


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=[f"{case.cls}-{case.id}" for case in CASES])
def test_a_hostile_archive_runs_no_code_reaches_nothing_outside_and_ends_in_one_line(case, pristine, tmp_path):
    outcome = run_case(case, pristine, tmp_path)
    assert not outcome.hang, outcome.output
    assert not outcome.traceback, outcome.output
    assert not outcome.code_ran, outcome.output
    assert not outcome.outside, outcome.output
    assert outcome.refused, (case.exit, case.words, outcome.output)


@pytest.mark.e2e
def test_received_texts_are_escaped_on_the_terminal_and_kept_in_reproduce_json(pristine, tmp_path):
    """An escape sequence in a recorded version and a right-to-left override in every run's label: shown as codes
    on the terminal (the labels, edited with every hash recomputed, are named by the table regenerated from the
    runs, which stops the reruns), kept raw in reproduce.json."""
    place = Place(tmp_path)
    root = tmp_path / "received" / NAME
    shutil.copytree(pristine, root)
    escape_in_version(root, place)
    for spec in (root / "results" / "runs").glob("*/spec.json"):
        edit_json(spec, lambda d: d.update({"variant": d["variant"] + "\u202e\x1b[2J"}))
    rehash(root)
    done = reproduce(root, place, "--runs", "1", "--run-archive-code")
    assert done.returncode == 1 and done.left == [], (done.stdout + done.stderr, done.left)
    assert "\x1b" not in done.stdout + done.stderr and "\u202e" not in done.stdout + done.stderr
    assert "here, \\x1b]0;owned\\x07\\x1b[2J in the runs" in done.stdout, done.stdout
    assert "variant lora (the runs give lora\\u202e\\x1b[2J)" in done.stdout, done.stdout
    record = json.loads((place.cwd / "out" / "reproduce.json").read_text())
    assert any("\x1b]0;owned\x07\x1b[2J" in note for note in record["environment"])  # the raw value, as JSON
    assert any("\u202e\x1b[2J" in line for line in record["differences"]) and record["compared"] == []


@pytest.mark.e2e
def test_an_out_folder_of_the_same_archive_is_resumed_and_a_reproduction_of_a_clean_archive_agrees(pristine, tmp_path):
    """The clean archive (--runs 0) twice into one --out: the second resumes it (the same archive), and says the
    same."""
    place = Place(tmp_path)
    root = tmp_path / "received" / NAME
    shutil.copytree(pristine, root)
    first = reproduce(root, place, "--runs", "0")
    again = reproduce(root, place, "--runs", "0")
    assert first.returncode == again.returncode == 0, first.stdout + again.stdout + again.stderr
    assert first.left == again.left == [], first.left + again.left  # --runs 0 imports nothing of the archive
    assert first.stdout.splitlines()[-1] == again.stdout.splitlines()[-1]
    assert json.loads((place.cwd / "out" / "reproduce-of.json").read_text())["source"] == str(root)


@pytest.mark.e2e
def test_consented_code_is_listed_first_and_what_it_raises_ends_in_the_verdict_and_reproduce_json(pristine, tmp_path):
    """The plugin's dist-info holding every metadata file pip writes (intact at --runs 0), and an __init__.py that
    raises: --runs 0 prints the listing (its file's own SHA-256 printed; each file as the archive holds it); consent
    bound to that hash puts exactly the listed files on the path, and what the code raises is the verdict's one
    line and reproduce.json's, exit 1, no traceback."""
    place = Place(tmp_path)
    root = tmp_path / "received" / NAME
    shutil.copytree(pristine, root)
    (info,) = plugin_folder(root).glob("*.dist-info")
    for name in ("RECORD", "WHEEL", "INSTALLER", "REQUESTED", "direct_url.json", "LICENSE.txt", "licenses/MIT"):
        (info / name).parent.mkdir(exist_ok=True)
        (info / name).write_text("metadata\n")
    (init,) = plugin_folder(root).glob("*/__init__.py")
    init.write_text("raise RuntimeError('the plugin fails')\n" + init.read_text())
    rehash(root)
    checked = reproduce(root, place, "--runs", "0")
    assert checked.returncode == 0 and "archive intact: yes" in checked.stdout, checked.stdout + checked.stderr
    code = re.search(r"^archive code SHA-256: ([0-9a-f]{64}) over 5 files", checked.stdout, re.M).group(1)
    listing = place.cwd / "out" / "plugin-code.txt"
    assert hashlib.sha256(listing.read_bytes()).hexdigest() == code
    listed = [line.split("  ") for line in listing.read_text().splitlines()]
    assert all(
        sha(root / name) == digest and (root / name).stat().st_size == int(size) for digest, size, name in listed
    )

    done = reproduce(root, place, "--runs", "1", f"{CODE}={code[:12].upper()}", process=True)  # the code runs
    assert done.returncode == 1 and done.stderr == "" and "Traceback" not in done.stdout, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    shown = next(n for n, line in enumerate(lines) if line.startswith("archive code SHA-256: "))
    assert shown < next(n for n, line in enumerate(lines) if line.startswith("rerunning ")), done.stdout
    copied = place.cwd / "out" / "plugin-code" / plugin_folder(root).name
    on_path = sorted(
        f"plugins/{p.relative_to(copied.parent).as_posix()}"
        for p in copied.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts  # what Python compiled of the listed sources
    )
    assert on_path == sorted(name for _, _, name in listed) and not any("RECORD" in name for name in on_path)
    stopped = "the reruns stopped with the archive's plugin code on the path: "
    assert (
        lines[-1].startswith(f"not reproduced: 1 difference: {stopped}")
        and "RuntimeError: the plugin fails" in lines[-1]
    )
    record = json.loads((place.cwd / "out" / "reproduce.json").read_text())
    assert record["verdict"] == lines[-1] and record["plugin_code"]["sha256"] == code and record["compared"] == []
