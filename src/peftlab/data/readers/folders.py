"""Readers of image folders: Tiny ImageNet's layout and class folders (ImageFolder), kept as file
paths and decoded later, per item; records.py says what every reader returns."""

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peftlab.data.opening import check_data_file, check_regular, stat_data_path
from peftlab.data.readers.records import IMAGE_EXTENSIONS, RawData, Samples, hash_file, hash_files, read_lines
from peftlab.data.splits import carve_test
from peftlab.utils.errors import DataError
from peftlab.utils.files import one_line

# A TinyImageNet wnid names a folder under train/: a plain name, never a path.
PLAIN_NAME = re.compile(r"[^/\\\0]+")


def list_images(directory: Path) -> list[Path]:
    """The image files of ``directory``; a symlink to nothing is a DataError, not a silent gap."""
    images = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())
    for path in images:
        check_data_file(path)  # a FIFO, a device or a /proc file is one DataError line, not a hang
    return images


def walk_image_files(images) -> Iterator[Path]:
    """The image files ``images`` names (a path or its text, or several), one at a time: a file as given, a folder
    as the image files in it and in its subfolders (class folders), in the order of their paths (each folder's
    names sorted, subfolders walked where they sort), links to folders not followed (``peftlab predict``'s). Only
    one folder's names are held at a time, so a folder of any size streams. A path that does not exist, a folder
    without an image file, and a path or a folder's image file that is no regular file (a FIFO, a device, a link
    to one: named as what it is) is one DataError line."""
    given = [images] if isinstance(images, str | Path) else images
    if isinstance(given, str | bytes) or not given:
        raise DataError("no image given: give image files or folders")
    for image in given:
        path = Path(image)
        st = stat_data_path(path, missing=f"{path}: no such image file or folder")
        if stat.S_ISDIR(st.st_mode):
            found = False
            for file in walk_folder(path):
                found = True
                yield file
            if not found:
                raise DataError(f"{path}: the folder holds no image file ({' '.join(IMAGE_EXTENSIONS)})")
        else:
            check_regular(path, st)  # a FIFO, a device, /dev/zero through a link: named, never opened
            yield path


def walk_folder(folder: Path) -> Iterator[Path]:
    """The image files under ``folder`` in the order of their paths, as ``sorted`` orders Path objects: a
    folder's names sorted, a subfolder walked where its name sorts. A link to a folder is not followed."""
    try:
        with os.scandir(folder) as entries:
            listed = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries)
    except OSError as err:
        raise DataError(f"cannot read the folder {folder}: {one_line(err)}") from None
    for name, is_dir in listed:
        path = folder / name
        if is_dir:
            yield from walk_folder(path)
        elif Path(name).suffix.lower() in IMAGE_EXTENSIONS and not path.is_dir():  # a link to a folder: skipped
            check_data_file(path)  # a FIFO, a device or a broken link under an image's name: one line
            yield path


def file_samples(paths: list[Path], labels: list[int]) -> Samples:
    return Samples(np.array([str(p) for p in paths], dtype=str), np.array(labels, dtype=np.int64))


