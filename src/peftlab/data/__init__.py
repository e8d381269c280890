"""peftlab's data: offline dataset readers, safe unpickling, splits, checksums, torch datasets.

    info = describe_data(cfg.data)                       # read + check files, no tensors
    bundle = build_data(cfg.data, img_size=32)           # bundle.train / .val / .test / .info
    print(format_data_info(bundle.info))

Modules: sources (where files are found, downloads), opening (regular files only, never a blocking open
or read), manifest, image_checks, splits (seeded index arithmetic), datasets (transforms and torch datasets),
build (the functions above), loading (batches on the device), cache (`data.cache`: decoded folder splits as
uint8 .npy files), demo (VTAB-1k's layout from Fashion-MNIST); the file formats in ``readers/`` and text tasks
in ``text/``.
"""

from peftlab.config.checks import DATASET_NAMES
from peftlab.data.build import DataBundle, DataInfo, build_data, describe_data, format_data_info, load_splits

__all__ = [
    "DATASET_NAMES",
    "ArrayDataset",
    "DataBundle",
    "DataInfo",
    "FileDataset",
    "build_data",
    "describe_data",
    "format_data_info",
    "load_splits",
]


def __getattr__(name: str):
    """The torch datasets, imported when first asked for: reading and describing data needs no torch."""
    if name in ("ArrayDataset", "FileDataset"):
        from peftlab.data import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
