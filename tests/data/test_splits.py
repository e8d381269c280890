"""Split, subset and label-set arithmetic: deterministic per seed, disjoint, complete."""

import numpy as np
import pytest

from peftlab.data.splits import (
    STREAM_TRAIN_SUBSET,
    STREAM_VAL_SUBSET,
    carve_test,
    pick_subset,
    select_classes,
    split_train_val,
)
from peftlab.utils.errors import ConfigError


@pytest.mark.parametrize("n, fraction", [(100, 0.1), (101, 0.25), (7, 0.5), (50, 0.0)])
def test_train_val_split_is_a_partition(n, fraction):
    train, val = split_train_val(n, fraction, seed=0)
    assert len(val) == round(fraction * n)
    assert not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(n))
    assert list(train) == sorted(train) and list(val) == sorted(val)


def test_train_val_split_is_deterministic_and_seeded():
    assert np.array_equal(split_train_val(1000, 0.1, 5)[1], split_train_val(1000, 0.1, 5)[1])
    assert not np.array_equal(split_train_val(1000, 0.1, 5)[1], split_train_val(1000, 0.1, 6)[1])


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_train_val_split_rejects_bad_fraction(fraction):
    with pytest.raises(ConfigError, match="data.val_fraction"):
        split_train_val(10, fraction, 0)


def test_negative_seed_is_rejected():
    with pytest.raises(ConfigError, match="data.split_seed"):
        split_train_val(10, 0.1, -1)


def test_carve_test_takes_a_fifth():
    test, train = carve_test(50, seed=1)
    assert len(test) == 10 and len(train) == 40 and not set(test) & set(train)
    assert not np.array_equal(test, carve_test(50, seed=2)[0])


def test_subset_is_stratified_deterministic_and_sized():
    labels = np.repeat(np.arange(4), [100, 50, 10, 40])
    index = pick_subset(labels, 40, seed=0, stream=STREAM_TRAIN_SUBSET)
    assert len(index) == 40 and len(set(index)) == 40 and list(index) == sorted(index)
    assert np.bincount(labels[index]).tolist() == [10, 10, 10, 10]
    small = pick_subset(labels, 100, seed=0, stream=STREAM_TRAIN_SUBSET)
    assert np.bincount(labels[small]).tolist() == [30, 30, 10, 30]  # class 2 runs out
    assert np.array_equal(index, pick_subset(labels, 40, seed=0, stream=STREAM_TRAIN_SUBSET))
    assert not np.array_equal(index, pick_subset(labels, 40, seed=1, stream=STREAM_TRAIN_SUBSET))
    assert not np.array_equal(index, pick_subset(labels, 40, seed=0, stream=STREAM_VAL_SUBSET))


def test_subset_of_none_or_more_keeps_everything():
    labels = np.arange(10) % 3
    assert pick_subset(labels, None, 0, STREAM_TRAIN_SUBSET).tolist() == list(range(10))
    assert pick_subset(labels, 50, 0, STREAM_TRAIN_SUBSET).tolist() == list(range(10))


def test_select_classes_relabels_in_the_given_order():
    labels = np.array([0, 1, 2, 3, 2, 1, 0, 3])
    index, new = select_classes(labels, [3, 1], num_classes=4)
    assert index.tolist() == [1, 3, 5, 7]
    assert new.tolist() == [1, 0, 1, 0]  # 3 -> 0, 1 -> 1


def test_select_classes_none_keeps_everything():
    labels = np.array([2, 0, 1])
    index, new = select_classes(labels, None, num_classes=3)
    assert index.tolist() == [0, 1, 2] and new is labels


@pytest.mark.parametrize("classes", [[], [1, 1], [10], [-1, 2]])
def test_select_classes_rejects_bad_label_sets(classes):
    with pytest.raises(ConfigError, match="data.classes"):
        select_classes(np.arange(10), classes, num_classes=10)
