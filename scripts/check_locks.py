#!/usr/bin/env python3
"""Checks that every lock installs where researchers run: macOS arm64, Linux aarch64 and Linux x86_64.

For each lock and target, each line's environment marker is evaluated for that target with
packaging.markers, because pip's ``--platform`` evaluates markers for the machine pip runs on, not for
the target. The lines that apply are resolved by pip with ``--dry-run --no-deps --only-binary=:all:``
and the target's tags. No lock pins an sdist-only package, so every line must have a wheel.

    python scripts/check_locks.py [LOCK ...]     (default: every requirements*.lock beside scripts/)

One line per lock and target on stdout. Exit status 0: every line resolves for every target; 1: a line
has no wheel for a target, or a lock line is not ``name==version [; marker]``; 2: the index did not
answer, so the locks are unknown, and CI fails on that too (``make test`` could not install either).
pip's dry run downloads every wheel it resolves (pip 23 does, and the index serves no separate
metadata): about 0.4 GB for macOS and 3.5 GB for each Linux target, most of it torch and the CUDA
wheels; the measured time is in the Makefile (``check-locks``). The target this script runs on is
left out: ``make install`` installs it for real, with dependencies.

Before pip runs, the locks are checked against pyproject.toml (``check_ranges``): pyproject states the
ranges peftlab supports (a user installs it into an environment of their own), the locks the one set
CI tests, so every package pyproject names must be locked at a version inside its range.
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

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


def pip_command(requirements_file: Path, workdir: Path, target: Target) -> list[str]:
    # --target: pip refuses --platform otherwise (nothing is written there with --dry-run). --retries on the
    # command line, whatever pip's config says, so that an unreachable index is retried and shows in the log.
    platforms = [arg for tag in target.platforms for arg in ("--platform", tag)]
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--no-deps",
        "--only-binary=:all:",
        "--ignore-installed",
        "--target",
        str(workdir / "target"),
        "--disable-pip-version-check",
        "--retries",
        "3",
        "--log",
        str(workdir / "pip.log"),
        "--python-version",
        PYTHON,
        "--implementation",
        "cp",
        "--abi",
        "cp" + PYTHON.replace(".", ""),
        *platforms,
        "-r",
        str(requirements_file),
    ]


def run_pip(lines: list[str], target: Target) -> tuple[int, str, str]:
    """pip's exit status, its output and its debug log for a dry run of ``lines`` on ``target``."""
    with tempfile.TemporaryDirectory(prefix="check-locks-") as tmp:
        workdir = Path(tmp)
        (workdir / "requirements.txt").write_text("\n".join(lines) + "\n")
        result = subprocess.run(
            pip_command(workdir / "requirements.txt", workdir, target), capture_output=True, text=True
        )
        log = (workdir / "pip.log").read_text(errors="replace") if (workdir / "pip.log").exists() else ""
    return result.returncode, result.stdout + result.stderr, log


NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")


class RegistryError(Exception):
    """pip could not ask the registry: the lock's state for this target is unknown."""


def unreachable(name: str, log: str) -> str | None:
    """Why pip could not read ``name``'s index page (from its debug log), or None when it could (a 404
    means the project does not exist there: an answer, not an outage)."""
    page = re.compile(rf"Could not fetch URL \S*/{re.escape(canonicalize_name(name))}/: (?!404 )(.*?) - skipping")
    found = page.search(log)
    if not found:
        return None
    reason = " ".join(found.group(1).split())
    errno = re.search(r"\[Errno -?\d+\] [^'\")]*", reason)  # urllib3 nests the cause deep inside
    return f"{reason.split(':')[0]}: {errno.group(0)}" if errno else reason[:160]


def unresolvable(returncode: int, output: str, log: str) -> str | None:
    """The lock line pip found no wheel for; None when pip succeeded; RegistryError when the index
    did not answer, or pip failed without naming a package (a download that broke off)."""
    if returncode == 0:
        return None
    found = NOT_FOUND.search(output)
    if not found:
        tail = output.strip().splitlines()[-1] if output.strip() else f"exit status {returncode}"
        raise RegistryError(f"pip failed without naming a package: {tail[:200]}")
    line = found.group(1)
    why = unreachable(Requirement(line).name, log)
    if why:
        raise RegistryError(f"the index did not answer for {line} ({why})")
    return line


def check(requirements: list[Requirement], target: Target, pip=run_pip) -> list[str]:
    """The lines of ``requirements`` that have no wheel for ``target``. pip stops at the first, so each
    one found is left out and pip runs again."""
    remaining = [str(r) for r in requirements if applies(r, target)]
    missing = []
    while remaining:
        line = unresolvable(*pip(remaining, target))
        if line is None:
            break
        name = canonicalize_name(Requirement(line).name)
        same = [r for r in remaining if canonicalize_name(Requirement(r).name) == name]
        if not same:
            raise RegistryError(f"pip named {line}, which is not a line it was given")
        missing.append(same[0])
        remaining.remove(same[0])
    return missing


def check_lock(path: Path, target: Target, pip=run_pip) -> tuple[str, list[str]]:
    """One report line for ``path`` on ``target`` and the lines without a wheel there."""
    requirements = read_lock(path)
    start = time.perf_counter()
    try:
        missing = check(requirements, target, pip)
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


def main(argv: list[str], pip=run_pip) -> int:
    locks = [Path(a) for a in argv] or default_locks()
    failures = []
    try:
        outside = [] if argv else check_ranges(REPO / "pyproject.toml", locks)
        if outside:
            print(f"check_locks: {'; '.join(outside)}: lock a version inside the range, or widen it", file=sys.stderr)
            return 1
        for path in locks:
            read_lock(path)  # a malformed line fails before pip runs
            # one target after another: checked at once, the three took longer here (pip unpacks and
            # hashes each wheel, and these machines have 2 cores)
            for target in TARGETS:
                if target.name == this_machine():  # `make install` installs this one for real
                    print(f"{path.name} {target.name}: this machine; make install installs it", flush=True)
                    continue
                line, missing = check_lock(path, target, pip)
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
