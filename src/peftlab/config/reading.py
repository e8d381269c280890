"""Reading config and study files: bounded YAML, and dotted command-line overrides.

Every problem is one ``ConfigError`` line naming the file (or the override): a file too large,
a FIFO, binary bytes, an alias bomb, nesting too deep, a number of thousands of digits.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from peftlab.config.checks import MAX_DIGITS, MAX_FILE_BYTES, MAX_NESTING, shown
from peftlab.utils.errors import ConfigError
from peftlab.utils.files import read_regular_file, shown_path


def nest(dotted: dict[str, Any]) -> dict:
    """``{"train.lr": 1}`` -> ``{"train": {"lr": 1}}``."""
    nested: dict = {}
    for key, value in dotted.items():
        node = nested
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return nested


def parse_overrides(overrides: list[str]) -> dict:
    """``["train.lr=3e-4", "method.r=16"]`` -> nested dict; values are parsed as YAML scalars."""
    nested: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is invalid: expected dotted.key=value, e.g. train.lr=3e-4")
        try:
            value = parse_yaml(raw, f"override {item!r}") if raw != "" else ""
        except ConfigError:
            value = raw  # not YAML: the string itself, which the field's type check then judges
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of '{part}'")
        if parts[-1] in node:  # as a duplicate YAML key: the last one would win silently
            raise ConfigError(
                f"override {item!r} sets '{key}' again (an earlier override set it): expected each key once"
            )
        node[parts[-1]] = value
    return nested


def deep_merge(base: dict, update: dict) -> dict:
    """A new dict: ``update`` laid over ``base``, recursing into mappings."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases, without deep nesting and without huge numbers:
    each of them is one ConfigError line (an alias bomb expands a 1 KiB file to gigabytes)."""

    where = "YAML"

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(
                f"{self.where} uses a YAML alias (*{self.peek_event().anchor}) at line "
                f"{mark.line + 1}; peftlab does not expand aliases: write the values out"
            )
        self.nesting = getattr(self, "nesting", 0) + 1
        if self.nesting > MAX_NESTING:
            mark = self.peek_event().start_mark
            raise ConfigError(
                f"{self.where} nests mappings or lists more than {MAX_NESTING} deep (line {mark.line + 1})"
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self.nesting -= 1

    def construct_mapping(self, node, deep=False):
        """A key written twice in one mapping is an error: PyYAML would keep the last one, so a
        second ``train:`` block would silently replace the first."""
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise ConfigError(
                        f"{self.where} repeats the key {shown(key_node.value)} at line "
                        f"{key_node.start_mark.line + 1}; expected each key once: merge the two"
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        digits = sum(c.isdigit() for c in node.value)
        if digits > MAX_DIGITS:
            raise ConfigError(
                f"{self.where} has a number of {digits} digits at line {node.start_mark.line + 1}; "
                f"expected at most {MAX_DIGITS}"
            )
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node):
        if sum(c.isdigit() for c in node.value) > MAX_DIGITS:
            return self.construct_yaml_int(node)  # the same error
        return super().construct_yaml_float(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)


def parse_yaml(text: str, where: str) -> Any:
    """``text`` as YAML with the limits of ``_Loader``; any problem is one ConfigError naming ``where``."""
    loader = None
    if "\x85" in text:  # NEL: YAML reads it as a line break, so a value holding one silently became two words
        line = text.count("\n", 0, text.index("\x85")) + 1
        raise ConfigError(
            f"{where}: line {line} holds the control character U+0085 (NEL), which YAML reads as a "
            "line break: expected plain line breaks (\\n)"
        )
    try:
        loader = _Loader(text)  # the reader refuses control characters here, before parsing
        loader.where = where
        return loader.get_single_data()
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        code = err.character if isinstance(err.character, int) else ord(err.character or "\0")
        raise ConfigError(
            f"{where} is not valid YAML: line {line} holds the control character U+{code:04X}, which "
            "YAML does not allow"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or "").split())[:200]  # YAML's words for the cause
        raise ConfigError(f"{where} is not valid YAML{at}{': ' + problem if problem else ''}") from None
    except (ValueError, RecursionError, MemoryError) as err:
        raise ConfigError(f"{where} cannot be read as YAML ({type(err).__name__})") from None
    finally:
        if loader is not None:
            loader.dispose()


class MissingFile(ConfigError):
    """``read_text_file``'s error for a file that is not there, found when it is opened: a reader whose file may
    be absent catches it rather than asking ``is_file()`` first (the file may go or change in between)."""


def read_text_file(path: str | Path, what: str = "config file", expected: str = "a YAML file") -> str:
    """The UTF-8 text of a regular file of at most ``MAX_FILE_BYTES``, or one ConfigError line.

    A FIFO would block, /dev/zero would never end, a binary file is no config: all refused
    before reading. ``/dev/null`` is allowed, as an empty config.
    """
    path = Path(path)
    shown = shown_path(path)  # a path of thousands of characters would make a page, not a line
    try:
        info = path.stat()
    except FileNotFoundError:
        raise MissingFile(f"{what} {shown} does not exist") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{what} {shown} cannot be read: {getattr(err, 'strerror', None) or err}") from None
    if os.path.realpath(path) == os.devnull:
        return ""
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} {shown} is a directory: expected {expected}")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {shown} is not a regular file (a device, FIFO or socket): expected {expected}")
    if info.st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{what} {shown} has {info.st_size:,} bytes: expected at most {MAX_FILE_BYTES:,}")
    try:
        raw = read_regular_file(path, MAX_FILE_BYTES + 1)
    except FileNotFoundError:  # gone since the stat
        raise MissingFile(f"{what} {shown} does not exist") from None
    except OSError as err:
        raise ConfigError(f"{what} {shown} cannot be read: {err.strerror}") from None
    if raw is None:
        raise ConfigError(f"{what} {shown} is not a regular file (a device, FIFO or socket): expected {expected}")
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{what} {shown} has more than {MAX_FILE_BYTES:,} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {shown} is not UTF-8 text (byte {err.start}): expected {expected}") from None


def read_yaml(path: str | Path) -> dict:
    """The mapping a config file holds. An empty name, and a file with no YAML in it (empty or comments only), are
    refused: either is a mistake, never a wish for every default (``/dev/null`` says that, as an empty config)."""
    if not str(path).strip():
        raise ConfigError("config file name is empty: expected the path of a YAML file")
    path = Path(path)
    data = parse_yaml(read_text_file(path), f"config file {shown_path(path)}")
    if data is None:
        if os.path.realpath(path) == os.devnull:
            return {}
        raise ConfigError(
            f"config file {shown_path(path)} is empty: expected a mapping of sections (model, method, data, train)"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"config file {shown_path(path)} must hold a mapping of sections, got {type(data).__name__}")
    return data
