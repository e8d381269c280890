"""Datasets given by lists: filelist, VTAB-1k's release and FGVC (VPT's jsons, CUB's own files).

Bad lists are one DataError line naming the list file and the line; the manifest of each list
catches a changed byte; a JPEG copy of a lossless source is flagged; the splits are the protocol's."""

import json

import numpy as np
import pytest
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)
from PIL import Image

from peftlab.config.schema import load_config
from peftlab.data.build import describe_data, load_splits
from peftlab.utils.errors import ConfigError, DataError


def image(path, value, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), value % 256, np.uint8)).save(path, format=fmt)


def vtab_task(root, task="svhn", classes=10, fmt="png", per=(2, 1, 2)):
    """A VTAB-1k task folder in the release layout: per = images per class in train800, val200, test."""
    folder, lines, n = root / task, {}, 0
    for split, count in zip(("train800", "val200", "test"), per):
        lines[split] = []
        for label in range(classes):
            for _ in range(count):
                relative = f"images/{split}/{n:05d}.{fmt}"
                image(folder / relative, n, "JPEG" if fmt == "jpg" else "PNG")
                lines[split].append(f"{relative} {label}")
                n += 1
    for split, entries in lines.items():
        (folder / f"{split}.txt").write_text("\n".join(entries) + "\n")
    (folder / "train800val200.txt").write_text("\n".join(lines["train800"] + lines["val200"]) + "\n")
    return folder


def data_cfg(*overrides):
    return load_config(None, list(overrides)).data


def test_vtab_task_reads_its_lists_as_the_protocol_splits(tmp_path):
    vtab_task(tmp_path)
    splits, info = load_splits(data_cfg("data.name=vtab1k/svhn", f"data.root={tmp_path}"))
    assert info.split_sizes == {"train": 20, "val": 10, "test": 20} and info.num_classes == 10
    assert info.split_sources["train"].endswith("svhn/train800.txt")
    assert info.split_sources["val"].endswith("svhn/val200.txt")
    assert sorted(info.manifests) == ["test", "train", "val"]
    final, info = load_splits(data_cfg("data.name=vtab1k/svhn", f"data.root={tmp_path}", "data.trainval=true"))
    assert info.split_sizes == {"train": 30, "val": 0, "test": 20}
    assert info.split_sources["train"].endswith("svhn/train800val200.txt")
    assert set(final["train"].images) == set(splits["train"].images) | set(splits["val"].images)
    # the task's own folder works as data.root too
    assert describe_data(data_cfg("data.name=vtab1k/svhn", f"data.root={tmp_path / 'svhn'}")).split_sizes["val"] == 10


def corrupt_list(folder, name, line, text):
    lines = (folder / name).read_text().split("\n")
    lines[line - 1] = text
    (folder / name).write_text("\n".join(lines))


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda f: corrupt_list(f, "test.txt", 3, "images/test/nope.png 1"), "test.txt line 3: missing file"),
        (
            lambda f: corrupt_list(f, "test.txt", 2, "images/test/00031.png 10"),
            "test.txt line 2: label 10 is out of range",
        ),
        (
            lambda f: corrupt_list(f, "test.txt", 2, "images/test/00030.png 0"),
            "test.txt line 2: 'images/test/00030.png' is listed twice (first on line 1)",
        ),
        (lambda f: corrupt_list(f, "test.txt", 2, "../../etc/passwd 0"), "test.txt line 2: '../../etc/passwd' leaves"),
        (
            lambda f: corrupt_list(f, "test.txt", 2, "/etc/passwd 0"),
            "test.txt line 2: '/etc/passwd' is not a path relative to",
        ),
        (lambda f: corrupt_list(f, "test.txt", 2, "images/test/00031.png one"), "test.txt line 2: label 'one' is not"),
        (lambda f: corrupt_list(f, "val200.txt", 1, "images/test/00030.png 0"), "is in both"),
        (
            lambda f: (f / "test.txt").write_bytes((f / "test.txt").read_bytes().replace(b"\n", b"\r\n")),
            "test.txt line 1: a carriage return (Windows line endings)",
        ),
        (lambda f: corrupt_list(f, "train800val200.txt", 1, ""), "train800val200.txt: expected exactly the images"),
        (lambda f: (f / "val200.txt").unlink(), "val200.txt"),
    ],
)
def test_a_bad_list_is_one_line_naming_the_file_and_line(tmp_path, damage, expected):
    folder = vtab_task(tmp_path)
    damage(folder)
    with pytest.raises(DataError) as err:
        describe_data(data_cfg("data.name=vtab1k/svhn", f"data.root={tmp_path}"))
    message = str(err.value)
    assert "\n" not in message and expected in message, message


