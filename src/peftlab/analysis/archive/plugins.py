"""A received archive's plugins: their code hashed against what the runs trained and their folders holding their
declared packages and metadata only, declaring peftlab's method entry points only (``check_plugins``,
``check_plugin_folders``: the check phase); every file the reruns would put on the path listed with its SHA-256 and
size, before anything is imported (``list_code``, ``show_code``); and the consent phase of ``peftlab reproduce``
(``consent``): the archive's plugin code is imported only with ``--run-archive-code`` (or
``--run-archive-code=HASH``, bound to the listed files), and then only its declared packages, copied into a folder
of their own and checked again against the listing (``plugin_code``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from peftlab.analysis.archive.pack import ARCHIVE_RECORD
from peftlab.analysis.archive.received import file_sha256
from peftlab.utils.errors import UserError
from peftlab.utils.files import one_line, refuse_link, shown_path, write_atomic, write_text_atomic


def check_plugins(root: Path, record: dict) -> list[str]:
    """A line per packed plugin whose code does not hash to what its runs recorded."""
    from peftlab.tuners.plugins import folder_code_sha256

    out = []
    for plugin in record.get("plugins") or []:
        folder = root / plugin["folder"]
        sha = folder_code_sha256(folder, set(plugin.get("packages") or []))
        if sha != plugin.get("code_sha256"):
            out.append(
                f"plugin {plugin['distribution']} {plugin['version']} in {plugin['folder']}: its code hashes to "
                f"{sha[:12]}, the runs trained {str(plugin.get('code_sha256'))[:12]}"
            )
    return out


SITE_HOOKS = ("sitecustomize", "usercustomize", "peftlab")  # names Python or peftlab itself imports on their own


def dist_info(plugin: dict) -> str:
    """The dist-info folder's name ``pack_plugins`` writes beside a plugin's packages."""
    return f"{plugin['distribution'].replace('-', '_')}-{plugin['version']}.dist-info"


# what a dist-info folder holds besides code: the files pip and the packaging PEPs write there (LICENSE* and PEP 639's
# licenses/ folder included); the reruns' copy takes METADATA, entry_points.txt and top_level.txt alone (ON_PATH)
METADATA_FILES = (
    "METADATA",
    "RECORD",
    "WHEEL",
    "entry_points.txt",
    "top_level.txt",
    "INSTALLER",
    "REQUESTED",
    "direct_url.json",
)
ON_PATH = ("METADATA", "entry_points.txt", "top_level.txt")


def metadata_entry(entry: Path) -> bool:
    """Whether ``entry`` of a dist-info folder is metadata (``METADATA_FILES``, a LICENSE* file, licenses/)."""
    if entry.is_dir():
        return entry.name == "licenses"
    return entry.is_file() and (entry.name in METADATA_FILES or entry.name.startswith("LICENSE"))


def installed_owners(packages: set[str]) -> dict[str, list[str]]:
    """``importlib.metadata.packages_distributions()`` (the installed distributions that own each top-level name)
    where one of ``packages`` is a module this Python finds outside its own library, else nothing: a name no finder
    knows shadows no installed module, and the scan reads every distribution's file list (about 0.6 s with the
    locks' packages). A name that is no plain identifier is never looked up (``find_spec`` of a dotted name would
    import its parent): then the scan runs."""
    import importlib.metadata
    import importlib.util
    import sys

    def unknown(name: str) -> bool:
        if not name.isidentifier():
            return False
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):  # a module held without a spec (__main__)
            return False

    if all(unknown(name) for name in packages - set(sys.stdlib_module_names)):
        return {}
    return importlib.metadata.packages_distributions()


def check_plugin_folders(root: Path, record: dict) -> list[str]:
    """A line per entry of plugins/ that is not a plugin archive.json declares, per entry of a plugin's folder that
    is neither one of its declared packages nor its dist-info (a sitecustomize.py or json.py beside them would run
    or shadow a module of that name wherever the folder is on the path), per entry of the dist-info that is not
    metadata (``metadata_entry``), per declared package named as a module of Python's or of another installed
    distribution, per entry point of another group than peftlab's methods (``import torch`` loads the
    ``torch.backends`` group's, a library another group's: code that no listing names would run) and per method
    that points outside the packages. Nothing is imported: the entry points are read as metadata."""
    import importlib.metadata
    import sys

    from peftlab.tuners.plugins import GROUP

    out: list[str] = []
    declared = {plugin["folder"]: plugin for plugin in record["plugins"]}
    if (root / "plugins").is_dir():
        for entry in sorted((root / "plugins").iterdir()):
            if f"plugins/{entry.name}" not in declared:
                out.append(f"plugins/{entry.name} is no plugin {ARCHIVE_RECORD} declares")
    owners = installed_owners({package for plugin in record["plugins"] for package in plugin["packages"]})
    for plugin in record["plugins"]:
        folder, packages = root / plugin["folder"], set(plugin["packages"])
        where = f"plugin {plugin['distribution']} {plugin['version']} in {plugin['folder']}"
        if not folder.is_dir():
            out.append(f"{where}: its folder is missing")
            continue
        for entry in sorted(folder.iterdir()):
            stem = entry.name.removesuffix(".py") if entry.is_file() else entry.name
            if stem in packages or entry.is_dir() and entry.name in (dist_info(plugin), "__pycache__"):
                continue  # (a __pycache__ Python wrote there is never copied to where the code runs from)
            out.append(
                f"{where}: {entry.name} is none of its packages ({', '.join(sorted(packages))}) nor its dist-info: "
                "a plugin folder holds those only (a module beside them could shadow any other)"
            )
        for package in sorted(packages):
            others = sorted(
                {o for o in owners.get(package, []) if o.lower().replace("_", "-") != plugin["distribution"].lower()}
            )
            if package in sys.stdlib_module_names or package in SITE_HOOKS or others:
                whose = f"installed {others[0]}'s" if others else "Python's own"
                out.append(f"{where}: its package {package} has the name of {whose} module {package}")
        info = folder / dist_info(plugin)
        for entry in sorted(info.iterdir()) if info.is_dir() else []:
            if not metadata_entry(entry):
                out.append(
                    f"{where}: its {info.name}/{entry.name} is no metadata file: a dist-info holds "
                    f"{', '.join(METADATA_FILES)}, LICENSE* and licenses/ only"
                )
        try:
            points = list(importlib.metadata.PathDistribution(info).entry_points) if info.is_dir() else []
        except Exception as err:  # the archive's own metadata file: importlib.metadata's parser raises what it meets
            out.append(f"{where}: its entry_points.txt is unreadable ({one_line(err)})")
            continue
        for point in points:
            if point.group != GROUP:
                out.append(
                    f"{where}: its entry_points.txt declares [{point.group}] {point.name} = {point.value}: a "
                    f"plugin declares {GROUP} entry points only (another group's run wherever a library loads "
                    "that group, as `import torch` loads torch.backends')"
                )
            elif point.value.split(":")[0].split(".")[0] not in packages:
                out.append(f"{where}: its method {point.name} points outside its packages ({point.value})")
    return out


CONSENT = "--run-archive-code"
PLUGIN_CODE = "plugin-code"  # OUT/plugin-code/<plugin>/: the declared packages alone, when the user allows them
CODE_LIST = "plugin-code.txt"  # OUT/plugin-code.txt: each file the reruns would put on the path (``list_code``)
CONSENT_HASH = re.compile(r"[0-9a-f]{12,64}")


def consent_hash(value: bool | str) -> bool | str:
    """``--run-archive-code``'s value: True or False (given or not), or the first 12 to 64 hex digits of the
    listed code's SHA-256 (``list_code``), lower case; anything else is one UserError line."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and CONSENT_HASH.fullmatch(value.strip().lower()):
        return value.strip().lower()
    shown = repr(value)[:80]
    raise UserError(
        f"{CONSENT}={shown} is invalid: expected no value, or the first 12 to 64 hex digits of the archive code's "
        "SHA-256 that reproduce prints (`archive code SHA-256: ...`)"
    )


