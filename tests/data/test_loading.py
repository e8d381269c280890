"""The data path: file splits through a DataLoader (any number of workers, same batches) and the
decoded-image cache (`data.cache`), on small JPEG folders."""

import os

import datafiles
import numpy as np
import pytest
import torch
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)

from peftlab.bench.data import write_jpeg_folder
from peftlab.data import ArrayDataset, FileDataset, build_data
from peftlab.data import datasets as datasets_module
from peftlab.data.loading import BatchLoader, default_num_workers
from peftlab.data.sources import decoded_cache_dir
from peftlab.training.step import epoch_batches
from peftlab.utils.cpu import RUNS_AT_ONCE_ENV, runs_at_once
from peftlab.utils.errors import DataError

CPU = torch.device("cpu")
MEAN, STD = (0.2, 0.5, 0.7), (0.25, 0.5, 1.0)


@pytest.fixture
def jpegs(tmp_path):
    """An ImageFolder of 24 train and 6 test JPEGs of 40 px in 3 classes."""
    write_jpeg_folder(tmp_path / "jpegs", n_train=24, size=40, classes=3, n_test=6)
    return tmp_path / "jpegs"


def jpeg_cfg(root, **overrides):
    return datafiles.make_cfg(name="imagefolder", root=str(root), val_fraction=0.0, **overrides)


def load_epochs(dataset, epochs=(0, 1), num_workers=0, seed=0, batch_size=5) -> list:
    """Every batch of the given epochs through one persistent BatchLoader, torch seeded first."""
    loader = BatchLoader(dataset, CPU, num_workers, persistent=True)
    torch.manual_seed(seed)
    return [batch for epoch in epochs for batch in loader(epoch_batches(len(dataset), batch_size, 3, epoch))]


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_the_loader_gives_the_batches_item_by_item_decoding_gave(jpegs):
    """Without augmentation the DataLoader's batches are the stacked items (the path before it), in order."""
    bundle = build_data(jpeg_cfg(jpegs), img_size=32, mean=MEAN, std=STD)
    assert isinstance(bundle.train, FileDataset)
    batches = epoch_batches(len(bundle.train), 5, 3, 1)
    loaded = list(BatchLoader(bundle.train, CPU)(batches))
    assert [len(y) for _, y in loaded] == [5, 5, 5, 5, 4]
    for indices, (images, labels) in zip(batches, loaded):
        items = [bundle.train[i] for i in indices.tolist()]
        assert torch.equal(images, torch.stack([x for x, _ in items]))
        assert labels.dtype == torch.int64 and labels.tolist() == [y for _, y in items]


def test_two_workers_give_what_the_main_process_gives(jpegs):
    """Augmented batches over two epochs (persistent workers) and after a pass left half-way (a run
    that stops at max_steps, or is interrupted) are the same bit for bit, and the loader draws
    nothing from torch's global RNG: only the augmentation does, in the main process."""
    bundle = build_data(jpeg_cfg(jpegs, augment=True), img_size=32)
    torch.manual_seed(0)  # the reference: decoded and transformed batch by batch, no DataLoader
    reference = [bundle.train.get_batch(b) for epoch in (0, 1) for b in epoch_batches(len(bundle.train), 5, 3, epoch)]
    after = torch.rand(4)
    main = load_epochs(bundle.train, num_workers=0)
    assert torch.equal(torch.rand(4), after)
    workers = load_epochs(bundle.train, num_workers=2)
    assert torch.equal(torch.rand(4), after)
    assert_same_batches(main, reference)
    assert_same_batches(workers, reference)

    loader = BatchLoader(bundle.train, CPU, 2, persistent=True)
    torch.manual_seed(0)
    first = loader(epoch_batches(len(bundle.train), 5, 3, 0))
    next(first), next(first)  # abandoned after two batches
    torch.manual_seed(0)
    assert_same_batches(list(loader(epoch_batches(len(bundle.train), 5, 3, 0))), main[:5])


def test_workers_are_chosen_by_device():
    """A GPU (CUDA or Apple's MPS) computes the step while the cores would idle: they decode."""
    assert default_num_workers(CPU) == 0
    assert 0 <= default_num_workers(torch.device("cuda")) <= 8
    assert default_num_workers(torch.device("mps")) == default_num_workers(torch.device("cuda"))