def test_the_manifest_catches_a_changed_byte_and_a_missing_file(tmp_path):
    folder = vtab_task(tmp_path)
    cfg = data_cfg("data.name=vtab1k/svhn", f"data.root={tmp_path}")
    info = describe_data(cfg)
    assert any("manifest written" in note for note in info.notes)
    again = describe_data(cfg)  # checked, not rewritten
    assert not any("manifest written" in note for note in again.notes) and again.sha256 == info.sha256
    target = folder / "images" / "test" / "00035.png"
    original = target.read_bytes()
    damaged = bytearray(original)
    damaged[-13] ^= 1
    target.write_bytes(bytes(damaged))
    with pytest.raises(DataError, match=r"images/test/00035.png changed \(SHA-256"):
        describe_data(cfg)
    target.write_bytes(original)
    describe_data(cfg)
    manifest = json.loads(open(info.manifests["test"]).read())
    assert len(set(info.manifests.values())) == 1  # one manifest for the dataset's lists
    test = manifest["lists"][str(folder / "test.txt")]
    assert test["count"] == 20 and test["formats"] == {"PNG": 20} and test["sizes"] == {"6x6": 20}
    assert test["classes"] == list(range(10)) and len(manifest["files"]) == 50  # train, val and test images


def test_a_jpeg_copy_of_a_lossless_task_is_flagged(tmp_path):
    vtab_task(tmp_path, "svhn", fmt="jpg")
    vtab_task(tmp_path, "dtd", classes=47, fmt="jpg", per=(1, 1, 1))
    svhn = describe_data(data_cfg("data.name=vtab1k/svhn", f"data.root={tmp_path}"))
    assert [n for n in svhn.notes if n.startswith("lossy copy: 20 of the 20 test images of vtab1k/svhn are JPEG")]
    dtd = describe_data(data_cfg("data.name=vtab1k/dtd", f"data.root={tmp_path}"))  # DTD is JPEG at its source
    assert not [n for n in dtd.notes if n.startswith("lossy copy")]
    png = (
        describe_data(data_cfg("data.name=vtab1k/svhn", f"data.root={tmp_path / 'png'}"))
        if vtab_task(tmp_path / "png")
        else None
    )
    assert not [n for n in png.notes if n.startswith("lossy copy")]


def test_a_missing_task_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as err:
        describe_data(data_cfg("data.name=vtab1k/kitti", f"data.root={tmp_path}"))
    assert f"expected {tmp_path / 'kitti' / 'train800.txt'}" in str(err.value) and "VTAB-1k" in str(err.value)
    with pytest.raises(ConfigError, match="data.name"):
        data_cfg("data.name=vtab1k/imagenet")


def fgvc_dataset(root, name="dogs", classes=120, image_dir="Images", first_id=1):
    folder, n = root / name, 0
    entries = {"train": {}, "val": {}, "test": {}}
    for split in entries:
        for class_id in range(first_id, first_id + classes):
            relative = f"c{class_id}/{split}{n}.jpg"
            image(folder / image_dir / relative, n, "JPEG")
            entries[split][relative] = class_id
            n += 1
    for split, mapping in entries.items():
        (folder / f"{split}.json").write_text(json.dumps(mapping))
    return folder


def test_fgvc_reads_vpt_jsons_with_ids_mapped_in_sorted_order(tmp_path):
    fgvc_dataset(tmp_path)
    splits, info = load_splits(data_cfg("data.name=fgvc/dogs", f"data.root={tmp_path}"))
    assert info.split_sizes == {"train": 120, "val": 120, "test": 120} and info.num_classes == 120
    first = {str(p).rsplit("/", 2)[-2]: int(label) for p, label in zip(splits["train"].images, splits["train"].labels)}
    assert first["c1"] == 0 and first["c120"] == 119
    (tmp_path / "dogs" / "test.json").write_text(json.dumps({"c1/test240.jpg": 999}))
    with pytest.raises(DataError, match="test.json: class id 999 is not among the training classes"):
        describe_data(data_cfg("data.name=fgvc/dogs", f"data.root={tmp_path}"))


