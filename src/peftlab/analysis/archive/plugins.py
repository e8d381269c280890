"""A received archive's plugins: their code hashed against what the runs trained and their folders holding their
declared packages only (``check_plugins``, ``check_plugin_folders``: the check phase), and the consent phase of
``peftlab reproduce`` (``consent``): the archive's plugin code is imported only with ``--run-archive-code``, and
then only its declared packages, copied into a folder of their own and hashed again (``plugin_code``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from peftlab.analysis.archive.pack import ARCHIVE_RECORD
from peftlab.analysis.archive.received import capped
from peftlab.utils.errors import UserError
from peftlab.utils.files import one_line, refuse_link, write_atomic


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


def check_plugin_folders(root: Path, record: dict) -> list[str]:
    """A line per entry of plugins/ that is not a plugin archive.json declares, per entry of a plugin's folder that
    is neither one of its declared packages nor its dist-info (a sitecustomize.py or json.py beside them would run
    or shadow a module of that name wherever the folder is on the path), per declared package named as a module
    of Python's or of another installed distribution, and per entry point that points outside the packages.
    Nothing is imported: the entry points are read as metadata."""
    import importlib.metadata
    import sys

    from peftlab.tuners.plugins import GROUP

    out: list[str] = []
    declared = {plugin["folder"]: plugin for plugin in record["plugins"]}
    if (root / "plugins").is_dir():
        for entry in sorted((root / "plugins").iterdir()):
            if f"plugins/{entry.name}" not in declared:
                out.append(f"plugins/{entry.name} is no plugin {ARCHIVE_RECORD} declares")
    owners = importlib.metadata.packages_distributions() if record["plugins"] else {}
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
        try:
            points = list(importlib.metadata.PathDistribution(info).entry_points) if info.is_dir() else []
        except Exception as err:  # the archive's own metadata file: importlib.metadata's parser raises what it meets
            out.append(f"{where}: its entry_points.txt is unreadable ({one_line(err)})")
            continue
        for point in points:
            if point.group == GROUP and point.value.split(":")[0].split(".")[0] not in packages:
                out.append(f"{where}: its method {point.name} points outside its packages ({point.value})")
    return out


CONSENT = "--run-archive-code"


PLUGIN_CODE = "plugin-code"  # OUT/plugin-code/<plugin>/: the declared packages alone, when the user allows them


def consent(root: Path, record: dict, out: Path, allowed: bool) -> list[dict]:
    """The archive's plugins the reruns import (the study names their methods, so every rerun reads them), each
    ``{distribution, version, code_sha256, files}``. Without ``allowed`` (``--run-archive-code``) one UserError
    line lists what would run and stops before anything is imported; with it, the declared packages alone are
    copied into a folder of their own (``plugin_code``) and put on the path of this process and its workers."""
    plugins = record["plugins"]
    if not plugins:
        return []
    ran = [
        {**{k: p[k] for k in ("distribution", "version", "code_sha256")}, "files": code_files(root / p["folder"], p)}
        for p in plugins
    ]
    if not allowed:
        what = "; ".join(
            f"{p['distribution']} {p['version']} ({', '.join(capped(p['files'], 8))}; code SHA-256 "
            f"{p['code_sha256'][:12]})"
            for p in ran
        )
        raise UserError(
            f"the reruns would import the archive's plugin code, which peftlab runs only when asked: {what}; give "
            f"{CONSENT} to run it (its declared packages alone), or --runs 0 to check the archive without running "
            "anything"
        )
    folders = plugin_code(root, record, out / PLUGIN_CODE)
    sys.path[:0] = [str(folder) for folder in folders]  # this process (it reads the study's methods) and workers
    before = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []  # never an empty entry (the cwd)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder) for folder in folders] + before)
    return ran


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


def plugin_code(root: Path, record: dict, where: Path) -> list[Path]:
    """Each plugin's declared packages and dist-info (its METADATA and entry points) copied from the archive into
    ``where``/<plugin> (made anew: peftlab's own folder), no other file of its folder and no compiled ``.pyc``
    (Python compiles the sources the code hash covers); the copy hashed again against the runs' code."""
    from peftlab.tuners.plugins import folder_code_sha256

    refuse_link(where, "--out folder entry")
    if where.exists():
        shutil.rmtree(where)
    folders = []
    for plugin in record["plugins"]:
        src, folder = root / plugin["folder"], Path(os.path.abspath(where / Path(plugin["folder"]).name))
        info = [f"{dist_info(plugin)}/{name}" for name in ("METADATA", "entry_points.txt", "top_level.txt")]
        for name in code_files(src, plugin) + [name for name in info if (src / name).is_file()]:
            write_atomic(folder / name, lambda tmp, path=src / name: shutil.copyfile(path, tmp, follow_symlinks=False))
        copied = folder_code_sha256(folder, set(plugin["packages"]))
        if copied != plugin["code_sha256"]:
            raise UserError(
                f"plugin {plugin['distribution']} {plugin['version']}: its code copied into {folder} hashes to "
                f"{copied[:12]}, the runs trained {plugin['code_sha256'][:12]} (the archive changed while read?)"
            )
        folders.append(folder)
    return folders