@pytest.mark.parametrize(
    "cores, runs, expected", [(16, None, 8), (16, "4", 3), (16, "8", 1), (16, "16", 0), (4, "x", 3)]
)
def test_a_gpu_run_of_a_study_decodes_with_its_share_of_the_cores(monkeypatch, cores, runs, expected):
    """Four runs of 8 decoding workers each on a 16-core GPU host took 1.8 times the study's wall of 3 each."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    if runs is None:
        monkeypatch.delenv(RUNS_AT_ONCE_ENV, raising=False)
    else:
        monkeypatch.setenv(RUNS_AT_ONCE_ENV, runs)
    assert default_num_workers(torch.device("cuda")) == expected
    assert default_num_workers(CPU) == 0


def test_a_local_study_tells_its_runs_how_many_share_the_machine(monkeypatch):
    monkeypatch.setenv(RUNS_AT_ONCE_ENV, "7")
    with runs_at_once(4):
        assert os.environ[RUNS_AT_ONCE_ENV] == "4"
    assert os.environ[RUNS_AT_ONCE_ENV] == "7"
    monkeypatch.delenv(RUNS_AT_ONCE_ENV)
    with runs_at_once(2):
        assert os.environ[RUNS_AT_ONCE_ENV] == "2"
    assert RUNS_AT_ONCE_ENV not in os.environ


@pytest.mark.parametrize("device, pinned, prefetch", [("cpu", False, 2), ("cuda", True, 4), ("mps", False, 4)])
def test_memory_is_pinned_for_cuda_only_and_a_gpu_prefetches_deeper(jpegs, device, pinned, prefetch):
    """MPS shares the host's memory: there is nothing to pin (torch warns and ignores it). Only the
    DataLoader is made: no device is touched."""
    bundle = build_data(jpeg_cfg(jpegs), img_size=32)
    loader = BatchLoader(bundle.train, torch.device(device), num_workers=2).loader
    assert loader.pin_memory is pinned and loader.prefetch_factor == prefetch


@pytest.mark.e2e  # the spawned worker imports torch: about 10 s on a busy 2-core machine
def test_workers_started_by_spawning_as_on_macos_give_the_same_batches(jpegs):
    """macOS starts DataLoader workers by spawning a fresh interpreter (Linux forks): the decoded
    files pickle, decode there, and the batches are those of the main process."""
    bundle = build_data(jpeg_cfg(jpegs, augment=True), img_size=32)
    main = load_epochs(bundle.train, epochs=(0,), num_workers=0)
    loader = BatchLoader(bundle.train, CPU, 1, persistent=True)
    loader.loader.multiprocessing_context = "spawn"  # what macOS's default start method gives
    torch.manual_seed(0)
    assert_same_batches(list(loader(epoch_batches(len(bundle.train), 5, 3, 0))), main)


def count_decodes(monkeypatch) -> list:
    calls = []
    original = datasets_module.load_image

    def counting(*args):
        calls.append(args[0])
        return original(*args)

    monkeypatch.setattr(datasets_module, "load_image", counting)
    return calls


def test_a_cached_split_equals_the_decoded_one_and_a_second_build_decodes_nothing(jpegs, monkeypatch):
    plain = build_data(jpeg_cfg(jpegs, augment=True), img_size=32)
    calls = count_decodes(monkeypatch)
    cached = build_data(jpeg_cfg(jpegs, augment=True, cache=True), img_size=32)
    assert len(calls) == 30  # every train and test image once
    assert isinstance(cached.train, ArrayDataset) and cached.train.images.dtype == torch.uint8
    names = sorted(p.name.split(".", 1)[1] for p in decoded_cache_dir().iterdir())
    assert names == ["npy", "npy", "sha256.json", "sha256.json"]  # train, test and their digests; no temporaries
    calls.clear()
    again = build_data(jpeg_cfg(jpegs, augment=True, cache=True), img_size=32)
    assert calls == []
    for bundle in (cached, again):  # augmentation still applies, after the cache, with the same draws
        assert_same_batches(load_epochs(plain.train), load_epochs(bundle.train))
        assert_same_batches(load_epochs(plain.test, epochs=(0,)), load_epochs(bundle.test, epochs=(0,)))
    assert not torch.equal(load_epochs(again.train, seed=0)[0][0], load_epochs(again.train, seed=1)[0][0])


def test_a_new_size_or_a_changed_file_makes_a_new_cache_key(jpegs):
    build_data(jpeg_cfg(jpegs, cache=True), img_size=32)
    first = set(decoded_cache_dir().glob("*.npy"))
    build_data(jpeg_cfg(jpegs, cache=True), img_size=24)
    second = set(decoded_cache_dir().glob("*.npy"))
    assert len(first) == 2 and len(second) == 4 and first < second
    changed = sorted((jpegs / "train" / "class1").glob("*.jpg"))[0]
    write_jpeg_folder(jpegs / "other", n_train=1, size=40, classes=1, n_test=0, seed=9)
    changed.write_bytes((jpegs / "other" / "train" / "class0" / "0.jpg").read_bytes())
    import shutil

    shutil.rmtree(jpegs / "other")
    bundle = build_data(jpeg_cfg(jpegs, cache=True), img_size=32)
    assert len(set(decoded_cache_dir().glob("*.npy")) - second) == 2
    plain = build_data(jpeg_cfg(jpegs), img_size=32)
    assert_same_batches(load_epochs(plain.train, epochs=(0,)), load_epochs(bundle.train, epochs=(0,)))


def test_a_damaged_cache_is_rebuilt_with_a_warning_and_a_crash_leaves_none(jpegs, monkeypatch, capsys):
    plain = build_data(jpeg_cfg(jpegs), img_size=32)
    build_data(jpeg_cfg(jpegs, cache=True), img_size=32)
    files = sorted(decoded_cache_dir().glob("*.npy"), key=lambda p: p.stat().st_size)
    files[-1].write_bytes(files[-1].read_bytes()[:1000])  # the train split's file, truncated
    bundle = build_data(jpeg_cfg(jpegs, cache=True), img_size=32)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: rebuilding the decoded-image cache" in err and files[-1].name in err
    assert_same_batches(load_epochs(plain.train, epochs=(0,)), load_epochs(bundle.train, epochs=(0,)))

    for path in decoded_cache_dir().iterdir():
        path.unlink()
    calls, original = [], datasets_module.load_image

    def crash_at_the_fifth(*args):
        calls.append(1)
        if len(calls) == 5:
            raise DataError("stands for a crash while decoding")
        return original(*args)

    monkeypatch.setattr(datasets_module, "load_image", crash_at_the_fifth)
    with pytest.raises(DataError, match="stands for a crash"):
        build_data(jpeg_cfg(jpegs, cache=True), img_size=32)
    assert list(decoded_cache_dir().iterdir()) == []  # no half-written cache, no temporary


def test_overwritten_pixels_in_the_cache_are_found_and_rebuilt(jpegs, capsys):
    """The cache is checked against the digest recorded when it was written: pixels overwritten in place
    (same size, same header) are not trained on."""
    from peftlab.data import cache as cache_module

    plain = build_data(jpeg_cfg(jpegs), img_size=32)
    build_data(jpeg_cfg(jpegs, cache=True), img_size=32)
    train = max(decoded_cache_dir().glob("*.npy"), key=lambda p: p.stat().st_size)
    data = bytearray(train.read_bytes())
    data[-3 * 32 * 32 :] = bytes(3 * 32 * 32)  # the last image black
    train.write_bytes(bytes(data))
    cache_module.VERIFIED.clear()  # as a new process finds it
    bundle = build_data(jpeg_cfg(jpegs, cache=True), img_size=32)
    err = capsys.readouterr().err
    assert "rebuilding the decoded-image cache" in err and "SHA-256" in err and train.name in err, err
    assert_same_batches(load_epochs(plain.train, epochs=(0,)), load_epochs(bundle.train, epochs=(0,)))


def test_the_cache_file_is_plain_numpy(jpegs):
    build_data(jpeg_cfg(jpegs, cache=True), img_size=16)
    for path in decoded_cache_dir().glob("*.npy"):
        array = np.load(path, allow_pickle=False)
        assert array.dtype == np.uint8 and array.shape[1:] == (3, 16, 16)


def write_cache_file(path, images: np.ndarray) -> None:
    """A decoded-image cache file as build_cache writes it: the array, and beside it its SHA-256."""
    import hashlib
    import json

    from peftlab.data.cache import digest_file

    np.save(path, images)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    digest_file(path).write_text(json.dumps({"format": 1, "sha256": digest}))


def test_a_cache_file_swapped_after_its_digest_is_checked_is_not_what_is_read(tmp_path, monkeypatch):
    from peftlab.data.cache import read_cache

    checked = np.arange(2 * 1 * 4 * 4, dtype=np.uint8).reshape(2, 1, 4, 4)
    path, later = tmp_path / "key.npy", tmp_path / "later.npy"
    write_cache_file(path, checked)
    np.save(later, np.zeros_like(checked))  # pixels no digest vouches for
    original, swapped = np.load, []

    def load(*args, **kwargs):  # numpy opens the file: the swap comes after every check
        if not swapped:
            swapped.append(later.replace(path))
        return original(*args, **kwargs)

    monkeypatch.setattr(np, "load", load)
    images = read_cache(path, checked.shape)
    assert swapped and np.array_equal(images, checked)


def test_a_link_at_a_cache_files_name_is_refused_not_followed(tmp_path):
    from peftlab.data.cache import read_cache
    from peftlab.utils.errors import UserError

    elsewhere = tmp_path / "elsewhere.npy"
    write_cache_file(elsewhere, np.ones((1, 1, 2, 2), dtype=np.uint8))
    (tmp_path / "key.npy").symlink_to(elsewhere)
    (tmp_path / "key.sha256.json").symlink_to(tmp_path / "elsewhere.sha256.json")
    with pytest.raises(UserError, match=r"key.npy is a symbolic link"):
        read_cache(tmp_path / "key.npy", (1, 1, 2, 2))