@dataclasses.dataclass(frozen=True)
class CodeList:
    """Every file the reruns would put on the path (``on_path``), each (path in the archive, SHA-256, bytes), the
    file that lists them and its SHA-256, which is the code's: consent is bound to it (``--run-archive-code=HASH``)."""

    files: list[tuple[str, str, int]]
    path: Path
    sha256: str
    plugins: str  # "name version" of each, as a line names them

    def record(self) -> dict:
        """What reproduce.json records of it."""
        return {"files": len(self.files), "sha256": self.sha256, "list": str(self.path)}

    def said(self) -> str:
        """How a line names the listed code: "mine 0.1: 5 files, SHA-256 1a2b3c4d5e6f, each named in OUT/..."."""
        count = f"{len(self.files)} file{'' if len(self.files) == 1 else 's'}"
        return f"{self.plugins}: {count}, SHA-256 {self.sha256[:12]}, each named in {shown_path(self.path)}"


def list_code(root: Path, record: dict, out: Path) -> CodeList | None:
    """The archive's plugin files the reruns would put on the path, each hashed, listed in OUT/plugin-code.txt (a
    line ``SHA-256  bytes  path`` per file, the path inside the archive); None where the archive has no plugin.
    Reads files only; whether they may run is ``consent``'s."""
    if not record["plugins"]:
        return None
    files = []
    for plugin in record["plugins"]:
        for name in on_path(root / plugin["folder"], plugin):
            path = root / plugin["folder"] / name
            files.append((f"{plugin['folder']}/{name}", file_sha256(path), os.lstat(path).st_size))
    text = "".join(f"{sha}  {size}  {name}\n" for name, sha, size in files)
    write_text_atomic(out / CODE_LIST, text)  # (refuses a link there, as every write into OUT)
    names = ", ".join(f"{plugin['distribution']} {plugin['version']}" for plugin in record["plugins"])
    return CodeList(files, out / CODE_LIST, hashlib.sha256(text.encode()).hexdigest(), names)


