"""Methods of other installed packages: each a ``peftlab.methods`` entry point naming the method and
pointing to its registry line, a ``TunerSpec(ConfigCls, "package.model")`` as in ``TUNERS``::

    [project.entry-points."peftlab.methods"]
    mymethod = "mypackage:METHOD"   # mypackage/__init__.py: METHOD = TunerSpec(MyConfig, "mypackage.model")

Read lazily: only a ``method.name`` the built-ins lack looks at the entry points (package metadata,
nothing imported), and only that method's package is imported, so configs of built-in methods never
import a plugin. A broken plugin is one ``ConfigError`` line naming its distribution and what is wrong;
it fails only the runs of that method (``peftlab methods`` lists it beside the others).

config finds a plugin's config class through the ``Finder`` this module installs in its registry of method
sections (``peftlab.config.methods``) when it is imported, which ``peftlab/__init__.py`` does.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from peftlab.config.methods import Finder, install_finder, plugin_words
from peftlab.config.sections import MethodConfig
from peftlab.tuners import HOOKS, TUNERS, TunerSpec
from peftlab.utils import distributions
from peftlab.utils.errors import ConfigError, UserError, stop_behind
from peftlab.utils.files import one_line

if TYPE_CHECKING:
    import importlib.metadata

GROUP = "peftlab.methods"
LOADED: dict[str, PluginSpec | ConfigError] = {}  # the plugins read so far, by name
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")  # a method's name: run labels, folders and LaTeX macros take it


@dataclass(frozen=True)
class PluginSpec(TunerSpec):
    """A plugin's registry line, with where it comes from: a model module that fails to import, or lacks a
    required hook, is one line naming its package when any hook is first asked for (``peftlab validate``)."""

    distribution: str = ""  # "name version" of the installed package that gives the entry point

    def load(self, hook: str):
        where = f"method {self.config_cls.name!r} of plugin {self.distribution}"
        where_import = f"{where}: its model module {self.module} fails to import"
        module = plugin_call(where_import, importlib.import_module, self.module, passing=(KeyboardInterrupt,))
        missing = [h for h, needed in HOOKS.items() if needed and not callable(getattr(module, h, None))]
        if missing:
            raise ConfigError(
                f"{where}: {self.module} has no function {missing[0]!r}, which every method's module defines"
            )
        function = getattr(module, hook, None)
        return guarded(function, f"{where}: its {self.module}.{hook}") if function is not None else None


def guarded(function, where: str):
    """``function``, a plugin's hook, called through ``plugin_call``: ``where() fails: TypeName: message``."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        return plugin_call(f"{where}() fails", function, *args, **kwargs)

    return call


def plugin_call(where: str, function, *args, passing=(UserError, KeyboardInterrupt), **kwargs):
    """``function(*args, **kwargs)``, a plugin's own code: anything it raises but ``passing`` (peftlab's
    one-line errors, a Ctrl-C) is one ConfigError line, ``where: TypeName: message``, a ``sys.exit`` too.
    It is raised outside the handler, so that no SystemExit stands behind it as a stop (``errors.stop_behind``)."""
    try:
        return function(*args, **kwargs)
    except passing:
        raise
    except BaseException as err:  # the plugin's own code: whatever it raises is the plugin's
        if isinstance(stop_behind(err), KeyboardInterrupt):  # a Ctrl-C a library turned into an error of its own
            raise
        failure = ConfigError(f"{where}: {one_line(err)}")
    raise failure


def entry_points() -> dict[str, list[importlib.metadata.EntryPoint]]:
    """The ``peftlab.methods`` entry points of the installed distributions, by name (metadata only). A
    distribution whose metadata cannot be read (a malformed ``entry_points.txt``) gives none: it is
    skipped with one warning naming it (``utils/distributions.py``), and the others' plugins are read."""
    found: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for ep in distributions.entry_points(GROUP):
        found.setdefault(ep.name, []).append(ep)
    return found


def plugin_names() -> list[str]:
    """The names plugins give, built-in names aside (those plugins are broken)."""
    return sorted(name for name in entry_points() if name not in TUNERS)


def offered_names() -> list[str]:
    """The plugins' names a config may take, for the line that refuses an unknown one: each plugin is read (its
    package imported, only on that error's path), and a broken one is named apart, never offered as a choice."""
    names = plugin_names()
    broken = [name for name in names if isinstance(load_plugin(name), ConfigError)]
    working = [name for name in names if name not in broken]
    return working + ([f"broken, see `peftlab methods`: {', '.join(broken)}"] if broken else [])


