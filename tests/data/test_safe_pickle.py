"""The restricted unpickler loads numpy arrays and nothing that could run code."""

import builtins
import gzip
import io
import os
import pickle

import datafiles
import numpy as np
import pytest
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)

from peftlab.data.readers.binary import read_cifar10_python
from peftlab.data.readers.safe_pickle import RestrictedUnpickler, load_pickle
from peftlab.utils.errors import DataError


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
    unpickler = RestrictedUnpickler(io.BytesIO(), path="x", budget=64)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        rebuild = unpickler.find_class(module, "_reconstruct")
        array = rebuild(unpickler.find_class("numpy", "ndarray"), (0,), b"b")
        assert type(array) is np.ndarray and array.shape == (0,)
    assert unpickler.find_class("numpy", "dtype")("u1", 0, 1) == np.dtype("u1")  # as Python 2 pickled it


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
        'cbuiltins\neval\n(S\'open("{marker}", "w")\'\ntR.',
        'cnumpy.testing._private.utils\nrunstring\n(S\'open("{marker}", "w")\'\n(dtR.',
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


class HugeReconstruct:
    """numpy's own array rebuild asked for 8 TiB before any data is read."""

    def __reduce__(self):
        from peftlab.data.readers.safe_pickle import _reconstruct

        return _reconstruct, (np.ndarray, (2**20, 2**20), b"d")


class DirectArray:
    """ndarray(shape) called directly: a terabyte of uninitialised memory."""

    def __reduce__(self):
        return np.ndarray, ((10**12,), "u1")


class BadDtypeState:
    """A dtype whose __setstate__ makes numpy raise SystemError."""

    def __reduce__(self):
        return np.dtype, ("V8", False, True), (1, "|", None, ("a",), {"a": ("x", 0)}, 8, 1)


@pytest.mark.parametrize(
    "gadget, needle",
    [
        (HugeReconstruct, "larger than the file"),
        (DirectArray, "only be rebuilt through numpy's _reconstruct"),
        (BadDtypeState, "not a valid pickle"),
    ],
)
@pytest.mark.parametrize("where", ["cifar-batch", "mnist-pickle-gz"])
def test_numpy_gadgets_are_refused_before_allocating(tmp_path, gadget, needle, where):
    import resource

    if where == "cifar-batch":
        datafiles.write_cifar10_python(tmp_path)
        path = tmp_path / "data_batch_1"
        datafiles.write_pickle(path, {b"data": gadget(), b"labels": [0]})
    else:
        path = tmp_path / "mnist.pkl.gz"
        with gzip.open(path, "wb") as f:
            pickle.dump(((gadget(), np.zeros(1, np.int64)),) * 3, f, protocol=2)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError, match=needle) as err:
        if where == "cifar-batch":
            read_cifar10_python(tmp_path)
        else:
            from peftlab.data.readers.binary import read_mnist_pickle

            read_mnist_pickle(path)
    assert "\n" not in str(err.value) and path.name in str(err.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024  # KiB: nothing big allocated


def test_a_cifar_batch_pickled_by_python3_at_protocol_2_loads(tmp_path):
    datafiles.write_cifar10_python(tmp_path)
    for name in ("data_batch_1", "test_batch"):
        batch = load_pickle(tmp_path / name)
        data = pickle.dumps(batch, protocol=2)
        assert b"_codecs" in data  # protocol 2 writes bytes as _codecs.encode(text, 'latin1')
        (tmp_path / name).write_bytes(data)
    raw = read_cifar10_python(tmp_path)
    assert raw.train.images.dtype == np.uint8 and len(raw.test) == 10


def test_codecs_encode_is_allowed_only_for_latin1_text(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(b"c_codecs\nencode\n(S'abc'\nS'utf-16'\ntR.")
    with pytest.raises(DataError, match="_codecs.encode is allowed only for latin1 bytes"):
        load_pickle(path)


def test_non_finite_pixels_in_an_mnist_pickle_are_refused(tmp_path):
    from peftlab.data.readers.binary import read_mnist_pickle

    path = tmp_path / "mnist.pkl.gz"
    datafiles.write_mnist_pickle(path)
    (x, y), valid, test = load_pickle(path)
    x = x.copy()
    x[0, 5] = np.nan
    with gzip.open(path, "wb") as f:
        pickle.dump(((x, y), valid, test), f)
    with pytest.raises(DataError, match="non-finite pixels"):
        read_mnist_pickle(path)
