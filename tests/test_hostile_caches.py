"""Hostile caches: ``peftlab cache clear`` removes only what peftlab wrote (its own entries, by name, in a
folder it marked or that holds nothing else) and refuses ``/``, the home folder, an ancestor of it and a
folder holding anything else; ``peftlab cache`` lists every odd folder in one line or a listing; a record is
never trusted over the live answer (a weights file rewritten in place, a record forged with a checksum
anyone can compute).

Every case asserts the exit status, one line on stderr, no traceback, and that no file outside peftlab's
own entries changed. A fence makes any removal outside the test's folder an error, so a regression can
never clear ``/`` or the real home folder.
"""

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from testkit import TINY_MODEL, cli_in_process

from peftlab.cli.cache import tree_bytes


@pytest.fixture(autouse=True)
def fence(tmp_path, monkeypatch):
    """Every removal outside ``tmp_path`` fails the test before anything is removed."""

    def inside(path, dir_fd=None) -> None:
        where = Path(os.readlink(f"/proc/self/fd/{dir_fd}")) / path if dir_fd is not None else Path(path)
        assert Path(os.path.abspath(where)).is_relative_to(tmp_path), f"removal outside the test: {where}"

    real_rmtree, real_unlink, real_rmdir = shutil.rmtree, os.unlink, os.rmdir

    def rmtree(path, *args, **kwargs):
        inside(path, kwargs.get("dir_fd"))
        return real_rmtree(path, *args, **kwargs)

    def unlink(path, *, dir_fd=None):
        inside(path, dir_fd)
        return real_unlink(path, dir_fd=dir_fd)

    def rmdir(path, *, dir_fd=None):
        inside(path, dir_fd)
        return real_rmdir(path, dir_fd=dir_fd)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "remove", unlink)
    monkeypatch.setattr(os, "rmdir", rmdir)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home folder of the user's files (under tmp_path), $HOME pointing at it, and peftlab's caches
    elsewhere unless a case says otherwise."""
    home = tmp_path / "root" / "home" / "user"
    for name, text in ((".ssh/authorized_keys", "ssh-ed25519 AAAA me"), (".bashrc", "alias x=y"), ("thesis.tex", "x")):
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text(text)
    (home / "decoded").mkdir()  # a name of peftlab's own among the user's files
    (home / "decoded" / "mine.npy").write_bytes(b"mine")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PEFTLAB_DATA_CACHE", str(tmp_path / "data"))
    monkeypatch.setenv("PEFTLAB_MODEL_CACHE", str(tmp_path / "models"))
    return home


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed): its kind and content (a file's SHA-256, a link's
    target)."""
    seen = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top) / name
            if path.is_symlink():
                seen[str(path)] = f"link {os.readlink(path)}"
            elif path.is_dir():
                seen[str(path)] = "dir"
            else:
                seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def run(*argv: str) -> tuple[int, str]:
    """(exit status, stderr) of ``peftlab ARGV`` in this process; a traceback fails the case."""
    status, stderr, _, _ = cli_in_process(*argv)
    assert "Traceback" not in stderr, stderr
    return status, stderr


def assert_one_line(status: int, stderr: str, *needles: str) -> None:
    assert status == 2 and stderr.startswith("peftlab: error: ") and stderr.count("\n") == 1, (status, stderr)
    assert all(needle in stderr for needle in needles), stderr


def lost(before: dict[str, str], after: dict[str, str], own: list[Path]) -> list[str]:
    """What changed under the test's folder outside peftlab's own entries ``own``."""
    return [
        path
        for path in sorted(set(before) | set(after))
        if before.get(path) != after.get(path) and not any(Path(path).is_relative_to(o) for o in own)
    ]


