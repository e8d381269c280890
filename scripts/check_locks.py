#!/usr/bin/env python3
"""Checks that every lock installs where researchers run: macOS arm64, Linux aarch64 and Linux x86_64.

For each lock and target, each line's environment marker is evaluated for that target with
packaging.markers (pip's ``--platform`` would evaluate markers for the machine it runs on, not for the
target). Each line that applies must have a wheel of its pinned version that pip would install there: a
tag the target supports for CPython 3.11 (packaging.tags, as pip derives them from ``--platform``), a
Requires-Python that admits 3.11, not yanked. No lock pins an sdist-only package, so every line must
have a wheel.

    python scripts/check_locks.py [LOCK ...]     (default: every requirements*.lock beside scripts/)

One line per lock and target on stdout. Exit status 0: every line resolves for every target; 1: a line
has no wheel for a target, or a lock line is not ``name==version [; marker]``; 2: the index did not
answer, so the locks are unknown, and CI fails on that too (``make test`` could not install either).
The answer comes from the index's file lists (PEP 691 JSON, one page per package, ``PEFTLAB_INDEX_URL``
or PyPI), never from a wheel: the check reads a few MB where pip's dry run downloaded every wheel it
resolved (about 4 GB, 706 s in CI). The target this script runs on is left out: ``make install``
installs it for real, with dependencies.

Before the index is asked, the locks are checked against pyproject.toml (``check_ranges``): pyproject
states the ranges peftlab supports (a user installs it into an environment of their own), the locks the
one set CI tests, so every package pyproject names must be locked at a version inside its range.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import sys
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYTHON = "3.11"  # the version the locks were verified with (pyproject's requires-python >= 3.11)

# pip's --platform matches only the tags it is given: a real glibc 2.28 machine also accepts every
# older manylinux tag and the legacy aliases (bitsandbytes' aarch64 wheel is manylinux_2_24 only).
GLIBC_MAX = 28
GLIBC_MIN = {"x86_64": 5, "aarch64": 17}  # manylinux has no aarch64 tag before 2_17 (manylinux2014)
LEGACY_ALIASES = {"x86_64": ("manylinux2014", "manylinux2010", "manylinux1"), "aarch64": ("manylinux2014",)}


@dataclass(frozen=True)
class Target:
    name: str
    platforms: tuple[str, ...]  # pip --platform tags
    environment: dict  # packaging.markers variables that differ from the machine running the check


def linux(arch: str) -> Target:
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MAX, GLIBC_MIN[arch] - 1, -1)]
    tags += [f"{alias}_{arch}" for alias in LEGACY_ALIASES[arch]] + [f"linux_{arch}"]
    return Target(f"linux-{arch}", tuple(tags), environment("linux", "Linux", arch))


def environment(sys_platform: str, system: str, machine: str) -> dict:
    return {
        "sys_platform": sys_platform,
        "platform_system": system,
        "platform_machine": machine,
        "os_name": "posix",
        "python_version": PYTHON,
        "python_full_version": f"{PYTHON}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_version": "",
    }


# macOS 14 on Apple Silicon (pip expands a macosx tag to the older macOS versions and universal2 itself).
TARGETS = (
    Target("macos-arm64", ("macosx_14_0_arm64",), environment("darwin", "Darwin", "arm64")),
    linux("aarch64"),
    linux("x86_64"),
)


def this_machine() -> str:
    """The TARGETS name of the machine this runs on ("" for one that is none of them)."""
    return f"linux-{platform.machine()}" if sys.platform == "linux" else ""


class LockError(Exception):
    """A lock line that is not ``name==version`` with an optional marker."""


def read_lock(path: Path) -> list[Requirement]:
    """The pinned requirements of a lock, in order; comments and blank lines skipped."""
    requirements = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as err:
            why = str(err).splitlines()[0]  # packaging adds the line and a caret below
            raise LockError(f"{path.name} line {number}: {why}; expected name==version [; marker]") from None
        if len(requirement.specifier) != 1 or next(iter(requirement.specifier)).operator != "==":
            raise LockError(f"{path.name} line {number}: {line!r} is not pinned; expected name==version [; marker]")
        requirements.append(requirement)
    return requirements


def applies(requirement: Requirement, target: Target) -> bool:
    return requirement.marker is None or requirement.marker.evaluate(target.environment)


class RegistryError(Exception):
    """The index did not answer: the lock's state for this target is unknown."""


INDEX = os.environ.get("PEFTLAB_INDEX_URL", "https://pypi.org/simple/")
ACCEPT = "application/vnd.pypi.simple.v1+json"  # PEP 691: the index's file list as JSON, with Requires-Python


def supported_tags(target: Target) -> set[Tag]:
    """The wheel tags pip accepts on ``target`` for CPython 3.11, as pip derives them from ``--platform``,
    ``--python-version``, ``--implementation cp`` and ``--abi cp311`` (a macOS tag expanded to the older
    macOS versions and universal2, as pip does)."""
    version = tuple(int(part) for part in PYTHON.split("."))
    platforms = list(target.platforms)
    if target.name.startswith("macos"):
        major, minor, arch = re.fullmatch(r"macosx_(\d+)_(\d+)_(\w+)", platforms[0]).groups()
        platforms = list(mac_platforms((int(major), int(minor)), arch))
    abi = "cp" + PYTHON.replace(".", "")
    return set(cpython_tags(version, [abi], platforms)) | set(compatible_tags(version, abi, platforms))


