"""describe_data / build_data end to end on small real-format files."""

import dataclasses
import json

import datafiles
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)
from torch.utils.data import DataLoader

from peftlab.data import (
    DATASET_NAMES,
    ArrayDataset,
    FileDataset,
    build_data,
    describe_data,
    format_data_info,
    load_splits,
)
from peftlab.utils.errors import DataError

MEAN, STD = (0.2, 0.5, 0.7), (0.25, 0.5, 1.0)


def image_ids(images: torch.Tensor | np.ndarray) -> list[int]:
    """The index each fixture image carries in its first two pixels."""
    flat = torch.as_tensor(images).reshape(len(images), -1).long()
    return (flat[:, 0] * 256 + flat[:, 1]).tolist()


@pytest.fixture
def idx_dir(tmp_path):
    """(folder, arrays written) of a small Fashion-MNIST-like IDX dataset."""
    return tmp_path / "idx", datafiles.write_idx_dataset(tmp_path / "idx")


@pytest.fixture
def idx_cfg(idx_dir):
    def make(**overrides):
        return datafiles.make_cfg(root=str(idx_dir[0]), **overrides)

    return make


def test_grayscale_becomes_three_normalised_channels(idx_dir, idx_cfg):
    _, arrays = idx_dir
    bundle = build_data(idx_cfg(), img_size=28, mean=MEAN, std=STD)
    x, y = bundle.test[3]
    assert x.shape == (3, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    source = torch.from_numpy(arrays["test_images"][3]).float() / 255
    for c in range(3):
        torch.testing.assert_close(x[c], (source - MEAN[c]) / STD[c])
    assert y == arrays["test_labels"][3]


def test_resize_is_bilinear_antialiased_and_done_once(idx_dir, idx_cfg):
    _, arrays = idx_dir
    bundle = build_data(idx_cfg(), img_size=16)
    assert isinstance(bundle.train, ArrayDataset)
    assert bundle.train.images.shape == (60, 1, 16, 16) and bundle.train.images.dtype == torch.uint8
    x, _ = bundle.train[0]
    assert x.shape == (3, 16, 16)
    reference = F.interpolate(torch.from_numpy(arrays["train_images"][:1, None]).float(), size=(16, 16),
                              mode="bilinear", antialias=True, align_corners=False)[0, 0]  # fmt: skip
    torch.testing.assert_close((x[0] + 1) / 2 * 255, reference, atol=0.51, rtol=0)


def test_in_chans_1_turns_rgb_into_luma(tmp_path):
    arrays = datafiles.write_cifar10_binary(tmp_path)
    bundle = build_data(
        datafiles.make_cfg(name="cifar10", root=str(tmp_path)), img_size=32, in_chans=1, mean=(0.5,), std=(0.5,)
    )
    x, _ = bundle.test[0]
    assert x.shape == (1, 32, 32)
    rgb = torch.from_numpy(arrays["test_data"][0].reshape(3, 32, 32)).float()
    luma = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).round()
    torch.testing.assert_close(x[0], (luma / 255 - 0.5) / 0.5)


def test_val_is_carved_from_train_and_test_is_untouched(idx_dir, idx_cfg):
    _, arrays = idx_dir
    bundle = build_data(idx_cfg(val_fraction=0.25, split_seed=7), img_size=28)
    train_ids, val_ids = image_ids(bundle.train.images), image_ids(bundle.val.images)
    assert len(val_ids) == 15 and len(train_ids) == 45
    assert not set(train_ids) & set(val_ids)
    assert sorted(train_ids + val_ids) == list(range(60))
    for ids, dataset in ((train_ids, bundle.train), (val_ids, bundle.val)):  # labels travel with images
        assert dataset.labels.tolist() == arrays["train_labels"][ids].tolist()
    np.testing.assert_array_equal(bundle.test.images[:, 0].numpy(), arrays["test_images"])
    assert bundle.test.labels.tolist() == arrays["test_labels"].tolist()
    assert bundle.info.split_sizes == {"train": 45, "val": 15, "test": 20}