def read_tiny_imagenet(directory: Path) -> RawData:
    """TinyImageNet-200: train/<wnid>/images/*.JPEG, val/images + val/val_annotations.txt, wnids.txt.

    Its test split has no labels, so its val split becomes peftlab's test split.
    Classes are the sorted wnids (the order an ImageFolder over train/ would give).
    """
    wnids_path = directory / "wnids.txt"
    annotations_path = directory / "val" / "val_annotations.txt"
    wnids = sorted({line.strip() for line in read_lines(wnids_path) if line.strip()})
    if not wnids:
        raise DataError(f"{wnids_path}: expected one wnid a line, found none")
    if bad := next((w for w in wnids if not PLAIN_NAME.fullmatch(w) or w in (".", "..")), None):
        raise DataError(
            f"{wnids_path}: wnid {bad[:80]!r} is not a plain folder name (no '/', '\\', '..' or "
            "absolute path): expected names such as n01443537"
        )
    class_index = {wnid: i for i, wnid in enumerate(wnids)}

    train_paths, train_labels = [], []
    for wnid in wnids:
        images_dir = directory / "train" / wnid / "images"
        if not images_dir.is_dir():
            raise DataError(f"missing folder {images_dir} (wnid {wnid} is listed in {wnids_path.name})")
        images = list_images(images_dir)
        if not images:
            raise DataError(f"{images_dir}: expected training images, found none")
        train_paths += images
        train_labels += [class_index[wnid]] * len(images)

    test_paths, test_labels = [], []
    lines = read_lines(annotations_path)
    val_images = (directory / "val" / "images").resolve()
    for line_number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in class_index:
            raise DataError(
                f"{annotations_path} line {line_number}: expected 'filename<TAB>wnid<TAB>bbox' "
                f"with a wnid from {wnids_path.name}"
            )
        image_path = directory / "val" / "images" / fields[0]
        # realpath, not resolve(): a symlink loop is left in place here and refused by stat below
        if "\0" in fields[0] or not Path(os.path.realpath(image_path)).is_relative_to(val_images):
            raise DataError(
                f"{annotations_path} line {line_number}: {fields[0][:200]!r} is outside {val_images}: expected "
                "a file name in val/images"
            )
        try:
            os.stat(image_path)
        except FileNotFoundError:
            raise DataError(
                f"missing file {str(image_path)[:300]} (listed in {annotations_path.name} line {line_number})"
            ) from None
        except OSError as err:  # a symlink loop, a name longer than the system allows
            raise DataError(
                f"{annotations_path} line {line_number}: {fields[0][:200]!r}: {err.strerror or err}"
            ) from None
        check_data_file(image_path)
        test_paths.append(image_path)
        test_labels.append(class_index[fields[1]])
    if not test_paths:
        raise DataError(f"{annotations_path}: expected one annotated image a line, found none")

    all_images = train_paths + test_paths
    sha256 = {
        "wnids.txt": hash_file(wnids_path),
        "val/val_annotations.txt": hash_file(annotations_path),
        f"images:{len(all_images)}": hash_files(all_images, directory),
    }
    notes = ["TinyImageNet's labelled val split is used as the test split; its unlabelled test split is not used"]
    train, test = file_samples(train_paths, train_labels), file_samples(test_paths, test_labels)
    return RawData(train, test, wnids, str(directory), sha256, notes)


def read_class_folders(
    directory: Path, class_names: list[str] | None = None
) -> tuple[list[Path], list[int], list[str]]:
    """Images in `directory/<class>/`; classes are the sorted folder names unless given."""
    folders = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is None:
        class_names = folders
        if not folders:
            raise DataError(f"{directory}: expected class folders (<class>/*.png|jpg|...), found none")
        if empty := [name for name in folders if not list_images(directory / name)]:
            raise DataError(f"{directory}: class folders {empty} hold no images ({' '.join(IMAGE_EXTENSIONS)})")
        if len(folders) < 2:
            raise DataError(f"{directory}: found one class folder ({folders[0]}): expected at least two classes")
    elif unknown := sorted(set(folders) - set(class_names)):
        raise DataError(f"{directory}: class folders {unknown} do not exist in the train split")
    paths, labels = [], []
    for label, name in enumerate(class_names):
        if not (directory / name).is_dir():
            continue
        images = list_images(directory / name)
        paths += images
        labels += [label] * len(images)
    return paths, labels, class_names


def check_separate_splits(train_paths: list[Path], test_paths: list[Path], roots: list[Path]) -> None:
    """Every image file lies inside the data folders (a link leaving them is refused, as
    TinyImageNet's reader refuses it), and no file is both a training and a test image (a
    data.test_dir equal to, or inside, the training folder would test on the training set)."""
    inside = [root.resolve() for root in roots]
    real = {}
    for path in train_paths + test_paths:
        real[path] = path.resolve()
        if not any(real[path].is_relative_to(root) for root in inside):
            raise DataError(
                f"{path} links to {real[path]}, outside {roots[0]}"
                f"{' and data.test_dir' if len(roots) > 1 else ''}: expected the images inside it"
            )
    shared = {real[p] for p in train_paths} & {real[p] for p in test_paths}
    if shared:
        raise DataError(
            f"{len(shared)} images are both training and test images (e.g. {min(shared)}): expected "
            "data.test_dir to be a folder apart from the training images"
        )


