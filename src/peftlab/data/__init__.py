"""peftlab's data: offline dataset readers, safe unpickling, splits, checksums, torch datasets.

    info = describe_data(cfg.data)                       # read + check files, no tensors
    bundle = build_data(cfg.data, img_size=32)           # bundle.train / .val / .test / .info
    print(format_data_info(bundle.info))

Modules: records, binary_readers, folder_readers, list_readers (file formats), opening (regular
files only, never a blocking open or read), safe_pickle (numpy-only unpickler, bounded before loading), sources (where
files are found, downloads), splits (seeded index arithmetic), datasets (transforms and
torch datasets), build (the functions above), loading (batches on the device: DataLoader
workers for folder splits), cache (`data.cache`: decoded folder splits as uint8 .npy files).
"""

from peftlab.config.checks import DATASET_NAMES
from peftlab.data.build import DataBundle, DataInfo, build_data, describe_data, format_data_info, load_splits
from peftlab.data.datasets import ArrayDataset, FileDataset

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