def test_cub_without_jsons_reads_its_official_split(tmp_path):
    folder = tmp_path / "cub"
    images, labels, split = [], [], []
    for image_id in range(1, 401):
        class_id = (image_id - 1) % 200 + 1
        relative = f"{class_id:03d}.Bird/img_{image_id}.jpg"
        image(folder / "images" / relative, image_id, "JPEG")
        images.append(f"{image_id} {relative}")
        labels.append(f"{image_id} {class_id}")
        split.append(f"{image_id} {1 if image_id <= 200 else 0}")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        (folder / name).write_text("\n".join(lines) + "\n")
    info = describe_data(data_cfg("data.name=fgvc/cub", f"data.root={tmp_path}", "data.val_fraction=0.25"))
    assert info.split_sizes == {"train": 150, "val": 50, "test": 200} and info.num_classes == 200
    assert "is_training_image 1" in info.split_sources["train"]


def test_filelist_with_explicit_lists_and_a_carved_val(tmp_path):
    folder = vtab_task(tmp_path, "mine", classes=3)
    cfg = data_cfg(
        "data.name=filelist",
        f"data.root={folder}",
        "data.train_list=train800.txt",
        "data.test_list=test.txt",
        "data.val_fraction=0.5",
    )
    info = describe_data(cfg)
    assert info.split_sizes == {"train": 3, "val": 3, "test": 6} and info.num_classes == 3
    assert "50% of" in info.split_sources["val"]
    with pytest.raises(ConfigError, match="data.train_list"):
        data_cfg("data.name=filelist", f"data.root={folder}", "data.test_list=test.txt")
    with pytest.raises(ConfigError, match="data.train_list"):
        data_cfg("data.name=fashion_mnist", "data.train_list=x.txt")


def test_every_vtab1k_task_of_the_release_layout_loads_with_its_class_count(tmp_path):
    from suitefiles import write_vtab1k

    from peftlab.config.suites import VTAB1K_TASKS

    written = write_vtab1k(tmp_path, spaced_names=True)  # names with a space: lines split on the last one
    assert sorted(written) == sorted(VTAB1K_TASKS)
    for task, files in written.items():
        splits, info = load_splits(data_cfg(f"data.name=vtab1k/{task}", f"data.root={tmp_path}"))
        assert info.num_classes == VTAB1K_TASKS[task].num_classes, task
        sizes = files.sizes()
        assert info.split_sizes == {"train": sizes["train"], "val": sizes["val"], "test": sizes["test"]}, task
        listed = [(str(files.image_dir / path), label) for path, label in files.splits["test"]]
        assert list(zip(splits["test"].images.tolist(), splits["test"].labels.tolist())) == listed, task


def test_every_fgvc_dataset_of_vpts_release_loads_with_its_class_count(tmp_path):
    from suitefiles import write_fgvc

    from peftlab.config.suites import FGVC_TASKS

    written = write_fgvc(tmp_path)
    assert sorted(written) == sorted(FGVC_TASKS)
    for name, files in written.items():
        splits, info = load_splits(data_cfg(f"data.name=fgvc/{name}", f"data.root={tmp_path}"))
        assert info.num_classes == FGVC_TASKS[name].num_classes, name
        listed = sorted((str(files.image_dir / path), label) for path, label in files.splits["train"])
        assert sorted(zip(splits["train"].images.tolist(), splits["train"].labels.tolist())) == listed, name


def test_cub_official_files_of_the_fixture_load(tmp_path):
    from suitefiles import write_cub_official

    files = write_cub_official(tmp_path / "cub")
    info = describe_data(data_cfg("data.name=fgvc/cub", f"data.root={tmp_path}", "data.trainval=true"))
    assert info.num_classes == 200 and info.split_sizes["test"] == files.sizes()["test"]
    assert info.split_sizes["train"] == files.sizes()["train"] and info.split_sizes["val"] == 0


def test_training_on_train_and_val_without_a_combined_list_checks_both_lists(tmp_path):
    fgvc_dataset(tmp_path)
    info = describe_data(data_cfg("data.name=fgvc/dogs", f"data.root={tmp_path}", "data.trainval=true"))
    assert info.split_sizes == {"train": 240, "val": 0, "test": 120}
    assert sorted(info.manifests) == ["test", "train", "val"]  # val's images train: its list is checked too
    assert info.split_sources["train"].endswith("train.json + " + str(tmp_path / "dogs" / "val.json"))


