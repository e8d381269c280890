"""The restricted unpickler loads numpy arrays and nothing that could run code."""

import builtins
import gzip
import io
import os
import pickle

import numpy as np
import pytest

import datafiles
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)
from peftlab.data.readers import read_cifar10_python
from peftlab.data.safe_pickle import RestrictedUnpickler, _reconstruct, load_pickle
from peftlab.errors import DataError


class RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class RunsPython:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_numpy_arrays_and_containers_load(tmp_path):
    content = {
        b"data": np.arange(12, dtype=np.uint8).reshape(3, 4),
        b"floats": np.linspace(0, 1, 5, dtype=np.float32),
        "labels": [1, 2, 3],
        b"nested": ({"a": np.int64(3).item()}, b"bytes", "text", 1.5, None, True),
    }
    loaded = load_pickle(datafiles.write_pickle(tmp_path / "ok.pkl", content))
    assert set(loaded) == set(content)
    np.testing.assert_array_equal(loaded[b"data"], content[b"data"])
    assert loaded[b"data"].dtype == np.uint8
    np.testing.assert_array_equal(loaded[b"floats"], content[b"floats"])
    assert loaded["labels"] == [1, 2, 3] and loaded[b"nested"] == content[b"nested"]


def test_gzipped_pickle_loads(tmp_path):
    path = tmp_path / "x.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump((np.ones(3, np.float32), np.zeros(2, np.int64)), f)
    x, y = load_pickle(path)
    assert x.tolist() == [1, 1, 1] and y.dtype == np.int64


def test_numpy_1_and_2_reconstruct_names_are_both_allowed():
    unpickler = RestrictedUnpickler(io.BytesIO(), path="x")
    assert unpickler.find_class("numpy.core.multiarray", "_reconstruct") is _reconstruct
    assert unpickler.find_class("numpy._core.multiarray", "_reconstruct") is _reconstruct
    assert unpickler.find_class("numpy", "ndarray") is np.ndarray
    assert unpickler.find_class("numpy", "dtype") is np.dtype


def test_pickle_written_by_numpy_1_loads(tmp_path):
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    data = pickle.dumps({"x": array}, protocol=3)  # protocol 3 names globals as plain text
    assert b"numpy._core.multiarray\n_reconstruct" in data
    path = tmp_path / "old.pkl"
    path.write_bytes(data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    np.testing.assert_array_equal(load_pickle(path)["x"], array)


@pytest.mark.parametrize("payload", [RunsShell, RunsPython])
def test_pickle_that_runs_code_is_refused_before_running(tmp_path, payload):
    marker = tmp_path / "marker"
    path = datafiles.write_pickle(tmp_path / "evil.pkl", {b"data": np.zeros(3), b"labels": payload(marker)})
    with pytest.raises(DataError, match="only numpy arrays are allowed") as err:
        load_pickle(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"refusing to unpickle {path}: it references ")
    assert ("system" in message) if payload is RunsShell else ("builtins.exec" in message)
    assert not marker.exists()


@pytest.mark.parametrize(
    "source",
    [
        "cos\nsystem\n(S'touch {marker}'\ntR.",
        "cbuiltins\neval\n(S'open(\"{marker}\", \"w\")'\ntR.",
        "cnumpy.testing._private.utils\nrunstring\n(S'open(\"{marker}\", \"w\")'\n(dtR.",
        "cnumpy\nload\n(S'{marker}'\ntR.",
        "csubprocess\nPopen\n((S'touch'\nS'{marker}'\nltR.",
    ],
)
def test_hand_written_pickles_with_other_globals_are_refused(tmp_path, source):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(source.format(marker=marker).encode())
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_pickle(path)
    assert not marker.exists()


def test_cifar_batch_that_runs_code_is_refused(tmp_path):
    datafiles.write_cifar10_python(tmp_path)
    marker = tmp_path / "pwned"
    batch = load_pickle(tmp_path / "data_batch_3")
    batch[b"labels"] = RunsShell(marker)
    datafiles.write_pickle(tmp_path / "data_batch_3", batch)
    with pytest.raises(DataError) as err:
        read_cifar10_python(tmp_path)
    assert "\n" not in str(err.value) and "data_batch_3" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("cut", [1, 50])
def test_truncated_pickle_is_refused(tmp_path, cut):
    path = datafiles.write_pickle(tmp_path / "batch", {b"data": np.zeros((4, 3072), np.uint8)})
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(DataError, match="batch") as err:
        load_pickle(path)
    assert "\n" not in str(err.value)


def test_not_a_pickle_is_refused(tmp_path):
    path = tmp_path / "batches.meta"
    path.write_text("airplane\nautomobile\n")
    with pytest.raises(DataError, match="batches.meta"):
        load_pickle(path)