@dataclass
class FolderSplits:
    """An image folder's splits as listed (no image opened): what `read_image_folder` hashes and a pre-flight checks."""

    train_paths: list[Path]
    train_labels: list[int]
    test_paths: list[Path]
    test_labels: list[int]
    class_names: list[str]
    notes: list[str]
    train_dir: Path


def folder_splits(directory: Path, split_seed: int, test_dir: Path | None = None) -> FolderSplits:
    """The train and test images of an image folder (`read_image_folder`'s layouts) by listing its folders: class
    folders (at least two), the test split's classes among the training split's, both splits apart; one DataError
    line for the first that is not so. Opens no image."""
    notes = []
    default_test = next((directory / n for n in ("test", "val") if (directory / n).is_dir()), None)
    train_dir = directory / "train" if (directory / "train").is_dir() else directory
    if test_dir is not None:
        if not test_dir.is_dir():
            raise DataError(f"data.test_dir={test_dir} is not a directory: expected a folder of class folders")
        train_paths, train_labels, class_names = read_class_folders(train_dir)
        test_paths, test_labels, _ = read_class_folders(test_dir, class_names)
        notes.append(f"train split from {train_dir}, test split from {test_dir} (data.test_dir)")
    elif (directory / "train").is_dir() and default_test is not None:
        train_paths, train_labels, class_names = read_class_folders(directory / "train")
        test_paths, test_labels, _ = read_class_folders(default_test, class_names)
        notes.append(f"train split from {directory / 'train'}, test split from {default_test}")
        if default_test.name == "val":
            notes.append(
                f"{default_test} is used as the TEST split (there is no test/ folder); peftlab's "
                "validation split is carved from train/ (data.val_fraction); set data.test_dir to choose"
            )
    elif (directory / "train").is_dir():
        raise DataError(
            f"{directory}: found train/ but no test/ or val/ folder next to it; "
            "add one, set data.test_dir, or point data.root at a folder of class folders"
        )
    else:
        paths, labels, class_names = read_class_folders(directory)
        test_index, train_index = carve_test(len(paths), split_seed)
        train_paths, train_labels = [paths[i] for i in train_index], [labels[i] for i in train_index]
        test_paths, test_labels = [paths[i] for i in test_index], [labels[i] for i in test_index]
        notes.append(f"no train/ and test/ folders: test split carved from all images (20%, seed {split_seed})")

    if not test_paths:
        raise DataError(f"{directory}: the test split has no images")
    check_separate_splits(train_paths, test_paths, [directory] + ([test_dir] if test_dir is not None else []))
    return FolderSplits(train_paths, train_labels, test_paths, test_labels, class_names, notes, train_dir)


def read_image_folder(directory: Path, split_seed: int, test_dir: Path | None = None) -> RawData:
    """Any `root/<class>/*.png|jpg|...`; with `root/train` and `root/test` (or `val`), those are the splits.

    With class folders only, 20% of the images (seeded by `split_seed`) become the test split.
    `test_dir` (data.test_dir, a folder of the same class folders) is the test split: then the
    training images are `root/train` when it exists, else every image under `root`.
    """
    folder = folder_splits(directory, split_seed, test_dir)
    all_images = folder.train_paths + folder.test_paths
    if test_dir is None:
        sha256 = {f"images:{len(all_images)}": hash_files(all_images, directory)}
    else:  # the test folder may lie outside data.root
        sha256 = {
            f"images:{len(folder.train_paths)}": hash_files(folder.train_paths, folder.train_dir),
            f"test images:{len(folder.test_paths)}": hash_files(folder.test_paths, test_dir),
        }
    train = file_samples(folder.train_paths, folder.train_labels)
    test = file_samples(folder.test_paths, folder.test_labels)
    return RawData(train, test, folder.class_names, str(directory), sha256, folder.notes)