# ---------------------------------------------------------------------------- issue 52: hostile lists


def vtab_refusal(tmp_path, *overrides) -> str:
    """The one DataError line describe_data gives on the svhn task under ``tmp_path``."""
    with pytest.raises(DataError) as err:
        describe_data(data_cfg("data.name=vtab1k/svhn", f"data.root={tmp_path}", *overrides))
    message = str(err.value)
    assert "\n" not in message and len(message) < 1000, message
    return message


@pytest.mark.parametrize("kind", ["symlink loop", "300-character name"])
def test_a_path_the_system_refuses_is_one_line_naming_the_list_and_line(tmp_path, kind):
    folder = vtab_task(tmp_path)
    if kind == "symlink loop":
        (folder / "images" / "a").symlink_to("b")
        (folder / "images" / "b").symlink_to("a")
        relative = "images/a/x.png"
    else:
        relative = "images/" + "n" * 300 + ".png"
    corrupt_list(folder, "test.txt", 2, f"{relative} 1")
    message = vtab_refusal(tmp_path)
    assert "test.txt line 2:" in message, message
    fgvc = fgvc_dataset(tmp_path, classes=2)
    (fgvc / "test.json").write_text(json.dumps({f"../{relative}": 1}).replace("../", "../../svhn/"))
    with pytest.raises(DataError) as err:
        describe_data(data_cfg("data.name=fgvc/dogs", f"data.root={tmp_path}"))
    assert "\n" not in str(err.value) and "test.json entry 1" in str(err.value), str(err.value)


@pytest.mark.parametrize("label", ["9" * 5000, "\u0663", "1" + "0" * 7])
def test_a_label_of_thousands_of_digits_or_non_ascii_digits_is_one_line(tmp_path, label):
    folder = vtab_task(tmp_path)
    corrupt_list(folder, "test.txt", 2, f"images/test/00031.png {label}")
    assert "test.txt line 2: label" in vtab_refusal(tmp_path)


@pytest.mark.parametrize("where", ["id", "class"])
@pytest.mark.parametrize("value", ["9" * 5000, "\u0663"])
def test_cub_ids_of_thousands_of_digits_or_non_ascii_digits_are_one_line(tmp_path, where, value):
    from suitefiles import write_cub_official

    files = write_cub_official(tmp_path / "cub", per_class=2)
    name = "images.txt" if where == "id" else "image_class_labels.txt"
    lines = (files.folder / name).read_text().split("\n")
    image_id, _, rest = lines[2].partition(" ")
    lines[2] = f"{value} {rest}" if where == "id" else f"{image_id} {value}"
    (files.folder / name).write_text("\n".join(lines))
    with pytest.raises(DataError) as err:
        describe_data(data_cfg("data.name=fgvc/cub", f"data.root={tmp_path}"))
    assert "\n" not in str(err.value) and f"{name} line 3" in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "damage",
    [
        lambda f: corrupt_list(f, "test.txt", 1, "images/test/../train800/00000.png 0"),  # `..` into train
        lambda f: (
            (f / "images" / "test" / "00030.png").unlink()
            or (f / "images" / "test" / "00030.png").symlink_to(f / "images" / "train800" / "00000.png")
        ),
        lambda f: corrupt_list(f, "test.txt", 2, "images/test/./00030.png 0"),  # one image twice in a list
        lambda f: corrupt_list(f, "test.txt", 2, "images/train800/../test/00030.png 0"),
    ],
    ids=["dotdot into train", "symlink into train", "twice as ./", "twice through .."],
)
def test_an_image_in_two_splits_or_twice_in_a_list_by_its_real_path_is_refused(tmp_path, damage):
    damage(vtab_task(tmp_path))
    message = vtab_refusal(tmp_path)
    assert "is in both" in message or "is listed twice" in message, message


def test_fgvc_json_with_a_key_written_twice_is_refused(tmp_path):
    folder = fgvc_dataset(tmp_path, classes=2)
    text = (folder / "test.json").read_text()
    first = next(iter(json.loads(text)))
    (folder / "test.json").write_text(text[:-1] + f', "{first}": 2}}')  # json.loads keeps the last label
    with pytest.raises(DataError, match=r"test.json entry 3 .* is written twice \(first as entry 1\)"):
        describe_data(data_cfg("data.name=fgvc/dogs", f"data.root={tmp_path}"))
    (folder / "test.json").write_text('{"c1/test4.jpg": 1, "./c1/test4.jpg": 2}')
    with pytest.raises(DataError, match=r"test.json entry 2 .* is listed twice"):
        describe_data(data_cfg("data.name=fgvc/dogs", f"data.root={tmp_path}"))