def test_split_is_deterministic_per_seed(idx_cfg):
    first, _ = load_splits(idx_cfg(val_fraction=0.2, split_seed=1))
    again, _ = load_splits(idx_cfg(val_fraction=0.2, split_seed=1))
    other, _ = load_splits(idx_cfg(val_fraction=0.2, split_seed=2))
    assert image_ids(first["val"].images) == image_ids(again["val"].images)
    assert image_ids(first["val"].images) != image_ids(other["val"].images)


def test_subsets_are_stratified_and_leave_val_boundary_alone(idx_cfg):
    full, _ = load_splits(idx_cfg(val_fraction=0.2))
    splits, info = load_splits(idx_cfg(val_fraction=0.2, train_subset=20, val_subset=5, test_subset=10))
    assert info.split_sizes == {"train": 20, "val": 5, "test": 10}
    assert np.bincount(splits["train"].labels, minlength=10).tolist() == [2] * 10
    assert set(image_ids(splits["train"].images)) <= set(image_ids(full["train"].images))
    assert set(image_ids(splits["val"].images)) <= set(image_ids(full["val"].images))
    assert len(set(splits["test"].labels.tolist())) == 10
    assert sum("subset" in note for note in info.notes) == 3


def test_classes_make_a_relabelled_label_set(idx_dir, idx_cfg):
    _, arrays = idx_dir
    splits, info = load_splits(idx_cfg(name="fashion_mnist", classes=[7, 2], val_fraction=0.25))
    assert info.num_classes == 2 and info.class_names == ["Sneaker", "Pullover"]
    for split in ("train", "val"):
        original = arrays["train_labels"][image_ids(splits[split].images)]
        assert set(original.tolist()) <= {7, 2}
        assert splits[split].labels.tolist() == [0 if label == 7 else 1 for label in original]
    assert len(splits["train"]) + len(splits["val"]) == int(np.isin(arrays["train_labels"], [7, 2]).sum())
    test_original = arrays["test_labels"][image_ids(splits["test"].images)]
    assert splits["test"].labels.tolist() == [0 if label == 7 else 1 for label in test_original]
    assert any("relabelled" in note for note in info.notes)


def test_augmentation_only_on_train_and_seeded_by_torch(idx_cfg):
    plain = build_data(idx_cfg(val_fraction=0.2), img_size=28)
    augmented = build_data(idx_cfg(val_fraction=0.2, augment=True), img_size=28)
    torch.manual_seed(0)
    first = torch.stack([augmented.train[i][0] for i in range(10)])
    torch.manual_seed(0)
    again = torch.stack([augmented.train[i][0] for i in range(10)])
    assert torch.equal(first, again)
    assert not torch.equal(first, torch.stack([plain.train[i][0] for i in range(10)]))
    assert torch.equal(augmented.val[0][0], plain.val[0][0]) and torch.equal(augmented.test[0][0], plain.test[0][0])
    assert augmented.train.transform.crop_pad == 4  # 4 px per 32 px, rounded


def test_flips_are_off_for_digits_only(idx_cfg):
    assert not build_data(idx_cfg(name="mnist", augment=True), img_size=28).train.transform.flip
    assert build_data(idx_cfg(name="fashion_mnist", augment=True), img_size=28).train.transform.flip


