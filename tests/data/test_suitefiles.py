"""The suite fixtures (suitefiles.py) are what the releases are: suites.py's class counts, and files that
plain Python reads back as VTAB-1k's lists, VPT's jsons and CUB-200-2011's text files describe them."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import suitefiles
from PIL import Image

from peftlab.config.suites import FGVC_LISTS, FGVC_TASKS, VTAB1K_LISTS, VTAB1K_TASKS


@pytest.fixture(scope="module")
def vtab(tmp_path_factory):
    root = tmp_path_factory.mktemp("vtab1k")
    return root, suitefiles.write_vtab1k(root)


@pytest.fixture(scope="module")
def fgvc(tmp_path_factory):
    root = tmp_path_factory.mktemp("fgvc")
    return root, suitefiles.write_fgvc(root)


def read_list(path: Path) -> list[tuple[str, int]]:
    """A VTAB-1k list as PETL_Vision reads it: one image a line, split on the last space."""
    items = []
    for line in path.read_text().splitlines():
        image, label = line.rsplit(" ", 1)
        items.append((image, int(label)))
    return items


def test_vtab1k_has_every_task_with_suites_class_counts(vtab):
    root, written = vtab
    assert sorted(p.name for p in root.iterdir()) == sorted(VTAB1K_TASKS) == sorted(written)
    for task, files in written.items():
        num_classes = VTAB1K_TASKS[task].num_classes
        lists = {split: read_list(root / task / name) for split, name in VTAB1K_LISTS.items()}
        assert lists == files.splits and files.num_classes == num_classes, task
        for split in ("train", "test"):
            assert {label for _, label in lists[split]} == set(range(num_classes)), (task, split)
        assert {label for _, label in lists["val"]} <= set(range(num_classes))
        assert lists["trainval"] == lists["train"] + lists["val"]
        paths = [path for split in ("train", "val", "test") for path, _ in lists[split]]
        assert len(set(paths)) == len(paths) and all((root / task / path).is_file() for path in paths)


def test_vtab1k_files_are_jpeg_each_one_distinct_and_holding_its_index(vtab):
    root, written = vtab
    for task, files in written.items():
        paths = [root / task / path for split in ("train", "val", "test") for path, _ in files.splits[split]]
        assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}) == len(paths), task
    for index, path in enumerate(paths):  # the last task's
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (8, 8))
            assert suitefiles.image_index(np.asarray(image)) == index


def test_vtab1k_png_spaced_names_and_chosen_tasks(tmp_path):
    written = suitefiles.write_vtab1k(tmp_path, ["svhn", "sun397"], fmt="png", per_class=2, spaced_names=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sun397", "svhn"]
    items = read_list(tmp_path / "sun397" / "train800.txt")
    assert items == written["sun397"].splits["train"] and len(items) == 2 * 397
    assert all(" " in path for path, _ in items)
    assert written["sun397"].sizes() == {"train": 794, "val": 199, "trainval": 993, "test": 794}
    assert written["svhn"].sizes() == {"train": 20, "val": 10, "trainval": 30, "test": 20}
    with Image.open(tmp_path / "sun397" / items[0][0]) as image:
        assert image.format == "PNG"


def test_vtab1k_is_deterministic(tmp_path):
    for run in ("a", "b"):
        suitefiles.write_vtab1k(tmp_path / run, ["eurosat"])
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_fgvc_has_vpts_jsons_with_suites_class_counts(fgvc):
    root, written = fgvc
    image_folders = {
        "cub": root / "cub" / "images",
        "nabirds": root / "nabirds" / "images",
        "dogs": root / "dogs" / "Images",
        "cars": root / "cars",
        "flowers": root / "flowers",
    }
    assert sorted(p.name for p in root.iterdir()) == sorted(FGVC_TASKS) == sorted(written)
    for name, files in written.items():
        num_classes = FGVC_TASKS[name].num_classes
        jsons = {split: json.loads((root / name / file).read_text()) for split, file in FGVC_LISTS.items()}
        class_ids = sorted(set(jsons["train"].values()))  # VPT: ids mapped to 0..K-1 by sorted order
        assert len(class_ids) == num_classes == len(set(jsons["test"].values())), name
        assert set(jsons["val"].values()) <= set(class_ids) and class_ids == files.class_ids
        assert files.image_dir == image_folders[name]
        for split, listed in jsons.items():
            assert all(isinstance(cid, int) for cid in listed.values())
            assert [(path, class_ids.index(cid)) for path, cid in listed.items()] == files.splits[split]
            assert all((image_folders[name] / path).is_file() for path in listed)
        assert not set(jsons["train"]) & set(jsons["val"]) and not set(jsons["train"]) & set(jsons["test"])


def test_nabirds_ids_sort_differently_as_strings(fgvc):
    _, written = fgvc
    ids = written["nabirds"].class_ids
    assert ids[0] == 1 and ids[-1] == 1010 and sorted(map(str, ids)) != [str(i) for i in ids]


def test_cub_official_files(tmp_path):
    files = suitefiles.write_cub_official(tmp_path)
    table = {
        name: [line.split(" ", 1) for line in (tmp_path / name).read_text().splitlines()]
        for name in suitefiles.CUB_OFFICIAL_FILES
    }
    paths = dict(table["images.txt"])
    classes = {image_id: int(cid) for image_id, cid in table["image_class_labels.txt"]}
    training = {image_id: flag == "1" for image_id, flag in table["train_test_split.txt"]}
    assert [int(cid) for cid, _ in table["classes.txt"]] == list(range(1, 201)) == files.class_ids
    assert set(paths) == set(classes) == set(training) and len(paths) == 600
    for split in ("train", "test"):
        expected = [(paths[i], classes[i] - 1) for i in paths if training[i] == (split == "train")]
        assert expected == files.splits[split] and {label for _, label in expected} == set(range(200))
    folders = dict(table["classes.txt"])
    assert all(paths[i].split("/")[0] == folders[str(classes[i])] for i in paths)
    assert all((tmp_path / "images" / path).is_file() for path in paths.values())