@pytest.mark.parametrize(
    "text",
    ['{"format": 2, "files": [], "lists": {}}', '{"format": 2, "files": {}, "lists": {"x": 3}}', "[1]", "{"],
    ids=["files a list", "lists of numbers", "not an object", "cut"],
)
def test_a_manifest_that_cannot_be_read_is_refused_not_rewritten(tmp_path, text):
    vtab_task(tmp_path)
    info = describe_data(data_cfg("data.name=vtab1k/svhn", f"data.root={tmp_path}"))
    manifest = info.manifests["train"]
    with open(manifest, "w") as f:
        f.write(text)
    message = vtab_refusal(tmp_path)
    assert f"the data manifest {manifest}" in message and "delete the manifest" in message, message
    assert open(manifest).read() == text


def test_a_changed_image_is_refused_whichever_list_reads_it_first(tmp_path):
    """Issue 48: train800's manifest recorded an image; train800val200.txt, read for the first time after
    the image changed, must not record the changed bytes as the truth."""
    folder = vtab_task(tmp_path)
    describe_data(data_cfg("data.name=vtab1k/svhn", f"data.root={tmp_path}"))  # train800, val200, test
    image(folder / "images" / "train800" / "00003.png", 200)
    message = vtab_refusal(tmp_path, "data.trainval=true")  # train800val200.txt's first use
    assert "train800val200.txt: " in message and "images/train800/00003.png changed" in message, message


def test_an_out_of_range_label_in_a_file_list_is_refused_before_anything_is_sized_by_it(tmp_path):
    folder = vtab_task(tmp_path, "mine", classes=3)
    corrupt_list(folder, "test.txt", 2, "images/test/00010.png 15000")
    cfg = data_cfg(
        "data.name=filelist", f"data.root={folder}", "data.train_list=train800.txt", "data.test_list=test.txt"
    )
    with pytest.raises(
        DataError, match=r"test.txt line 2: label 15000 makes 15,001 classes, but the lists hold 4 labels"
    ):
        describe_data(cfg)


def test_a_large_list_or_json_split_costs_memory_in_proportion_to_its_valid_entries(tmp_path):
    """A list of millions of short lines, or a json split of millions of tiny entries, is refused at its
    first bad entry without holding the lines or entries (they peaked at 5 GB for 250 MB)."""
    import tracemalloc

    folder = vtab_task(tmp_path)
    (folder / "test.txt").write_bytes(b"a 0\n" * (4 << 20))  # 16 MiB, 4 M lines
    fgvc = fgvc_dataset(tmp_path, classes=2)
    (fgvc / "test.json").write_text("{" + ",".join(f'"{i}":1' for i in range(2 << 20)) + "}")  # 2 M entries
    for name, size in (("vtab1k/svhn", 16 << 20), ("fgvc/dogs", (fgvc / "test.json").stat().st_size)):
        tracemalloc.start()
        try:
            with pytest.raises(DataError, match="missing file"):
                describe_data(data_cfg(f"data.name={name}", f"data.root={tmp_path}"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 3 * size, f"{name}: {peak / 2**20:.0f} MiB at the peak for {size / 2**20:.0f} MiB"


def test_an_earlier_peftlabs_manifest_of_a_list_is_still_checked(tmp_path):
    """One manifest per list (format 1): its digests hold until the dataset's manifest records the list."""
    import hashlib

    from peftlab.data.manifest import legacy_manifest_file

    folder = vtab_task(tmp_path)
    train = folder / "train800.txt"
    image_sha = hashlib.sha256(b"the bytes it had").hexdigest()
    legacy = legacy_manifest_file(str(train))
    legacy.parent.mkdir(parents=True)
    legacy.write_text(
        json.dumps(
            {
                "format": 1,
                "list": str(train),
                "list_sha256": hashlib.sha256(train.read_bytes()).hexdigest(),
                "base": str(folder),
                "files": {"images/train800/00000.png": image_sha},
            }
        )
    )
    message = vtab_refusal(tmp_path)
    assert "train800.txt: " in message and "images/train800/00000.png changed" in message, message