def all_crops(image: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every pad-shifted crop of a C x S x S image, with and without a horizontal flip."""
    size = image.shape[-1]
    padded = F.pad(image, (pad,) * 4)
    crops = [padded[:, i : i + size, j : j + size] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    return crops + [crop.flip(-1) for crop in crops]


@pytest.mark.parametrize("batched", [True, False])
def test_augmented_images_are_shifted_and_flipped_copies(idx_cfg, batched):
    bundle = build_data(idx_cfg(augment=True), img_size=32, mean=(0.0,), std=(1 / 255,))  # x -> x exactly
    transform = bundle.train.transform
    indices = list(range(24))
    torch.manual_seed(3)
    if batched:
        images = bundle.train.get_batch(indices)[0]
    else:
        images = torch.stack([bundle.train[i][0] for i in indices])
    torch.manual_seed(3)
    again = bundle.train.get_batch(indices)[0] if batched else torch.stack([bundle.train[i][0] for i in indices])
    assert torch.equal(images, again)
    unchanged = 0
    for i, augmented in zip(indices, images):
        source = bundle.train.images[i].expand(3, -1, -1).float()
        assert any(torch.equal(augmented, crop) for crop in all_crops(source, transform.crop_pad))
        unchanged += torch.equal(augmented, source)
    assert unchanged < 4  # 1 in 162 chance each


def test_data_loader_uses_the_batched_fetch(idx_cfg):
    bundle = build_data(idx_cfg(augment=True), img_size=32)
    loader = DataLoader(bundle.train, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert [len(y) for _, y in batches] == [16, 16, 16, 12]
    assert batches[0][0].shape == (16, 3, 32, 32) and batches[0][1].dtype == torch.int64


def test_tiny_imagenet_items_are_decoded_lazily(tmp_path):
    datafiles.write_tiny_imagenet(tmp_path)
    bundle = build_data(datafiles.make_cfg(name="tiny_imagenet", root=str(tmp_path), val_fraction=0.25), img_size=8)
    assert isinstance(bundle.train, FileDataset)
    assert bundle.info.split_sizes == {"train": 9, "val": 3, "test": 6}
    x, y = bundle.test[1]
    assert x.shape == (3, 8, 8) and y == 0
    # val_1 is a flat (0, 0, 30) JPEG: blue ~ 30/255, red and green ~ 0 (JPEG is lossy).
    expected = torch.tensor([0.0, 0.0, 30 / 255]).view(3, 1, 1) * 2 - 1
    torch.testing.assert_close(x, expected.expand(3, 8, 8), atol=0.05, rtol=0)


def test_image_folder_builds_and_refuses_undecodable_files(tmp_path):
    datafiles.write_image_folder(tmp_path, split=True)
    bundle = build_data(datafiles.make_cfg(name="imagefolder", root=str(tmp_path), augment=True), img_size=24)
    assert bundle.info.class_names == ["cat", "dog", "emu"]
    assert bundle.train[0][0].shape == (3, 24, 24)
    (tmp_path / "test" / "dog" / "1.png").write_bytes(b"not a png")
    bad = [i for i, path in enumerate(bundle.test.paths) if path.endswith("dog/1.png")][0]
    with pytest.raises(DataError, match="cannot decode image .*dog/1.png"):
        bundle.test[bad]


@pytest.mark.parametrize(
    "name, write, sizes",
    [
        ("mnist", "write_idx_dataset", {"train": 60, "test": 20}),
        ("fashion_mnist", "write_idx_dataset", {"train": 60, "test": 20}),
        ("cifar10", "write_cifar10_python", {"train": 30, "test": 10}),
        ("cifar10", "write_cifar10_binary", {"train": 30, "test": 10}),
        ("cifar100", "write_cifar100_python", {"train": 200, "test": 100}),
        ("cifar100", "write_cifar100_binary", {"train": 200, "test": 100}),
        ("tiny_imagenet", "write_tiny_imagenet", {"train": 12, "test": 6}),
        ("imagefolder", "write_image_folder", {"train": 12, "test": 3}),
    ],
)
def test_every_dataset_describes_and_builds(tmp_path, name, write, sizes):
    getattr(datafiles, write)(tmp_path / "data")
    cfg = datafiles.make_cfg(name=name, root=str(tmp_path / "data"), val_fraction=0.1)
    info = describe_data(cfg)
    assert info.name == name and info.source == str((tmp_path / "data").resolve())
    assert info.split_sizes["train"] + info.split_sizes["val"] == sizes["train"]
    assert info.split_sizes["test"] == sizes["test"]
    assert info.num_classes == len(info.class_names) and info.sha256
    assert json.loads(json.dumps(dataclasses.asdict(info))) == dataclasses.asdict(info)
    bundle = build_data(cfg, img_size=20)
    x, y = bundle.train[0]
    assert x.shape == (3, 20, 20) and 0 <= y < info.num_classes
    assert len(bundle.test) == sizes["test"]


def test_dataset_names_cover_every_layout_and_suite_task():
    from peftlab.config.suites import FGVC_TASKS, VTAB1K_TASKS
    from peftlab.data.sources import LAYOUTS

    stored = tuple(name for name in DATASET_NAMES if name != "filelist" and "/" not in name)
    assert stored == tuple(LAYOUTS)
    assert {name for name in DATASET_NAMES if "/" in name} == (
        {f"vtab1k/{t}" for t in VTAB1K_TASKS} | {f"fgvc/{t}" for t in FGVC_TASKS}
    )
    assert len(VTAB1K_TASKS) == 19 and len(FGVC_TASKS) == 5


def test_format_data_info_is_a_readable_summary(idx_cfg):
    info = describe_data(idx_cfg(val_fraction=0.5, classes=[0, 1, 2]))
    text = format_data_info(info)
    assert text.splitlines()[0] == "dataset   fashion_mnist"
    assert "classes   3: T-shirt/top, Trouser, Pullover" in text
    assert (
        f"splits    train {info.split_sizes['train']}  val {info.split_sizes['val']}  test {info.split_sizes['test']}"
        in text
    )
    assert "train-images-idx3-ubyte.gz" in text and info.sha256["train-images-idx3-ubyte.gz"] in text
    assert "relabelled" in text


def test_empty_train_split_is_refused(idx_cfg):
    with pytest.raises(DataError, match="train split is empty"):
        describe_data(idx_cfg(train_subset=0))


def test_large_splits_are_resized_per_batch_with_the_same_result(idx_cfg, monkeypatch):
    from peftlab.data import datasets

    eager = build_data(idx_cfg(), img_size=40, mean=MEAN, std=STD)
    monkeypatch.setattr(datasets, "PRERESIZE_LIMIT_BYTES", 1000)
    lazy = build_data(idx_cfg(), img_size=40, mean=MEAN, std=STD)
    assert lazy.train.images.shape == (60, 1, 28, 28) and eager.train.images.shape == (60, 1, 40, 40)
    assert torch.equal(lazy.train[7][0], eager.train[7][0])
    assert torch.equal(lazy.test.get_batch([0, 3])[0], eager.test.get_batch([0, 3])[0])


def test_empty_val_split_works(idx_cfg):
    bundle = build_data(idx_cfg(val_fraction=0.0, augment=True), img_size=28)
    assert len(bundle.val) == 0 and bundle.val.get_batch([])[0].shape == (0, 3, 28, 28)


def test_data_info_says_which_split_is_which(tmp_path):
    from peftlab.data.build import describe_data, format_data_info

    datafiles.write_image_folder(tmp_path, split=True)
    (tmp_path / "test").rename(tmp_path / "val")
    info = describe_data(datafiles.make_cfg(name="imagefolder", root=str(tmp_path), val_fraction=0.2))
    assert info.split_sources == {
        "train": f"{tmp_path / 'train'} minus val",
        "val": f"20% of {tmp_path / 'train'} (seed 0)",
        "test": str(tmp_path / "val"),
    }
    text = format_data_info(info)
    assert f"test      {tmp_path / 'val'}" in text and "is used as the TEST split" in text
    (tmp_path / "val").rename(tmp_path / "holdout")
    info = describe_data(datafiles.make_cfg(name="imagefolder", root=str(tmp_path), test_dir=str(tmp_path / "holdout")))
    assert info.split_sources["test"] == str(tmp_path / "holdout")
