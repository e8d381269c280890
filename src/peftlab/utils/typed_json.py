"""A JSON file of a study folder read against the one schema its writer uses (a TypedDict), so that a file
someone else made or edited is what peftlab wrote, or one line naming the file and the field (``DamagedFile``).

``json_problem(value, hint)`` walks a TypedDict and its fields' types: ``list[X]``, ``dict[str, X]``,
``Literal``, unions (``X | None``), ``Annotated[X, check]`` (``check(value)`` says what else is wrong, as a
list that must not be empty), str, int (not a bool), float (an int or float, finite; not a bool) and bool.
A TypedDict's required keys must be there; keys it does not know (a later version's) are kept and not read.
"""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, Required, Union

from peftlab.utils.errors import DataError
from peftlab.utils.files import read_json

Scalar = bool | int | float | str  # a config value as a search records it: a number, a string or a boolean


class DamagedFile(DataError):
    """A study file that is not what its writer writes: ``<path> is damaged: <field> is <value>: expected <what>``."""


def read_record(path: Path, schema: type) -> Any:
    """The JSON object in ``path`` checked against ``schema``; None when there is no such file. A file that is
    no JSON object, or one of another shape, is a ``DamagedFile``."""
    if not path.exists() and not path.is_symlink():
        return None
    data = read_json(path)
    if data is None:
        raise DamagedFile(f"{path} is damaged: expected a JSON object")
    return checked(data, schema, path)


def checked(data: Any, schema: Any, path: Path, where: str = "") -> Any:
    """``data`` when it matches ``schema``, else a ``DamagedFile`` naming ``path`` and the field (``where``: the
    place of ``data`` in the file, as ``line 3``)."""
    problem = json_problem(data, schema)
    if problem is not None:
        raise DamagedFile(f"{path} is damaged: {where + ': ' if where else ''}{problem}")
    return data


def json_problem(value: Any, hint: Any, where: str = "") -> str | None:
    """What is wrong with ``value`` as a JSON value of type ``hint`` ("trials[2].state is missing", "chosen.params
    is [1, 2]: expected an object"); None when it matches."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Required, NotRequired):
        return json_problem(value, args[0], where)
    if origin is Annotated:
        problem = json_problem(value, args[0], where)
        if problem is not None:
            return problem
        for check in args[1:]:
            wrong = check(value)
            if wrong:
                return f"{name(where)} is {shown(value)}: {wrong}"
        return None
    if origin in (Union, types.UnionType):
        return union_problem(value, args, where)
    if not matches(value, hint):
        return f"{name(where)} is {shown(value)}: expected {words(hint)}"
    if typing.is_typeddict(hint):
        for key, field in typing.get_type_hints(hint, include_extras=True).items():
            if key not in value:
                if key in hint.__required_keys__:
                    return f"{join(where, key)} is missing"
                continue
            problem = json_problem(value[key], field, join(where, key))
            if problem is not None:
                return problem
    elif origin is list and args:
        for index, item in enumerate(value):
            problem = json_problem(item, args[0], f"{where}[{index}]")
            if problem is not None:
                return problem
    elif origin is dict and len(args) == 2:
        for key, item in value.items():
            problem = json_problem(item, args[1], f"{where}[{key!r}]")
            if problem is not None:
                return problem
    return None


def union_problem(value: Any, members: tuple, where: str) -> str | None:
    """A union: the first member that matches, else the problem of the member ``value`` is closest to (the
    object whose required keys it holds), else that it is none of them."""
    problems = [json_problem(value, member, where) for member in members]
    if None in problems:
        return None
    for member, problem in zip(members, problems):
        if typing.is_typeddict(member) and isinstance(value, dict) and member.__required_keys__ <= set(value):
            return problem
        if not typing.is_typeddict(member) and matches(value, member):  # the right type, wrong inside
            return problem
    return f"{name(where)} is {shown(value)}: expected {' or '.join(words(m) for m in members)}"


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the JSON type of ``hint``, without looking inside (a list of anything is a list)."""
    origin = typing.get_origin(hint)
    if origin in (Required, NotRequired, Annotated):
        return matches(value, typing.get_args(hint)[0])
    if origin in (Union, types.UnionType):
        return any(matches(value, member) for member in typing.get_args(hint))
    if origin is Literal:
        return any(value == v and type(value) is type(v) for v in typing.get_args(hint))
    if hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if typing.is_typeddict(hint):
        return isinstance(value, dict)
    return isinstance(value, origin or hint)


def words(hint: Any) -> str:
    """A JSON type in words: "an object", "a list", "a finite number", "one of 'COMPLETE', 'FAIL'"."""
    origin = typing.get_origin(hint)
    if origin in (Required, NotRequired, Annotated):
        return words(typing.get_args(hint)[0])
    if origin in (Union, types.UnionType):
        return " or ".join(words(member) for member in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(hint))
    if hint is None or hint is type(None):
        return "null"
    if typing.is_typeddict(hint):
        required = sorted(hint.__required_keys__)
        return "an object" + (f" with {', '.join(required)}" if required else "")
    known = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    if hint in known:
        return known[hint]
    return {list: "a list", dict: "an object"}.get(origin or hint, getattr(hint, "__name__", str(hint)))


def non_empty(value: Any) -> str | None:
    """For ``Annotated[list[...], non_empty]``."""
    return None if value else "expected at least one value"


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def name(where: str) -> str:
    return where or "the record"


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