def peftlab_cache(root: Path) -> list[Path]:
    """A data cache as peftlab writes it (decoded splits, manifests, header checks, a download, the fortunes
    task), without a marker: one an earlier peftlab wrote. Returns its entries."""
    files = {
        "decoded/abc.npy": b"0" * 2048,
        "manifests/k.json": b"{}",
        "manifests/k.json.lock": b"",
        "image-headers/h.json": b"{}",
        "mnist/MNIST/raw/train-images-idx3-ubyte": b"idx",
        "fortunes/task/train.jsonl": b"{}",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return [root / name for name in ("decoded", "manifests", "image-headers", "mnist", "fortunes")]


def refused_root(tmp_path, home, where: str) -> tuple[str, str]:
    """(the value of $PEFTLAB_DATA_CACHE, what the refusal names) for each hostile root."""
    if where == "/":
        return "/", "/"
    if where == "~":
        return "~", str(home)
    if where == "home":
        return str(home), str(home)
    if where == "home by a link":
        (tmp_path / "link-to-home").symlink_to(home)
        return str(tmp_path / "link-to-home"), "home folder"
    if where == "an ancestor of home":
        return str(home.parent.parent), str(home.parent.parent)
    folder = tmp_path / "datasets"
    if where == "a datasets folder":
        (folder / "imagenet" / "n01").mkdir(parents=True)
        (folder / "imagenet" / "n01" / "a.JPEG").write_bytes(b"jpeg")
        (folder / "cifar10").mkdir()
        (folder / "cifar10" / "mine.bin").write_bytes(b"mine")
        (folder / "notes.txt").write_text("my notes")
        return str(folder), "imagenet"
    if where == "a marked cache with a user file":
        from peftlab.data.sources import decoded_cache_dir, writable_cache_dir

        os.environ["PEFTLAB_DATA_CACHE"] = str(folder)
        writable_cache_dir(decoded_cache_dir())  # peftlab creates (and marks) its cache
        peftlab_cache(folder)
        (folder / "thesis.tex").write_text("mine")
        return str(folder), "thesis.tex"
    if where == "a legacy cache with a user file":
        peftlab_cache(folder)
        (folder / "thesis.tex").write_text("mine")
        return str(folder), "thesis.tex"
    if where == "a record-named folder's files":
        peftlab_cache(folder)
        (folder / "decoded.bak").mkdir()
        return str(folder), "decoded.bak"
    raise AssertionError(where)


ROOTS = [
    "/",
    "~",
    "home",
    "home by a link",
    "an ancestor of home",
    "a datasets folder",
    "a marked cache with a user file",
    "a legacy cache with a user file",
    "a record-named folder's files",
]


@pytest.mark.parametrize("where", ROOTS)
def test_clearing_the_data_cache_refuses_a_root_that_is_not_peftlabs_alone(tmp_path, home, monkeypatch, where):
    """The red team's `PEFTLAB_DATA_CACHE='~' peftlab cache clear --data` removed .ssh and a thesis."""
    value, named = refused_root(tmp_path, home, where)
    monkeypatch.setenv("PEFTLAB_DATA_CACHE", value)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / f"structure-{'0' * 32}.json").write_text("{}")
    before = snapshot(tmp_path)
    status, stderr = run("cache", "clear", "--data")
    assert_one_line(status, stderr, named)
    assert snapshot(tmp_path) == before  # nothing deleted, the records neither: the whole command refused


@pytest.mark.parametrize("where", ["/", "home", "an ancestor of home", "a folder of the user's files"])
def test_clearing_the_model_records_refuses_a_root_that_is_not_peftlabs_alone(tmp_path, home, monkeypatch, where):
    folder = {"/": Path("/"), "home": home, "an ancestor of home": home.parent}.get(where, tmp_path / "mine")
    if where == "a folder of the user's files":
        folder.mkdir()
        (folder / "notes.json").write_text("{}")
        (folder / f"counts-{'a' * 32}.json").write_text("{}")  # named like a record, among the user's files
    else:
        (home / f"counts-{'a' * 32}.json").write_text("{}")
    monkeypatch.setenv("PEFTLAB_MODEL_CACHE", str(folder))
    before = snapshot(tmp_path)
    status, stderr = run("cache", "clear")
    assert_one_line(status, stderr, str(folder) if where != "a folder of the user's files" else "notes.json")
    assert snapshot(tmp_path) == before


def test_a_legacy_data_cache_of_peftlabs_entries_alone_is_cleared_and_marked(tmp_path, home, capsys):
    root = tmp_path / "data"
    own = peftlab_cache(root)
    (root / "vtab1k" / "caltech101").mkdir(parents=True)  # a suite's data the user placed: read, never written
    (root / "vtab1k" / "caltech101" / "train800.txt").write_text("x 0\n")
    before = snapshot(tmp_path)
    status, stderr = run("cache", "clear", "--data")
    assert (status, stderr) == (0, "")
    assert not any(path.exists() for path in own)
    assert lost(before, snapshot(tmp_path), own) == [str(root / ".peftlab-cache")]  # marked now
    assert sorted(p.name for p in root.iterdir()) == [".peftlab-cache", "vtab1k"]
    assert main_again_lists(capsys, root)


def main_again_lists(capsys, root: Path) -> bool:
    """A second clear of the cleared (now marked) cache removes nothing and says so."""
    capsys.readouterr()
    status, _ = run("cache", "clear", "--data")
    return status == 0 and (root / "vtab1k" / "caltech101" / "train800.txt").exists()


