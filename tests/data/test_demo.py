"""peftlab data vtab-demo: Fashion-MNIST in VTAB-1k's layout, from peftlab's own reader, the same bytes
for a seed, written whole or not at all, and never over another task."""

import hashlib
from pathlib import Path

import datafiles
import numpy as np
import pytest
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)
from PIL import Image

from peftlab.cli import main
from peftlab.config.suites import VTAB1K_LISTS
from peftlab.data import demo
from peftlab.data.demo import demo_splits, write_vtab_demo
from peftlab.data.sources import DEBIAN_FASHION_MNIST_DIR
from peftlab.utils.errors import DataError, UserError

N_TRAIN, N_TEST = 1100, 300  # datafiles' labels: every class 110 and 30 times


@pytest.fixture
def source(tmp_path):
    """Four Fashion-MNIST IDX files, small; returns (folder, arrays written)."""
    folder = tmp_path / "fashion"
    return folder, datafiles.write_idx_dataset(folder, n_train=N_TRAIN, n_test=N_TEST)


def read_lists(folder: Path) -> dict[str, list[tuple[str, int]]]:
    """The four list files as a VTAB-1k reader splits them: on the last space."""
    lists = {}
    for split, name in VTAB1K_LISTS.items():
        lines = (folder / name).read_text().splitlines()
        lists[split] = [(path, int(label)) for path, label in (line.rsplit(" ", 1) for line in lines)]
    return lists


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_lists_images_and_labels_are_fashion_mnists(tmp_path, source):
    root, arrays = source
    task = write_vtab_demo(tmp_path / "out", test_size=100, root=str(root))
    assert task.written and task.folder == tmp_path / "out" / "fashion_mnist"
    assert task.sizes == {"train800.txt": 800, "val200.txt": 200, "train800val200.txt": 1000, "test.txt": 100}
    lists = read_lists(task.folder)
    assert lists["trainval"] == lists["train"] + lists["val"]
    assert {split: len(items) for split, items in lists.items()} == dict(zip(VTAB1K_LISTS, task.sizes.values()))
    for split, per_class in (("train", 80), ("val", 20), ("test", 10)):
        labels = [label for _, label in lists[split]]
        assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10, split  # stratified, all in 0..9
        source_split = "test" if split == "test" else "train"
        for path, label in lists[split]:
            assert path.startswith(f"images/{split}/") and path.endswith(".png")
            index = int(Path(path).stem)  # the image's index in Fashion-MNIST's own split
            assert label == arrays[f"{source_split}_labels"][index]
            with Image.open(task.folder / path) as image:
                pixels = np.asarray(image)
                assert image.format == "PNG" and np.array_equal(pixels, arrays[f"{source_split}_images"][index])
    train, val = ({Path(path).stem for path, _ in lists[split]} for split in ("train", "val"))
    assert len(train) == 800 and len(val) == 200 and not train & val
    written = {str(p.relative_to(task.folder)) for p in (task.folder / "images").rglob("*.png")}
    assert written == {path for split in ("train", "val", "test") for path, _ in lists[split]}


def test_a_seed_gives_the_same_bytes_and_another_seed_other_draws(tmp_path, source):
    root, _ = source
    first, again, other = (
        write_vtab_demo(tmp_path / out, test_size=50, seed=seed, root=str(root))
        for out, seed in (("a", 3), ("b", 3), ("c", 4))
    )
    assert digests(first.folder) == digests(again.folder)
    assert (first.folder / "train800.txt").read_text() != (other.folder / "train800.txt").read_text()


def test_the_test_size_never_moves_train800_or_val200(source):
    _, arrays = source
    splits = {size: demo_splits(arrays["train_labels"], arrays["test_labels"], size, seed=0) for size in (40, 0, None)}
    for split in ("train", "val"):
        assert np.array_equal(splits[40][split][1], splits[0][split][1])
    assert len(splits[40]["test"][1]) == 40
    for every in (0, None):  # every test image
        assert np.array_equal(splits[every]["test"][1], np.arange(N_TEST))


def test_the_same_task_again_writes_nothing(tmp_path, source, capsys):
    root, _ = source
    out = tmp_path / "out"
    task = write_vtab_demo(out, test_size=50, root=str(root))
    before = {p: p.stat().st_mtime_ns for p in task.folder.rglob("*")}
    args = ["data", "vtab-demo", str(out), "--test-size", "50", "--root", str(root), "--quiet"]
    assert main(args) == 0
    assert "already there, nothing written" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in task.folder.rglob("*")} == before
    assert sorted(p.name for p in out.iterdir()) == ["fashion_mnist"]


