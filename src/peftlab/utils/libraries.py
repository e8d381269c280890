"""peftlab owns its stderr: what libraries log or warn goes to a log file, not to the terminal.

bitsandbytes logs a hub-kernel warning when it is imported on an AVX512-BF16 CPU, torch, numpy
and PIL warn, PEFT and timm log. Between a user and peftlab's one-line error they are noise.
``quiet_libraries`` (each entry point calls it first: the CLI, a study's worker, a Slurm job or
a Ray task) sends Python warnings and every log record to one handler on the root logger. It
keeps them in memory until ``logged_to`` names a file (a run's ``library.log``); with
``peftlab --verbose`` (``PEFTLAB_VERBOSE=1``, which workers inherit) they go to stderr too.
peftlab's own warnings (the ``peftlab`` loggers) still print, as ``peftlab: warning: ...``.
torch's loggers print on stderr through torch's own handler and do not reach the root logger;
those peftlab has seen speak out of turn (``torch.utils.cpp_extension``: "No CUDA runtime is
found" when a library compiles an extension) get the root logger's handlers instead.
transformers (imported by HF models and by PEFT) gives its logger a stderr handler of its own when
it is imported: ``quiet_transformers``, called where peftlab imports it, hands its records to the
root logger's handlers. huggingface_hub does the same when it is imported (timm imports it): the hub helpers
(``models.hub``, ``utils.hub_cache``) hand its records (a retry, a fallback to the cache) over before they ask it.
Progress bars (transformers' "Loading weights", huggingface_hub's) are
turned off: a bar is no record to keep, and it would land between a user and peftlab's line.

It also makes the ``kernels`` package unimportable in peftlab's processes: bitsandbytes asks it
for a kernel from the Hugging Face hub at import time, and nothing may be downloaded at run time.

bitsandbytes itself is imported only by a run that quantizes its base. PEFT 0.21 imports it whenever
it is installed: ``import peft`` (``peft/helpers.py``, for a diagnostic helper peftlab never calls) and
every LoRA injection (``peft.tuners.lora.model._create_new_module`` imports its bnb dispatchers before
it looks at the layer). PEFT has no switch for either; it asks ``importlib.util.find_spec``, which
answers None for a module that ``sys.modules`` maps to None (the import system's own way of saying a
module is absent, as ``kernels`` above). ``import_peft`` hides it while PEFT is imported, and
``without_bitsandbytes`` for the whole life of a process that trains one unquantized run: PEFT then
works as where bitsandbytes is not installed. Not for a process that trains more runs after it (a
spawned worker, tests): PEFT caches its answer (``is_bnb_available``), and a quantized run later in
that process would need bitsandbytes.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
from pathlib import Path

LIBRARY_LOG = "library.log"  # in the run directory
VERBOSE_ENV = "PEFTLAB_VERBOSE"
TORCH_LOGGERS = ("torch.utils.cpp_extension",)  # below torch's own stderr handler (see above)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# a library's logger -> its handlers and propagate before ``to_library_log`` took them: ``quieted`` gives them back
TAKEN: dict[str, tuple[list[logging.Handler], bool]] = {}


class LibraryRecords(logging.Handler):
    """Formats records into the open log file, or keeps the last ``keep`` until one is opened."""

    def __init__(self, keep: int = 1000):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT))
        self.pending: collections.deque[str] = collections.deque(maxlen=keep)
        self.stream = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            if self.stream is None:
                self.pending.append(line)
            else:
                self.stream.write(line)
                self.stream.flush()
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # logging would print a traceback on stderr: the one thing this handler exists to prevent


def records() -> LibraryRecords | None:
    return next((h for h in logging.getLogger().handlers if isinstance(h, LibraryRecords)), None)


class StderrNow(logging.StreamHandler):
    """A handler writing to ``sys.stderr`` as it is when a record comes, not as it was when the handler was made:
    a notebook's or a caller's redirected stderr (``contextlib.redirect_stderr``) gets the lines written meanwhile,
    and a redirect that has ended keeps none (as logging's own last-resort handler does)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def quiet_libraries(verbose: bool | None = None) -> None:
    """Route library warnings and log records away from stderr (idempotent)."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # for the worker processes this one starts
    sys.modules.setdefault("kernels", None)  # an import of it raises ImportError: no hub kernels
    if records() is not None:
        return
    root = logging.getLogger()
    root.addHandler(LibraryRecords())
    own = StderrNow()  # peftlab's own warnings stay on stderr, in its own words
    own.setFormatter(logging.Formatter("peftlab: warning: %(message)s"))
    own.setLevel(logging.WARNING)
    logging.getLogger("peftlab").addHandler(own)
    if os.environ.get(VERBOSE_ENV) == "1":
        verbose_handler = StderrNow()
        verbose_handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(verbose_handler)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> the handlers above
    for name in TORCH_LOGGERS:
        to_root_handlers(name)
    # read when huggingface_hub is imported (transformers' bars follow it), here and in the workers
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    quiet_transformers()  # a library user may have imported it already


@contextlib.contextmanager
def quieted():
    """``quiet_libraries`` for the length of a block, in a process that was not quieted (a notebook's kernel, a
    script calling the Python API): the libraries' warnings and records go to the run's library.log
    (``logged_to``), ``kernels`` is unimportable (the hub-kernel guard), and afterwards the process's logging,
    warnings and modules are as they were: the loggers of libraries imported meanwhile (transformers',
    huggingface_hub's) get back the handlers they gave themselves, and progress bars that were on are on again. A
    quieted process (the command, a worker) stays as it is."""
    if records() is not None:
        yield
        return
    root = logging.getLogger()
    own = logging.getLogger("peftlab")
    saved = (list(root.handlers), root.level, list(own.handlers), logging.root.manager.disable)
    captured = getattr(logging, "_warnings_showwarning", None) is not None
    hub_bars, bars = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"), progress_bars()
    guard = "kernels" not in sys.modules
    torch_loggers = {
        name: (logging.getLogger(name).propagate, list(logging.getLogger(name).handlers)) for name in TORCH_LOGGERS
    }
    quiet_libraries()
    try:
        yield
    finally:
        root.handlers[:], own.handlers[:] = saved[0], saved[2]
        root.setLevel(saved[1])
        if not captured:
            logging.captureWarnings(False)
        for name, (propagate, handlers) in torch_loggers.items():
            logging.getLogger(name).propagate = propagate
            logging.getLogger(name).handlers[:] = handlers
        for name, (handlers, propagate) in TAKEN.items():  # transformers' stderr handler, ...: theirs again
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate
        TAKEN.clear()
        if hub_bars is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = hub_bars
        restore_progress_bars(bars)
        if guard and sys.modules.get("kernels", False) is None:
            del sys.modules["kernels"]


def progress_bars() -> dict[str, bool]:
    """Whether huggingface_hub's and transformers' progress bars are on, of those imported."""
    on = {}
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import are_progress_bars_disabled

        on["huggingface_hub"] = not are_progress_bars_disabled()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        on["transformers"] = transformers_logging.is_progress_bar_enabled()
    return on


def restore_progress_bars(on: dict[str, bool]) -> None:
    """The bars ``progress_bars`` found on turned on again (``quiet_transformers`` turned them off)."""
    if on.get("huggingface_hub"):
        from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

        if are_progress_bars_disabled():
            enable_progress_bars()
    if on.get("transformers"):
        from transformers.utils import logging as transformers_logging

        if not transformers_logging.is_progress_bar_enabled():
            transformers_logging.enable_progress_bar()


def import_peft() -> None:
    """Import PEFT without bitsandbytes, which stays importable afterwards (a quantized run imports it
    when it builds its base, and PEFT's injection finds it then: it asks only when it wraps a layer)."""
    if "peft" in sys.modules:
        return
    hide = "bitsandbytes" not in sys.modules
    if hide:
        sys.modules["bitsandbytes"] = None
    try:
        import peft  # noqa: F401
    finally:
        if hide and "bitsandbytes" in sys.modules and sys.modules["bitsandbytes"] is None:
            del sys.modules["bitsandbytes"]


def without_bitsandbytes() -> None:
    """bitsandbytes unimportable from here on, in a process that trains one run whose base is not
    quantized (a study's forked worker): PEFT's LoRA injection then leaves it out. Nothing where it is
    imported already."""
    sys.modules.setdefault("bitsandbytes", None)


def wandb_when_used() -> None:
    """wandb (the tracking extra) not imported by timm: ``timm.utils.summary`` imports it wherever it is installed,
    for a logging helper peftlab never calls, which cost every process that imports timm 0.3 to 0.4 CPU s (a 2-core
    Xeon, wandb 0.31, timm 1.0). ``TimmWithoutWandb`` on ``sys.meta_path`` answers that one import as a missing
    module (timm catches the ImportError); every other ``import wandb``, the wandb sink's, finds it as before."""
    if not any(isinstance(finder, TimmWithoutWandb) for finder in sys.meta_path):
        sys.meta_path.insert(0, TimmWithoutWandb())


class TimmWithoutWandb:
    """An import finder that refuses ``wandb`` to ``timm.utils.summary`` while that module runs (``wandb_when_used``)
    and leaves every other import to the finders after it."""

    def find_spec(self, name, path=None, target=None):
        if name == "wandb":
            summary = sys.modules.get("timm.utils.summary")
            if summary is not None and getattr(getattr(summary, "__spec__", None), "_initializing", False):
                raise ModuleNotFoundError("wandb: not imported for timm.utils.summary (peftlab)", name="wandb")
        return None


def quiet_transformers() -> None:
    """transformers' log records to the library log (its own stderr handler removed) and its progress
    bars off, once it is imported; nothing before (importing it takes a second) or when not quieted."""
    if records() is None or "transformers" not in sys.modules:
        return
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    to_library_log("transformers")


def to_root_handlers(name: str) -> None:
    """Send the records of logger ``name`` to the root logger's handlers (the library log; stderr with
    --verbose), not to those of a parent that keeps them to itself (torch's, which does not propagate)."""
    logger = logging.getLogger(name)
    logger.propagate = False
    for handler in logging.getLogger().handlers:
        if handler not in logger.handlers:
            logger.addHandler(handler)


def to_library_log(name: str) -> None:
    """Send the records of library ``name``, which gave its logger handlers of its own on stdout and
    stderr when it was imported (submitit, transformers), to the library log like every other library's."""
    if records() is None:  # not quieted (a library user): its logging is theirs
        return
    logger = logging.getLogger(name)
    TAKEN.setdefault(name, (list(logger.handlers), logger.propagate))  # the first time: the library's own
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True


@contextlib.contextmanager
def stderr_to_library_log():
    """This process's file descriptor 2 (what C and C++ libraries print: Ray's core while it connects) into the
    library log that ``logged_to`` holds open, for the length of a block; nothing where none is open."""
    handler = records()
    if handler is None or handler.stream is None:
        yield
        return
    sys.stderr.flush()
    handler.stream.flush()
    saved = os.dup(2)
    os.dup2(handler.stream.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def logged_to(path: Path):
    """Write library records to ``path`` (appended) inside this block, those kept so far first."""
    handler = records()
    if handler is None or handler.stream is not None:  # not quieted (a library user), or already writing
        yield
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)  # never through a link
        stream = open(fd, "a", encoding="utf-8")
    except OSError:  # a read-only run directory fails later with its own one-line error; a link: ELOOP
        yield
        return
    handler.stream = stream
    try:
        while handler.pending:
            stream.write(handler.pending.popleft())
        stream.flush()
        yield
    finally:
        handler.stream = None
        stream.close()