def show_code(listed: CodeList, record: dict, say: Callable[[str], None]) -> None:
    """The block printed before any of the archive's code could be imported: a line per plugin (its distribution,
    version, folder and count of files) and one with the SHA-256 of them all, naming the file that lists each."""
    for plugin in record["plugins"]:
        mine = sum(1 for name, _, _ in listed.files if name.startswith(f"{plugin['folder']}/"))
        say(
            f"archive code: {plugin['distribution']} {plugin['version']} in {plugin['folder']}: {mine} "
            f"file{'' if mine == 1 else 's'} the reruns would put on the path (its packages "
            f"{', '.join(sorted(plugin['packages']))} and its dist-info's metadata)"
        )
    say(
        f"archive code SHA-256: {listed.sha256} over {len(listed.files)} files, each with its SHA-256 and bytes in "
        f"{shown_path(listed.path)} (that file's own SHA-256); imported only with {CONSENT}={listed.sha256[:12]} "
        f"(bound to these files) or {CONSENT}"
    )


def consent(root: Path, record: dict, out: Path, listed: CodeList | None, allowed: bool | str) -> list[dict]:
    """The archive's plugins the reruns import (the study names their methods, so every rerun reads them), each
    ``{distribution, version, code_sha256, files}``. Without ``allowed`` (``--run-archive-code``) one UserError
    line names the listed code and stops before anything is imported, and so does a hash (``--run-archive-code=
    HASH``) that is not the start of the listed code's; with it, the declared packages alone are copied into a
    folder of their own (``plugin_code``), checked against the listing, and put on the path of this process and
    its workers."""
    if listed is None:
        return []
    if not allowed:
        raise UserError(
            f"the reruns would import the archive's plugin code ({listed.said()}), which peftlab runs only when "
            f"asked: give {CONSENT}={listed.sha256[:12]} to run exactly that code (its declared packages alone), "
            "or --runs 0 to check the archive without running anything"
        )
    if isinstance(allowed, str) and not listed.sha256.startswith(allowed):
        raise UserError(
            f"{CONSENT}={allowed} is not the archive's code: its files hash to {listed.sha256} (each file named in "
            f"{shown_path(listed.path)}); nothing was imported"
        )
    folders = plugin_code(root, record, out / PLUGIN_CODE, listed)
    sys.path[:0] = [str(folder) for folder in folders]  # this process (it reads the study's methods) and workers
    before = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []  # never an empty entry (the cwd)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder) for folder in folders] + before)
    return [
        {**{k: p[k] for k in ("distribution", "version", "code_sha256")}, "files": code_files(root / p["folder"], p)}
        for p in record["plugins"]
    ]


