"""The locks install where researchers run: markers parse, the CUDA wheels are Linux-only, and
scripts/check_locks.py (which asks the registry, in CI) evaluates markers per target and reads pip's
answers right. Nothing here uses the network: pip is faked at the seam that runs it."""

import importlib.util
import re
import sys

import pytest
from packaging.utils import canonicalize_name
from testkit import REPO

spec = importlib.util.spec_from_file_location("check_locks", REPO / "scripts" / "check_locks.py")
check_locks = importlib.util.module_from_spec(spec)
sys.modules["check_locks"] = check_locks  # dataclasses resolve their module by name
spec.loader.exec_module(check_locks)

LOCKS = check_locks.default_locks()
TARGETS = {t.name: t for t in check_locks.TARGETS}
LINUX_ONLY = ("cuda-", "nvidia-", "triton")  # no macOS wheels: torch requires them on Linux only


def test_every_lock_is_found_and_requirements_lock_comes_first():
    assert [p.name for p in LOCKS] == [
        "requirements.lock",
        "requirements-ray.lock",
        "requirements-slurm.lock",
        "requirements-track.lock",
    ]


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_every_line_is_a_pin_whose_marker_parses(lock):
    requirements = check_locks.read_lock(lock)  # raises LockError on a line that is not name==version [; marker]
    assert requirements
    for requirement in requirements:
        for target in check_locks.TARGETS:
            check_locks.applies(requirement, target)  # the marker evaluates for every target


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_the_cuda_wheels_and_triton_install_on_linux_only(lock):
    for requirement in check_locks.read_lock(lock):
        linux_only = canonicalize_name(requirement.name).startswith(LINUX_ONLY)
        assert check_locks.applies(requirement, TARGETS["macos-arm64"]) is not linux_only, str(requirement)
        assert check_locks.applies(requirement, TARGETS["linux-aarch64"]), str(requirement)
        assert check_locks.applies(requirement, TARGETS["linux-x86_64"]), str(requirement)


def test_this_machine_installs_every_line():
    """`make install` on Linux x86_64 installs exactly what it did before the markers: every line."""
    from packaging.markers import default_environment

    if default_environment()["sys_platform"] != "linux":
        pytest.skip("not a Linux machine")
    requirements = check_locks.read_lock(REPO / "requirements.lock")
    assert all(r.marker is None or r.marker.evaluate() for r in requirements)


@pytest.mark.parametrize(
    "line, why",
    [
        ("torch>=2.0", "is not pinned"),
        ("torch==2.1,<3", "is not pinned"),
        ("torch==2.1 ; sys_platform ==", "expected name==version [; marker]"),
    ],
)
def test_a_line_that_is_not_a_pin_is_refused_naming_the_lock_and_line(tmp_path, line, why):
    lock = tmp_path / "requirements-x.lock"
    lock.write_text("# a comment\nnumpy==2.4.6\n" + line + "\n")
    with pytest.raises(check_locks.LockError, match=rf"^requirements-x.lock line 3: [^\n]*{re.escape(why)}[^\n]*$"):
        check_locks.read_lock(lock)


def test_linux_targets_pass_every_manylinux_tag_up_to_2_28():
    """pip's --platform matches only the tags given: bitsandbytes' aarch64 wheel is manylinux_2_24 only."""
    aarch64 = TARGETS["linux-aarch64"].platforms
    assert {
        "manylinux_2_17_aarch64",
        "manylinux_2_24_aarch64",
        "manylinux_2_28_aarch64",
        "manylinux2014_aarch64",
    } <= set(aarch64)
    assert "manylinux_2_29_aarch64" not in aarch64 and "manylinux_2_16_aarch64" not in aarch64
    assert {"manylinux_2_5_x86_64", "manylinux1_x86_64", "manylinux_2_28_x86_64"} <= set(
        TARGETS["linux-x86_64"].platforms
    )


def test_the_pip_command_resolves_wheels_only_without_dependencies_for_the_target(tmp_path):
    command = check_locks.pip_command(tmp_path / "r.txt", tmp_path, TARGETS["macos-arm64"])
    joined = " ".join(command)
    for flag in (
        "--dry-run",
        "--no-deps",
        "--only-binary=:all:",
        "--ignore-installed",
        "--platform macosx_14_0_arm64",
        "--python-version 3.11",
        "--implementation cp",
        "--abi cp311",
        f"-r {tmp_path / 'r.txt'}",
    ):
        assert flag in joined


NO_WHEEL = (
    "ERROR: Could not find a version that satisfies the requirement {0} (from versions: none)\n"
    "ERROR: No matching distribution found for {0}\n"
)


