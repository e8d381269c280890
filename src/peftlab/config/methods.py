"""The registry of method sections: a method's name -> its config class, a subclass of ``MethodConfig``.

config reads a run's ``method:`` section through this registry and imports no method: the methods fill it,
as timm's model modules register themselves when timm is imported. ``peftlab.tuners`` adds the built-ins
(``METHODS``, in the order of its ``TUNERS``, which every list of methods keeps) and
``peftlab.tuners.plugins`` installs the ``Finder`` of the methods other packages give (``peftlab.methods``
entry points, read only when a name the built-ins lack is asked for). ``peftlab/__init__.py`` imports both,
so the registry is filled whatever peftlab module is imported first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peftlab.config.checks import fail_field
from peftlab.config.sections import MethodConfig
from peftlab.config.tex import bibtex_entry
from peftlab.utils.errors import ConfigError, UserError, stop_behind
from peftlab.utils.files import one_line

METHODS: dict[str, type[MethodConfig]] = {}  # the built-in methods, in the order every list shows them


@dataclass(frozen=True)
class Finder:
    """Where the names the built-ins lack are looked up."""

    # the config class of method ``name``, None where nothing gives it; a broken method's ConfigError
    find: Callable[[str], type[MethodConfig] | None]
    found: Callable[[], tuple[str, ...]]  # the names found so far that work, in the order they were found
    names: Callable[[], list[str]]  # the names it could give, for the line that refuses an unknown one
    # what the code of method ``name`` is (its distribution, version and a hash of its files), None where unknown
    identity: Callable[[str], dict | None] = lambda name: None
    # where method ``name`` comes from, for a line about its own code failing ("method 'x' of plugin dist 1.0")
    origin: Callable[[str], str] = lambda name: f"method {name!r}"


finder = Finder(find=lambda name: None, found=tuple, names=list)  # until peftlab.tuners.plugins installs its own


def install_finder(new: Finder) -> None:
    global finder
    finder = new


def method_class(name: str) -> type[MethodConfig] | None:
    """The config class of method ``name``: a built-in's, else the finder's (a ConfigError where that method
    is broken), or None where no method has that name."""
    return METHODS[name] if name in METHODS else finder.find(name)


def plugin_identity(name: str) -> dict | None:
    """The code of a plugin method ``name`` (``distribution``, ``version``, ``code_sha256``): part of its runs' ids
    and records, so a run of another version of the plugin is pending, not done. None for a built-in method."""
    return None if name in METHODS else finder.identity(name)


def plugin_record(cfg: MethodConfig) -> dict | None:
    """What a run of a plugin method records of it (result.json's provenance.plugin): its code (``plugin_identity``),
    the sentences its config gives the paper's Methods paragraph (``cfg.describe()``: None where it gives none)
    and its paper's BibTeX entry (``bibtex``: None). None for a built-in method."""
    identity = plugin_identity(cfg.name)
    if identity is None:
        return None
    return {**identity, **plugin_words(cfg, f"{finder.origin(cfg.name)}: its config class {type(cfg).__name__}")}


def plugin_words(cfg: MethodConfig, where: str) -> dict:
    """``description`` and ``bibtex`` of a plugin's config ``cfg``, checked: sentences of printable text with
    their $ paired, an entry ``@type{key,``; anything else is one ConfigError line beginning with ``where``."""
    description = built_by(type(cfg), cfg.describe, "describe()")
    if description is not None and (
        not isinstance(description, str)
        or not description.strip()
        or not description.isprintable()
        or description.replace("\\$", "").count("$") % 2
    ):
        raise ConfigError(
            f"{where}.describe() gives {description!r}: expected None or sentences of printable text, "
            "each $ of LaTeX math closed"
        )
    bibtex = type(cfg).bibtex
    entry = bibtex_entry(bibtex, f"{where}.bibtex") if bibtex else None  # one entry whose fields only typeset
    return {"description": description.strip() if description else None, "bibtex": entry.text if entry else None}


def method_names() -> tuple[str, ...]:
    """The built-in methods and those found so far: the methods a config or a study's keys may name."""
    return tuple(METHODS) + finder.found()


def built_by(cls: type[MethodConfig], make: Callable[[], MethodConfig], where: str) -> MethodConfig:
    """``make()``, a section of method class ``cls``. A plugin's class that fails otherwise than with peftlab's
    one-line errors (its ``__post_init__``, its field types, even a ``sys.exit``) is one line naming the plugin
    (``finder.origin``), raised outside the handler: no SystemExit behind it is taken for a stop."""
    if METHODS.get(cls.name) is cls:  # a built-in's failure is peftlab's own
        return make()
    try:
        return make()
    except (UserError, KeyboardInterrupt):  # its own one-line refusal; a Ctrl-C stays one
        raise
    except BaseException as err:  # the plugin's own code: anything it raises is the plugin's
        if isinstance(stop_behind(err), KeyboardInterrupt):  # a Ctrl-C a library turned into an error of its own
            raise
        failing = f"{finder.origin(cls.name)}: its config class {cls.__name__} fails on {where}"
        failure = ConfigError(f"{failing}: {one_line(err)}")
    raise failure


def method_config_class(name: Any) -> type[MethodConfig]:
    """The config class of method ``name`` (``method_class``), or one ConfigError line naming ``method.name``, the
    built-in methods and the plugins' where no method has that name."""
    cls = method_class(name) if isinstance(name, str) else None  # a plugin's is read here (peftlab.tuners.plugins)
    if cls is None:
        plugins = ", ".join(other_names()) or "none installed"
        fail_field("method.name", name, f"one of {', '.join(METHODS)}, or a plugin's ({plugins})")
    return cls


def other_names() -> list[str]:
    """The names the finder could give (plugins installed), built-in names aside."""
    return finder.names()