def test_links_inside_a_cache_are_removed_as_links_never_followed(tmp_path, home):
    outside = tmp_path / "outside"
    (outside / "kept").mkdir(parents=True)
    (outside / "kept" / "thesis.tex").write_text("mine")
    (outside / "file.json").write_text("mine")
    root, records = tmp_path / "data", tmp_path / "models"
    own = peftlab_cache(root)
    (root / "decoded").rename(root / "decoded-real")
    shutil.rmtree(root / "decoded-real")
    (root / "decoded").symlink_to(outside / "kept")
    (root / "manifests" / "link.json").symlink_to(outside / "file.json")
    records.mkdir()
    (records / f"structure-{'b' * 32}.json").symlink_to(outside / "file.json")
    before = snapshot(tmp_path)
    status, stderr = run("cache", "clear", "--data")
    assert (status, stderr) == (0, "")
    after = snapshot(tmp_path)
    assert lost(before, after, [*own, records]) == [str(root / ".peftlab-cache")]
    assert not os.path.lexists(root / "decoded") and not os.path.lexists(records / f"structure-{'b' * 32}.json")
    assert (outside / "kept" / "thesis.tex").read_text() == "mine" and (outside / "file.json").read_text() == "mine"


def vanishing_scandir(monkeypatch, name: str):
    """``os.scandir`` that deletes the file ``name`` after listing its folder, before it is measured: a file
    that vanishes while ``cache list`` walks (the red team's PEFTLAB_DATA_CACHE=/)."""
    real = os.scandir

    class Listing:
        def __init__(self, path):
            with real(path) as it:
                entries = list(it)
            for entry in entries:
                if entry.name == name and not isinstance(path, int):  # rmtree lists by descriptor: names alone
                    os.unlink(entry.path)
            self.entries = iter(entries)

        def __iter__(self):
            return self

        def __next__(self):
            return next(self.entries)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def close(self):
            pass

    monkeypatch.setattr(os, "scandir", Listing)


def listing_case(tmp_path, home, monkeypatch, case: str) -> None:
    data, records = tmp_path / "data", tmp_path / "models"
    peftlab_cache(data)
    records.mkdir()
    if case == "a folder named like a record":
        (records / f"structure-{'c' * 32}.json").mkdir()
    elif case == "the records folder a file":
        records.rmdir()
        records.write_text("not a folder")
    elif case == "the data cache a file":
        shutil.rmtree(data)
        data.write_text("not a folder")
    elif case == "the data cache a FIFO":
        shutil.rmtree(data)
        os.mkfifo(data)
    elif case == "a name too long for the system":
        monkeypatch.setenv("PEFTLAB_DATA_CACHE", str(tmp_path / ("x" * 300) / "data"))
    elif case == "the data cache /":
        monkeypatch.setenv("PEFTLAB_DATA_CACHE", "/")
    elif case == "a file vanishing while measured":
        (data / "decoded" / "vanishing.npy").write_bytes(b"0" * 10)
        vanishing_scandir(monkeypatch, "vanishing.npy")
    elif case == "an unreadable folder inside":
        (data / "decoded" / "locked").mkdir()
        (data / "decoded" / "locked" / "x.npy").write_bytes(b"0")
        (data / "decoded" / "locked").chmod(0)
    else:
        raise AssertionError(case)


LISTINGS = [
    "a folder named like a record",
    "the records folder a file",
    "the data cache a file",
    "the data cache a FIFO",
    "a name too long for the system",
    "the data cache /",
    "a file vanishing while measured",
    "an unreadable folder inside",
]


@pytest.mark.parametrize("json_out", [False, True])
@pytest.mark.parametrize("case", LISTINGS)
def test_cache_lists_every_odd_folder_in_one_line_or_a_listing(tmp_path, home, monkeypatch, case, json_out):
    listing_case(tmp_path, home, monkeypatch, case)
    before = snapshot(tmp_path / "root")
    status, stderr, cpu, _ = cli_in_process("cache", "list", *(["--json"] if json_out else []))
    assert "Traceback" not in stderr
    assert status == 0 and stderr == "" or (status == 2 and stderr.count("\n") == 1), (status, stderr)
    assert cpu < 10  # `/` is not walked whole
    assert snapshot(tmp_path / "root") == before
    os.chmod(tmp_path, 0o755)
    for locked in tmp_path.rglob("locked"):
        locked.chmod(0o755)