def fake_pip(no_wheel: set[str], log: str = ""):
    """pip as it answers: it stops at the first line it finds no wheel for."""
    calls = []

    def pip(lines, target):
        calls.append(list(lines))
        for line in lines:
            if line.split("==")[0] in no_wheel:
                return 1, NO_WHEEL.format(line), log
        return 0, "Would install " + " ".join(lines), log

    return pip, calls


def test_every_line_without_a_wheel_is_found_and_lines_left_out_by_markers_never_reach_pip(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        'numpy==2.4.6\ncuda-bindings==13.5.0 ; sys_platform == "linux"\ntriton==3.8.0\nPyYAML==6.0.3\nappnope==0.1.4\n'
    )
    pip, calls = fake_pip({"triton", "appnope"})
    line, missing = check_locks.check_lock(lock, TARGETS["macos-arm64"], pip)
    assert missing == ["triton==3.8.0", "appnope==0.1.4"]
    assert line.startswith("requirements.lock macos-arm64: FAILED, no wheel for triton==3.8.0, appnope==0.1.4")
    assert all("cuda-bindings==13.5.0" not in c for c in calls) and calls[-1] == ["numpy==2.4.6", "PyYAML==6.0.3"]
    line, missing = check_locks.check_lock(lock, TARGETS["linux-x86_64"], fake_pip(set())[0])
    assert missing == [] and line.startswith("requirements.lock linux-x86_64: ok, 5 lines resolve (")


def test_main_fails_in_one_line_naming_lock_target_and_package(tmp_path, capsys):
    lock = tmp_path / "requirements-x.lock"
    lock.write_text("numpy==2.4.6\ntriton==3.8.0\n")
    pip, _ = fake_pip({"triton"})
    assert check_locks.main([str(lock)], pip) == 1
    out, err = capsys.readouterr()
    assert out.count("\n") == 3 and "requirements-x.lock linux-aarch64: FAILED, no wheel for triton==3.8.0" in out
    assert err.count("\n") == 1 and err.startswith(
        "check_locks: no wheel for requirements-x.lock on macos-arm64: "
        "triton==3.8.0; requirements-x.lock on linux-aarch64"
    )


UNREACHABLE_LOG = (
    "Could not fetch URL https://pypi.org/simple/triton/: connection error: HTTPSConnectionPool("
    "host='pypi.org', port=443): Max retries exceeded with url: /simple/triton/ (Caused by "
    "NewConnectionError('<HTTPSConnection object>: Failed to establish a new connection: [Errno 111] "
    "Connection refused')) - skipping\n"
)


def test_an_index_that_does_not_answer_makes_the_lock_unknown_not_unresolvable(tmp_path, capsys):
    lock = tmp_path / "requirements-x.lock"
    lock.write_text("numpy==2.4.6\ntriton==3.8.0\n")
    pip, _ = fake_pip({"triton"}, UNREACHABLE_LOG)
    assert check_locks.main([str(lock)], pip) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "requirements-x.lock is unknown: " in err
    assert "the index did not answer for triton==3.8.0 (connection error: [Errno 111] Connection refused)" in err


def test_a_404_is_an_answer_and_a_pip_failure_naming_no_package_is_unknown():
    log_404 = "Could not fetch URL https://pypi.org/simple/triton/: 404 Client Error: Not Found for url - skipping\n"
    assert check_locks.unresolvable(1, NO_WHEEL.format("triton==3.8.0"), log_404) == "triton==3.8.0"
    assert check_locks.unresolvable(0, "Would install triton-3.8.0", "") is None
    with pytest.raises(check_locks.RegistryError, match="pip failed without naming a package: .*Read timed out"):
        check_locks.unresolvable(2, "ERROR: HTTPSConnectionPool(host='files.pythonhosted.org'): Read timed out.", "")


def test_every_package_pyproject_names_is_locked_inside_its_range():
    """pyproject states the supported ranges, the locks the tested set: each pin lies inside its range."""
    assert check_locks.check_ranges(REPO / "pyproject.toml", LOCKS) == []
    names = {canonicalize_name(r.name) for r in check_locks.pyproject_requirements(REPO / "pyproject.toml")}
    assert {"torch", "timm", "peft", "transformers", "bitsandbytes", "optuna", "submitit"} <= names


def test_a_pin_outside_its_range_or_missing_from_the_locks_is_named(tmp_path, capsys):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\ndependencies = ["torch>=2.14,<3", "timm>=1.0.21,<2"]\n'
        '[project.optional-dependencies]\nslurm = ["submitit>=1.5,<2"]\n'
    )
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.13.0\ntimm==1.0.31\n")
    assert check_locks.check_ranges(pyproject, [lock]) == [
        "torch==2.13.0 is outside pyproject's torch<3,>=2.14",
        "submitit<2,>=1.5 is in no lock",
    ]