def distribution(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else "(unknown distribution)"


def load_plugin(name: str) -> PluginSpec | ConfigError:
    """The registry line the plugin named ``name`` gives, checked; or the one-line error of a broken one
    (read once per process)."""
    if name not in LOADED:
        LOADED[name] = read_plugin(name)
    return LOADED[name]


def read_plugin(name: str) -> PluginSpec | ConfigError:
    eps = entry_points().get(name, [])
    if not eps:
        return ConfigError(f"no installed plugin gives method {name!r}")
    if len(eps) > 1:
        dists = " and ".join(sorted(distribution(ep) for ep in eps))  # in a fixed order, not the path's
        return ConfigError(f"method {name!r} is given by two plugins, {dists}: uninstall one")
    (ep,) = eps
    where = f"method {name!r} of plugin {distribution(ep)} (entry point {name} = {ep.value})"
    try:
        spec = read_entry_point(ep, name)
    except ConfigError as err:
        return ConfigError(f"{where}: {err}")
    return PluginSpec(spec.config_cls, spec.module, distribution(ep))


def read_entry_point(ep: importlib.metadata.EntryPoint, name: str) -> TunerSpec:
    """What ``ep`` points to, if it is a method peftlab can read; ConfigError says what it lacks."""
    if name in TUNERS:
        raise ConfigError(f"the name is a built-in method's: rename the entry point (the built-in {name} is used)")
    if not NAME.fullmatch(name):
        raise ConfigError(f"the name is invalid: expected {NAME.pattern} (lower case, digits, _)")
    spec = plugin_call("fails to import", importlib.import_module, ep.module, passing=(KeyboardInterrupt,))
    for part in (ep.attr or "").split("."):
        if part and not hasattr(spec, part):
            raise ConfigError(f"{ep.module} has no {ep.attr}: expected TunerSpec(config class, model module)")
        spec = getattr(spec, part) if part else spec
    if not isinstance(spec, TunerSpec):
        raise ConfigError(f"gives a {type(spec).__name__}, not peftlab.tuners.TunerSpec(config class, model module)")
    check_config_class(spec.config_cls, name)
    try:
        found = importlib.util.find_spec(spec.module) if isinstance(spec.module, str) else None
    except Exception:  # a parent package that is missing or fails to import
        found = None
    if found is None:
        raise ConfigError(f"its model module {spec.module!r} is not found")
    return spec


def check_config_class(cls, name: str) -> None:
    """A method's config as every method's is: a frozen dataclass of MethodConfig, declaring its name."""
    if not isinstance(cls, type) or not issubclass(cls, MethodConfig):
        raise ConfigError(f"its config class {cls!r} is not a subclass of peftlab.config.sections.MethodConfig")
    params = cls.__dict__.get("__dataclass_params__")
    if params is None or not params.frozen:
        raise ConfigError(f"its config class {cls.__name__} is not a frozen dataclass: use @dataclass(frozen=True)")
    if cls.__dict__.get("name") != name:
        raise ConfigError(f"its config class {cls.__name__} declares name = {cls.__dict__.get('name')!r}, not {name!r}")
    # its defaults must make a valid config, as every method's do, and give the paper words it can print
    defaults = plugin_call(f"its config class {cls.__name__}() fails", cls, passing=(KeyboardInterrupt,))
    plugin_words(defaults, f"its config class {cls.__name__}")


def method_spec(name: str) -> TunerSpec | None:
    """The registry line of method ``name``: a built-in's, else a plugin's (loaded now; ConfigError if it is
    broken), or None where no method has that name."""
    if name in TUNERS:
        return TUNERS[name]
    if name not in LOADED and name not in entry_points():  # metadata is scanned until the plugin is read
        return None
    spec = load_plugin(name)
    if isinstance(spec, ConfigError):
        raise ConfigError(str(spec))
    return spec


def loaded_plugins() -> tuple[str, ...]:
    """The plugins read so far that work: the methods besides the built-ins that a study's keys may name."""
    return tuple(name for name, spec in LOADED.items() if not isinstance(spec, ConfigError))


def config_class(name: str) -> type[MethodConfig] | None:
    """The config class of the plugin's method ``name`` (read now; ConfigError if it is broken), or None."""
    spec = method_spec(name)
    return spec.config_cls if spec is not None else None


IDENTITIES: dict[int, tuple[PluginSpec, dict]] = {}  # id(spec) -> (spec, its identity): each plugin hashed once


def identity(name: str) -> dict | None:
    """What the code of the plugin method ``name`` is: its ``distribution``, ``version`` and ``code_sha256``, a
    hash of the files of the packages its config class and model module come from. None where no working plugin
    of that name was read (a built-in, or a broken plugin, whose runs fail anyway)."""
    spec = LOADED.get(name)
    if not isinstance(spec, PluginSpec):
        return None
    if id(spec) not in IDENTITIES:
        dist, _, version = spec.distribution.partition(" ")
        packages = {spec.module.split(".")[0], spec.config_cls.__module__.split(".")[0]}
        IDENTITIES[id(spec)] = (spec, {"distribution": dist, "version": version, "code_sha256": code_sha256(packages)})
    return IDENTITIES[id(spec)][1]


def code_sha256(packages: set[str]) -> str:
    """SHA-256 over the files of the top-level ``packages`` (a package's folder, bytecode caches aside, or a
    module's file), each named relative to where it was found: the same code installed anywhere hashes alike."""
    found = {}
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            found[package] = [Path(location) for location in spec.submodule_search_locations]
        elif spec is not None and spec.origin and os.path.isfile(spec.origin):
            found[package] = Path(spec.origin)
    return files_sha256(found)


def folder_code_sha256(folder: Path, packages: set[str]) -> str:
    """``code_sha256`` of ``packages`` as laid out in ``folder`` (``pip install --target``'s layout: a package's
    folder or a module's file in it), without importing them: a submission's packed plugin is checked with it."""
    found = {}
    for package in packages:
        if (folder / package).is_dir():
            found[package] = [folder / package]
        elif (folder / f"{package}.py").is_file():
            found[package] = folder / f"{package}.py"
    return files_sha256(found)


def files_sha256(found: dict[str, list[Path] | Path]) -> str:
    """The hash ``code_sha256`` computes over each package's folders (a list) or module file (a path)."""
    digest = hashlib.sha256()
    for package in sorted(found):
        where = found[package]
        if isinstance(where, list):
            files = sorted(
                (root, path)
                for root in where
                for path in root.rglob("*")
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
            )
        else:
            files = [(where.parent, where)]
        for root, path in files:
            digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def origin(name: str) -> str:
    """``method 'x' of plugin dist 1.0`` for a plugin's method, ``method 'x'`` for a built-in's."""
    spec = LOADED.get(name)
    return f"method {name!r} of plugin {spec.distribution}" if isinstance(spec, PluginSpec) else f"method {name!r}"


install_finder(Finder(find=config_class, found=loaded_plugins, names=offered_names, identity=identity, origin=origin))
