"""Deterministic index arithmetic for splits, subsets and label sets (numpy only).

Every random choice draws from `numpy.random.default_rng([stream, split_seed])`: one
independent stream per purpose, so changing e.g. `train_subset` never moves the
train/val boundary. Returned index arrays are sorted (original order is kept).
"""

import dataclasses

import numpy as np

from peftlab.utils.errors import ConfigError

# One random stream per purpose.
STREAM_TEST = 0  # test carved from an ImageFolder without a test folder
STREAM_VAL = 1
STREAM_TRAIN_SUBSET = 2
STREAM_VAL_SUBSET = 3
STREAM_TEST_SUBSET = 4

CARVED_TEST_FRACTION = 0.2


def seeded_rng(seed: int, stream: int) -> np.random.Generator:
    if seed < 0:
        raise ConfigError(f"data.split_seed={seed}: expected an integer >= 0")
    return np.random.default_rng([stream, seed])


def carve_test(n: int, seed: int, fraction: float = CARVED_TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(test, train) indices: a seeded `fraction` of range(n) and the rest."""
    order = seeded_rng(seed, STREAM_TEST).permutation(n)
    n_test = int(round(fraction * n))
    return np.sort(order[:n_test]), np.sort(order[n_test:])


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: a seeded permutation of range(n), its first round(f * n) go to val."""
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"data.val_fraction={val_fraction}: expected a number in [0, 1)")
    order = seeded_rng(seed, STREAM_VAL).permutation(n)
    n_val = int(round(val_fraction * n))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def pick_subset(labels: np.ndarray, n: int | None, seed: int, stream: int) -> np.ndarray:
    """At most `n` indices, class-stratified: a seeded permutation, dealt one class at a time.

    The k-th item of every class comes before the (k+1)-th of any class, so a subset
    holds the classes as evenly as they allow. None keeps everything.
    """
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    if n < 0:
        raise ConfigError(f"subset size {n}: expected an integer >= 0 or null")
    order = seeded_rng(seed, stream).permutation(len(labels))
    rank = np.empty(len(labels), dtype=np.int64)  # rank of each item within its class, in permutation order
    for label in np.unique(labels):
        members = order[labels[order] == label]
        rank[members] = np.arange(len(members))
    dealt = order[np.argsort(rank[order], kind="stable")]
    return np.sort(dealt[:n])


def select_classes(labels: np.ndarray, classes: list[int] | None, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(index, new labels): items whose label is in `classes`, relabelled 0..k-1 in that order."""
    if classes is None:
        return np.arange(len(labels)), labels
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes) or min(classes) < 0 or max(classes) >= num_classes:
        raise ConfigError(f"data.classes={classes}: expected distinct labels in 0..{num_classes - 1}")
    new_label = np.full(num_classes, -1, dtype=np.int64)
    new_label[classes] = np.arange(len(classes))
    index = np.flatnonzero(new_label[labels] >= 0)
    return index, new_label[labels[index]]


def select_and_subset(splits: dict, class_names: list[str], cfg, notes: list[str]) -> list[str]:
    """``data.classes`` (relabelled 0..k-1) and the class-stratified subsets applied to ``splits`` in place
    (a split: any dataclass with ``labels`` and ``take``, images or texts), a note for each; the class names
    kept."""
    if cfg.classes is not None:
        for split, samples in splits.items():
            index, labels = select_classes(samples.labels, cfg.classes, len(class_names))
            splits[split] = dataclasses.replace(samples.take(index), labels=labels)
        class_names = [class_names[c] for c in cfg.classes]
        notes.append(f"label set: original labels {list(cfg.classes)} relabelled 0..{len(class_names) - 1}")
    streams = {"train": STREAM_TRAIN_SUBSET, "val": STREAM_VAL_SUBSET, "test": STREAM_TEST_SUBSET}
    for split, subset in (("train", cfg.train_subset), ("val", cfg.val_subset), ("test", cfg.test_subset)):
        samples = splits[split]
        if subset is not None and subset < len(samples):
            notes.append(f"{split}_subset: kept {subset} of {len(samples)} (class-stratified, seed {cfg.split_seed})")
            splits[split] = samples.take(pick_subset(samples.labels, subset, cfg.split_seed, streams[split]))
    return class_names