def on_path(folder: Path, plugin: dict) -> list[str]:
    """The files of ``plugin`` in ``folder`` (relative to it) that the reruns put on the path: its declared
    packages' (``code_files``) and its dist-info's METADATA, entry_points.txt and top_level.txt."""
    info = [f"{dist_info(plugin)}/{name}" for name in ON_PATH]
    return code_files(folder, plugin) + [name for name in info if (folder / name).is_file()]


def code_files(folder: Path, plugin: dict) -> list[str]:
    """The files of ``plugin``'s declared packages in ``folder`` (relative to it), as its code hash reads them."""
    files = []
    for package in sorted(plugin["packages"]):
        if (folder / package).is_dir():
            for top, folders, names in os.walk(folder / package):
                folders[:] = sorted(f for f in folders if f != "__pycache__")
                here = Path(top).relative_to(folder)
                files += [(here / name).as_posix() for name in sorted(names) if not name.endswith(".pyc")]
        elif (folder / f"{package}.py").is_file():
            files.append(f"{package}.py")
    return files


def plugin_code(root: Path, record: dict, where: Path, listed: CodeList) -> list[Path]:
    """Each plugin's declared packages and dist-info (its METADATA and entry points) copied from the archive into
    ``where``/<plugin> (made anew: peftlab's own folder), no other file of its folder and no compiled ``.pyc``
    (Python compiles the sources the code hash covers); the copy hashed again against the runs' code and each
    copied file against ``listed``, the files shown before consent."""
    from peftlab.tuners.plugins import folder_code_sha256

    refuse_link(where, "--out folder entry")
    if where.exists():
        shutil.rmtree(where)
    folders, copied = [], []
    for plugin in record["plugins"]:
        src, folder = root / plugin["folder"], Path(os.path.abspath(where / Path(plugin["folder"]).name))
        for name in on_path(src, plugin):
            write_atomic(folder / name, lambda tmp, path=src / name: shutil.copyfile(path, tmp, follow_symlinks=False))
            copied.append((f"{plugin['folder']}/{name}", file_sha256(folder / name), os.lstat(folder / name).st_size))
        sha = folder_code_sha256(folder, set(plugin["packages"]))
        if sha != plugin["code_sha256"]:
            raise UserError(
                f"plugin {plugin['distribution']} {plugin['version']}: its code copied into {folder} hashes to "
                f"{sha[:12]}, the runs trained {plugin['code_sha256'][:12]} (the archive changed while read?)"
            )
        folders.append(folder)
    if copied != listed.files:
        raise UserError(
            f"the archive's plugin code copied into {shown_path(where)} is not the code listed in "
            f"{shown_path(listed.path)} (the archive changed while read?): nothing was imported"
        )
    return folders