@pytest.mark.parametrize("case", LISTINGS)
def test_cache_clear_of_every_odd_folder_is_one_line_or_done(tmp_path, home, monkeypatch, case):
    listing_case(tmp_path, home, monkeypatch, case)
    before = snapshot(tmp_path / "root")
    status, stderr, _, _ = cli_in_process("cache", "clear", "--data")
    assert "Traceback" not in stderr
    assert (status, stderr) == (0, "") or (status == 2 and stderr.count("\n") == 1), (status, stderr)
    if case == "the data cache /":
        assert status == 2
    assert snapshot(tmp_path / "root") == before
    for locked in tmp_path.rglob("locked"):
        locked.chmod(0o755)


def test_tree_bytes_skips_what_vanishes_and_what_it_cannot_read(tmp_path, monkeypatch):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one").write_bytes(b"0" * 100)
    (tmp_path / "a" / "b" / "vanishing").write_bytes(b"0" * 10)
    vanishing_scandir(monkeypatch, "vanishing")
    assert tree_bytes(tmp_path / "a") == 100


# --- records trusted over the live answer


def weights_config(tmp_path) -> tuple[Path, Path]:
    """A run config whose tiny ViT starts from a local safetensors file (timm's keys), and that file."""
    import timm
    import yaml
    from safetensors.torch import save_file

    model = timm.create_model(
        TINY_MODEL["name"], num_classes=10, **{k: v for k, v in TINY_MODEL.items() if k != "name"}
    )
    weights = tmp_path / "base.safetensors"
    save_file(model.state_dict(), str(weights))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {**TINY_MODEL, "pretrained": str(weights)}, "method": {"name": "lora"}}))
    return config, weights


def write_nan_in_place(path: Path, key: str) -> None:
    """A NaN written over one value of ``key``, in place: the same size and inode, the times put back."""
    before = path.stat()
    with open(path, "r+b") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        f.seek(8 + length + header[key]["data_offsets"][0])
        f.write(struct.pack("<f", float("nan")))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (before.st_size, before.st_ino, before.st_mtime_ns)


def test_nans_written_in_place_under_a_warm_record_are_refused_as_the_live_check_refuses(tmp_path, home):
    config, weights = weights_config(tmp_path)
    assert run("validate", str(config)) == (0, "")
    assert run("validate", str(config)) == (0, "")  # warm
    write_nan_in_place(weights, "blocks.1.mlp.fc1.weight")
    status, stderr = run("validate", str(config))
    assert_one_line(status, stderr, "holds non-finite values")


def forge(record_file: Path, edit) -> None:
    """Edit a record and recompute its checksum as anyone can: SHA-256 of the canonical JSON of the rest."""
    record = json.loads(record_file.read_text())
    edit(record["body"])
    field = next(k for k in ("sha256", "hmac_sha256") if k in record)
    rest = {k: v for k, v in record.items() if k != field}
    record[field] = hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    record_file.write_text(json.dumps(record))


def test_a_forged_structure_record_is_rebuilt_not_believed(tmp_path, home, capsys):
    import yaml

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL, "method": {"name": "lora"}}))
    from peftlab.cli import main

    assert main(["params", str(config), "--num-classes", "10"]) == 0
    honest = capsys.readouterr().out
    (record,) = (tmp_path / "models").glob("structure-*.json")
    forge(record, lambda body: body.update(total=815_890_192))
    assert main(["params", str(config), "--num-classes", "10"]) == 0
    assert capsys.readouterr().out == honest


@pytest.mark.parametrize("damage", ["absent", "empty", "a link", "a folder", "readable by others"])
def test_a_missing_or_damaged_record_key_means_every_record_is_rebuilt(tmp_path, home, capsys, damage):
    import yaml

    from peftlab.cli import main
    from peftlab.records import store

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL, "method": {"name": "lora"}}))
    assert main(["params", str(config), "--num-classes", "10"]) == 0
    honest = capsys.readouterr().out
    key = tmp_path / "models" / store.KEY_NAME
    (record,) = (tmp_path / "models").glob("structure-*.json")
    forge(record, lambda body: body.update(total=815_890_192))
    key.unlink()
    store.KEYS.clear()
    if damage == "empty":
        key.write_bytes(b"")
    elif damage == "a link":
        (tmp_path / "their-key").write_bytes(b"k" * 32)
        key.symlink_to(tmp_path / "their-key")
    elif damage == "a folder":
        key.mkdir()
    elif damage == "readable by others":
        key.write_bytes(b"k" * 32)
        key.chmod(0o644)
    assert main(["params", str(config), "--num-classes", "10"]) == 0
    shown = capsys.readouterr()
    assert shown.err == "" and shown.out == honest
    assert (tmp_path / "their-key").read_bytes() == b"k" * 32 if damage == "a link" else True