def test_a_folder_holding_another_demo_task_is_refused(tmp_path, source):
    root, _ = source
    task = write_vtab_demo(tmp_path / "out", test_size=50, root=str(root))
    before = digests(task.folder)
    refusal = "already holds a vtab-demo task written with seed 0 and test size 50"
    for change, differs in (({"seed": 1}, "seed"), ({"test_size": 60}, "test_size, sizes")):
        with pytest.raises(UserError, match=rf"{refusal} \(its vtab-demo.json differs in {differs}\)") as err:
            write_vtab_demo(tmp_path / "out", **{"test_size": 50, **change}, root=str(root))
        assert "\n" not in str(err.value)
    assert digests(task.folder) == before


def test_a_folder_holding_something_else_is_refused_an_empty_one_is_used(tmp_path, source):
    root, _ = source
    (tmp_path / "out" / "fashion_mnist").mkdir(parents=True)
    (tmp_path / "out" / "fashion_mnist" / "train800.txt").write_text("images/a.jpg 0\n")  # a real release's task
    with pytest.raises(UserError, match="already holds something else") as err:
        write_vtab_demo(tmp_path / "out", test_size=50, root=str(root))
    assert "\n" not in str(err.value)
    (tmp_path / "empty" / "fashion_mnist").mkdir(parents=True)
    assert write_vtab_demo(tmp_path / "empty", test_size=50, root=str(root)).written


def test_an_interrupted_write_leaves_no_task_and_no_temporary(tmp_path, source, monkeypatch):
    root, _ = source
    calls = []

    def interrupted(pixels):  # Ctrl-C after 500 images
        calls.append(1)
        if len(calls) > 500:
            raise KeyboardInterrupt
        return Image.fromarray(pixels)

    monkeypatch.setattr(demo.Image, "fromarray", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_vtab_demo(tmp_path / "out", test_size=50, root=str(root))
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.undo()
    assert write_vtab_demo(tmp_path / "out", test_size=50, root=str(root)).written


def test_what_a_killed_writer_left_is_named_not_taken_for_the_task(tmp_path, source, capsys):
    root, _ = source
    leftover = tmp_path / "out" / ".fashion_mnist.0123456789ab.tmp"
    (leftover / "images" / "train").mkdir(parents=True)
    (leftover / "train800.txt").write_text("images/train/00001.png 3\n")
    args = ["data", "vtab-demo", str(tmp_path / "out"), "--test-size", "20", "--root", str(root), "--quiet"]
    assert main(args) == 0
    shown = capsys.readouterr()
    assert f"note: {leftover} is what an interrupted vtab-demo left" in shown.err
    assert shown.out.strip() == (
        f"wrote {tmp_path / 'out' / 'fashion_mnist'}: train800.txt 800, val200.txt 200, "
        "train800val200.txt 1,000, test.txt 20"
    )
    assert len(read_lists(tmp_path / "out" / "fashion_mnist")["train"]) == 800


def test_bad_arguments_and_too_few_images_are_one_line(tmp_path, source, capsys):
    root, _ = source
    for arguments, needle in (
        ({"task": "../x"}, "task name"),
        ({"task": ".hidden"}, "task name"),
        ({"seed": -1}, "seed -1"),
        ({"test_size": -5}, "test size -5"),
    ):
        with pytest.raises(UserError, match=needle):
            write_vtab_demo(tmp_path / "out", root=str(root), **arguments)
    datafiles.write_idx_dataset(tmp_path / "tiny", n_train=60, n_test=20)
    with pytest.raises(DataError, match="60 training images: train800 and val200 need 1,000"):
        write_vtab_demo(tmp_path / "out", root=str(tmp_path / "tiny"))
    with pytest.raises(DataError, match=r"holds no fashion_mnist data.*--root DIR is data.root"):
        write_vtab_demo(tmp_path / "out", root=str(tmp_path))
    (tmp_path / "a-file").write_text("")
    assert main(["data", "vtab-demo", str(tmp_path / "a-file"), "--root", str(root), "--quiet"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.skipif(
    not Path(DEBIAN_FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_from_the_installed_fashion_mnist(tmp_path):
    task = write_vtab_demo(tmp_path / "out", test_size=100)
    lists = read_lists(task.folder)
    assert [len(lists[split]) for split in VTAB1K_LISTS] == [800, 200, 1000, 100]
    assert {label for _, label in lists["test"]} == set(range(10))