def index_files(name: str) -> list[dict] | None:
    """The files the index lists for ``name`` (PEP 691 JSON: filename, requires-python, yanked); None when the
    index says the project does not exist (404: an answer, not an outage). Only the index's pages are read,
    never a wheel. An index that does not answer after retries is a RegistryError."""
    url = f"{INDEX.rstrip('/')}/{canonicalize_name(name)}/"
    last = None
    for attempt in range(4):
        if attempt:
            time.sleep(2**attempt)
        try:
            request = urllib.request.Request(url, headers={"Accept": ACCEPT})
            with urllib.request.urlopen(request, timeout=60) as answer:
                return json.load(answer)["files"]
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            last = f"HTTP {err.code} {err.reason}"
        except (urllib.error.URLError, OSError, ValueError, KeyError) as err:
            last = " ".join(str(getattr(err, "reason", err)).split())[:160]
    raise RegistryError(f"the index did not answer for {name} at {url} ({last})")


def has_wheel(requirement: Requirement, files: list[dict] | None, tags: set[Tag]) -> bool:
    """Whether ``files`` hold a wheel of the pinned version that pip would install with ``tags``: a tag it
    supports, a Requires-Python that admits 3.11, not yanked (pip takes a yanked pin only with a warning)."""
    version = Version(next(iter(requirement.specifier)).version)
    for file in files or []:
        if not file["filename"].endswith(".whl") or file.get("yanked"):
            continue
        try:
            name, wheel_version, _, wheel_tags = parse_wheel_filename(file["filename"])
        except InvalidWheelFilename:
            continue
        if name != canonicalize_name(requirement.name) or wheel_version != version or not wheel_tags & tags:
            continue
        needs = file.get("requires-python")
        if not needs or SpecifierSet(needs).contains(PYTHON, prereleases=True):
            return True
    return False


def check(requirements: list[Requirement], target: Target, fetch=index_files) -> list[str]:
    """The lines of ``requirements`` that apply on ``target`` and have no wheel there."""
    tags = supported_tags(target)
    return [str(r) for r in requirements if applies(r, target) and not has_wheel(r, fetch(r.name), tags)]


def check_lock(path: Path, target: Target, fetch=index_files) -> tuple[str, list[str]]:
    """One report line for ``path`` on ``target`` and the lines without a wheel there."""
    requirements = read_lock(path)
    start = time.perf_counter()
    try:
        missing = check(requirements, target, fetch)
    except RegistryError as err:
        raise RegistryError(f"{target.name}: {err}") from None
    seconds = time.perf_counter() - start
    applying = sum(applies(r, target) for r in requirements)
    skipped = f", {len(requirements) - applying} left out by their markers" if applying < len(requirements) else ""
    if missing:
        return f"{path.name} {target.name}: FAILED, no wheel for {', '.join(missing)} ({seconds:.0f} s)", missing
    return f"{path.name} {target.name}: ok, {applying} lines resolve{skipped} ({seconds:.0f} s)", missing


def default_locks() -> list[Path]:
    """requirements.lock first, then the extras installed on top of it."""
    return sorted(REPO.glob("requirements*.lock"), key=lambda p: (p.name != "requirements.lock", p.name))


def pyproject_requirements(pyproject: Path) -> list[Requirement]:
    """pyproject's dependencies, then each extra's, in order."""
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = project["dependencies"] + [
        line for extra in project.get("optional-dependencies", {}).values() for line in extra
    ]
    return [Requirement(line) for line in lines]


def check_ranges(pyproject: Path, locks: list[Path]) -> list[str]:
    """The pyproject requirements the locks leave out or pin outside their range, one phrase each."""
    locked = {canonicalize_name(r.name): r for lock in locks for r in read_lock(lock)}
    outside = []
    for requirement in pyproject_requirements(pyproject):
        pin = locked.get(canonicalize_name(requirement.name))
        if pin is None:
            outside.append(f"{requirement} is in no lock")
        elif not requirement.specifier.contains(next(iter(pin.specifier)).version, prereleases=True):
            outside.append(f"{pin} is outside pyproject's {requirement}")
    return outside


def main(argv: list[str], fetch=index_files) -> int:
    locks = [Path(a) for a in argv] or default_locks()
    fetch = functools.cache(fetch)  # one page of a package serves every target and every lock
    failures = []
    try:
        outside = [] if argv else check_ranges(REPO / "pyproject.toml", locks)
        if outside:
            print(f"check_locks: {'; '.join(outside)}: lock a version inside the range, or widen it", file=sys.stderr)
            return 1
        for path in locks:
            read_lock(path)  # a malformed line fails before the index is asked
            for target in TARGETS:
                if target.name == this_machine():  # `make install` installs this one for real
                    print(f"{path.name} {target.name}: this machine; make install installs it", flush=True)
                    continue
                line, missing = check_lock(path, target, fetch)
                print(line, flush=True)
                if missing:
                    failures.append(f"{path.name} on {target.name}: {', '.join(missing)}")
    except LockError as err:
        print(f"check_locks: {err}", file=sys.stderr)
        return 1
    except RegistryError as err:
        print(f"check_locks: {path.name} is unknown: {err}; run again when the index answers", file=sys.stderr)
        return 2
    if failures:
        print(
            f"check_locks: no wheel for {'; '.join(failures)}; give the line a marker "
            '(e.g. ; sys_platform == "linux") or pin a version with a wheel there',
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
