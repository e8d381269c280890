"""Files peftlab writes and reads back, without torch: atomic writes, JSON, a run's status.

Every file is written to a temporary name in the same directory and renamed over the
target, so a crash leaves either the old or the new file, never half of one. Analysis,
the study runner and the trainer all read run directories through these helpers.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import signal
import stat
from collections.abc import Callable
from pathlib import Path

from peftlab.utils.errors import STORAGE_ERRORS, UserError

KILL_AT = "PEFTLAB_KILL_AT"  # test hook: SIGKILL this process at a named point (see kill_point)
KILL_ONCE = "PEFTLAB_KILL_ONCE"  # with KILL_AT: a marker file; only the process that creates it is killed
HOLD_AT = "PEFTLAB_HOLD_AT"  # test hook: wait at a named point until a Ctrl-C or SIGTERM stops this process
TEMPORARY = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")  # the names write_atomic writes to first


def kill_point(name: str, step: int | None = None) -> None:
    """SIGKILL this process here when ``$PEFTLAB_KILL_AT`` is ``name`` or ``name:step``.

    A test hook for "kill -9 loses nothing and repeats nothing": the kill tests make a run
    die at exact points (``step:7``, ``checkpoint:4``, ``epoch-record:6``, ``write:last.pt``)
    and check that the resumed run equals an uninterrupted one. With ``$PEFTLAB_KILL_ONCE`` naming
    a file, only the first process to reach the point dies (it creates the file first), so a
    retried or resumed run goes on in the same environment.

    ``$PEFTLAB_HOLD_AT`` names a point where the process waits instead, until a stop's handler
    raises: a test that stops a run from outside (a pruner's SIGTERM) then never races its end.
    """
    here = (name, f"{name}:{step}")
    if os.environ.get(KILL_AT) in here and first_to_die():
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(HOLD_AT) in here:
        while True:
            signal.pause()


def first_to_die() -> bool:
    """Whether this process creates ``$PEFTLAB_KILL_ONCE`` (True when it names none)."""
    marker = os.environ.get(KILL_ONCE)
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        return False
    return True


def remove_temporaries(directory: str | Path) -> list[Path]:
    """Delete what interrupted atomic writes left in ``directory`` (``.NAME.<hex>.tmp``).

    Call it only where no other process writes: at the start of a run, in its own directory.
    """
    removed = []
    directory = Path(directory)
    if directory.is_dir():
        for path in directory.iterdir():
            if TEMPORARY.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def write_atomic(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and rename the result over ``path``.

    The file gets the permissions of any new file of this process (0666 less the umask),
    not the 0600 of ``tempfile.mkstemp``: results are meant to be read by others. A symbolic link
    at ``path`` is refused (one line), never written through: the temporary name is created with
    O_EXCL, which follows no link, and the rename replaces a name, never a link's target. A directory, FIFO
    or device at ``path`` is refused too (one line): no file replaces it.
    """
    path = Path(path)
    check_kind(path, False, "file to write", link_ok=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
            if stat.S_IMODE(os.fstat(f.fileno()).st_mode) != mode:  # a writer that made its own file (safetensors:
                os.fchmod(f.fileno(), mode)  # 0600) gets the umask's mode back, as every other file peftlab writes
        kill_point(f"write:{path.name}")
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None and err.errno is not None:  # raised through a file object: say which file
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def write_json_atomic(path: str | Path, data: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=str)
            f.write("\n")

    write_atomic(path, write)


MAX_JSON_BYTES = 256 << 20  # a result.json is some KiB; beyond this it is no file peftlab wrote


def read_json(path: str | Path) -> dict | None:
    """The JSON object in ``path``, or None when the file is missing, unreadable, no regular file
    (a FIFO would block), too large, not valid JSON or not an object (a corrupt spec.json or
    result.json reads as absent)."""
    try:
        raw = read_regular_file(path, MAX_JSON_BYTES + 1)
        if raw is None or len(raw) > MAX_JSON_BYTES:
            return None
        data = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return data if isinstance(data, dict) else None


MAX_TEXT_BYTES = 1 << 30  # a metrics.jsonl of a long run is some MiB; beyond this it is no file peftlab wrote


def read_text(path: str | Path, what: str, limit: int = MAX_TEXT_BYTES) -> str | None:
    """The text of a file from a folder peftlab did not necessarily write (a received study's phases.jsonl, a
    run's config.yaml), undecodable bytes replaced; None when it is missing. One UserError line naming it when
    it is no regular file (a FIFO would block the reader, a directory is no record) or holds over ``limit``
    bytes. Every reader of such a file goes through here (or ``read_json``, which reads these as absent)."""
    try:
        raw = read_regular_file(path, limit + 1)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno in STORAGE_ERRORS:
            raise  # the CLI names the storage problem
        raise UserError(f"{what} {shown_path(path)} cannot be read: {err.strerror}") from None
    if raw is None:
        check_kind(path, False, what)  # names what it is
        raise UserError(f"{what} {shown_path(path)} is not a regular file")  # swapped back since: still refused
    if len(raw) > limit:
        raise UserError(f"{what} {shown_path(path)} holds more than {limit:,} bytes: no file peftlab wrote")
    return raw.decode("utf-8", errors="replace")


def read_lines(path: str | Path, what: str, limit: int = MAX_TEXT_BYTES) -> list[str] | None:
    """The lines of a line-per-record file (``.jsonl``) as ``read_text`` reads it; None when it is missing."""
    text = read_text(path, what, limit)
    return None if text is None else text.splitlines()


def read_regular_file(path: str | Path, limit: int) -> bytes | None:
    """At most ``limit`` bytes of ``path``; None when what opens is no regular file. Opened without
    blocking, and checked once open: a file swapped for a FIFO after a stat, or one of /proc that
    waits for data (/proc/kmsg), is an error, not a hang."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, size = [], 0
        while size < limit:
            chunk = os.read(fd, limit - size)  # EAGAIN (a file with nothing to read yet) is an OSError
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def reopening_name(fd: int, path: str | Path) -> str:
    """A name that opens again the file open as ``fd``, for a library that opens names only (safetensors,
    numpy's memmap): ``/proc/self/fd/N`` (Linux), ``/dev/fd/N`` (macOS: a dup of the descriptor). What the
    library then reads is the file checked on ``fd``, never one swapped in at ``path`` since; ``path`` itself
    only where neither exists."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(folder):
            return f"{folder}/{fd}"
    return str(path)


# What peftlab reads and writes in a run directory, by kind: an entry of one of these names that is
# of another kind (a FIFO would block a reader, a directory fails the atomic rename late in a run)
# is refused before the run starts.
RUN_FILES = (
    "config.yaml",
    "result.json",
    "metrics.jsonl",
    "monitors.jsonl",
    "importance.jsonl",
    "val_predictions.npy",
    "val_losses.npy",
    "spec.json",
    "adapter.safetensors",
    "adapter_config.json",
    "adapter_model.safetensors",
    "library.log",
    ".lock",
    "checkpoint/last.pt",
)
RUN_DIRECTORIES = ("checkpoint", "tensorboard", "wandb")
RUN_KINDS = {**dict.fromkeys(RUN_DIRECTORIES, True), **dict.fromkeys(RUN_FILES, False)}  # name: a directory?


def kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISREG, "regular file"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def refuse_link(path: str | Path, what: str) -> None:
    """A UserError line when ``path`` is a symbolic link (dangling or not)."""
    if os.path.islink(path):
        raise UserError(
            f"{what} {shown_path(path)} is a symbolic link: peftlab writes and reads nothing through a link "
            "inside a folder it writes (a received folder could point it anywhere); replace it with a real "
            "file or folder, or move it aside"
        )


def refuse_links_below(root: str | Path, path: str | Path, what: str) -> None:
    """A UserError line when ``path`` lies outside ``root`` (as written, ``..`` resolved by name) or
    when an entry between ``root`` (itself allowed to be a link: the user named it) and ``path``,
    ``path`` included, is a symbolic link. Missing entries end the walk: what peftlab creates there
    is a real folder or file."""
    root, path = Path(os.path.abspath(root)), Path(os.path.abspath(path))
    if not path.is_relative_to(root):
        raise UserError(f"{what} {shown_path(path)} lies outside {shown_path(root)}")
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if not os.path.lexists(current):
            return
        refuse_link(current, what)


def refuse_links_in(folder: str | Path, what: str) -> None:
    """A UserError line naming the first symbolic link anywhere below ``folder`` (links are not
    followed). For the folders peftlab writes whole (a report, a paper): every entry in them is
    peftlab's own, so a link is someone else's."""
    for top, directories, files in os.walk(folder):
        for name in sorted(directories + files):
            refuse_link(Path(top) / name, what)


def check_kind(path: str | Path, directory: bool, what: str, *, link_ok: bool = True) -> None:
    """A UserError line when ``path`` exists (links followed) but is not a directory (``directory``)
    or not a regular file; nothing when it is missing. ``link_ok=False``: a symbolic link there is
    refused too (an entry of a folder peftlab writes)."""
    if not link_ok:
        refuse_link(path, what)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as err:  # a dangling link loop, a parent that is a file (ENOTDIR), no permission
        raise UserError(f"{what} {shown_path(path)} cannot be inspected: {err.strerror}") from None
    if stat.S_ISDIR(mode) != directory or not (directory or stat.S_ISREG(mode)):
        hint = "; move it aside or delete it" if what.endswith("entry") else ""  # never "delete /dev/null"
        raise UserError(
            f"{what} {shown_path(path)} is a {kind_of(mode)}: expected a "
            f"{'directory' if directory else 'regular file'}{hint}"
        )


def check_run_dir(run_dir: str | Path) -> None:
    """A UserError line when ``run_dir`` is no directory, or when an entry of ``RUN_FILES`` or
    ``RUN_DIRECTORIES`` in it is of the wrong kind or a symbolic link."""
    run_dir = Path(run_dir)
    check_kind(run_dir, True, "run directory")
    check_entries(run_dir, RUN_KINDS, "run directory entry")


def check_entries(directory: Path, kinds: dict[str, bool], what: str) -> None:
    """``check_kind`` of each entry named in ``kinds`` (name: whether a directory), in that order,
    from one listing of ``directory``: a study checks thousands of run directories before it starts.
    A name with a slash (``checkpoint/last.pt``) is looked up on its own. A symbolic link is refused
    (peftlab would write through it)."""
    try:
        present = {entry.name: entry for entry in os.scandir(directory)}
    except (FileNotFoundError, NotADirectoryError):
        return
    for name, is_directory in kinds.items():
        entry = present.get(name)
        if "/" in name:
            if name.split("/")[0] in present:
                check_kind(directory / name, is_directory, what, link_ok=False)
        elif entry is not None and (entry.is_symlink() or not (entry.is_dir() if is_directory else entry.is_file())):
            check_kind(directory / name, is_directory, what, link_ok=False)


def check_output(path: str | Path, directory: bool, what: str) -> None:
    """Before the work whose result goes to ``path``: a UserError line when ``path`` exists as another
    kind (a device or FIFO is never replaced by a file) or when no file can be created where it
    goes (a directory under /proc, a parent that is a file). Creates the missing directories."""
    check_kind(path, directory, what)
    where = Path(path) if directory else Path(path).parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".probe.{secrets.token_hex(6)}.tmp"  # a name remove_temporaries knows
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as err:
        if err.errno in STORAGE_ERRORS:
            raise  # the CLI names the storage problem
        raise UserError(f"{what} {shown_path(path)} cannot be written: {err.strerror}") from None


# Unicode's bidirectional controls: each reorders the text after it (an override draws "abc" as "cba"), so a
# received name could show another name than it is. Python counts them as unprintable (category Cf); named here so
# that a test holds the escaper to every one of them.
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def printable(text: str, lines: bool = False) -> str:
    """``text`` with its control characters (C0, C1, DEL), bidirectional controls and every other character
    Python counts as unprintable (format characters, separators but the space, unassigned code points) shown as
    their code (``\\x1b``, ``\\u202e``): the one escaper of what reaches a terminal. A file name or value from
    the user or a received file (a result.json's status, an archive's recorded version) that holds an escape
    sequence (ESC [ 2 J clears the terminal, OSC 0 sets the window's title) is shown, not sent to the terminal.
    ``lines``: its line breaks kept (a table's rows), each line escaped. Anything but a string is shown as its
    ``str``, escaped alike."""
    if not isinstance(text, str):
        text = str(text)
    if lines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return "".join(c if c.isprintable() or c == " " else ascii(c)[1:-1] for c in text)


def shown_path(path: str | Path, limit: int = 300) -> str:
    """A path as an error line shows it: control characters escaped (``printable``), a long one cut in the middle."""
    text = printable(str(path))
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 3 :]} ({len(text):,} characters)"


# What a notebook shows of peftlab's objects (a run's record, a trained tuner, a study): a title and a table of facts,
# as plain text (``__repr__``) and as HTML (``_repr_html_``) from the same rows. ``html_text`` is the one escaper of
# text that enters HTML (a run folder, a study's names, a recorded error), as ``printable`` is a terminal's.


def html_text(value) -> str:
    """``value``'s text as HTML shows it as itself: ``<``, ``>``, ``&`` and quotes escaped, a control character (an
    escape, a bidirectional override) shown as its code, as ``printable`` shows it on a terminal."""
    return html.escape(printable(value), quote=True)


def plain_view(title: str, facts: list[tuple[str, str]], table: tuple[list[str], list[list[str]]] | None = None) -> str:
    """The title, one ``name: value`` line per fact and the table with its columns aligned, every text through
    ``printable``."""
    lines = [printable(title)] + [f"  {printable(name)}: {printable(value)}" for name, value in facts]
    if table is not None:
        header, rows = table
        cells = [[printable(cell) for cell in row] for row in [header, *rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def html_view(title: str, facts: list[tuple[str, str]], table: tuple[list[str], list[list[str]]] | None = None) -> str:
    """The title in bold, the facts as a two-column table and the table below them, every text through
    ``html_text``."""
    parts = [f"<div><strong>{html_text(title)}</strong>"]
    if facts:
        rows = "".join(
            f'<tr><th style="text-align:left">{html_text(name)}</th><td style="text-align:left">{html_text(value)}'
            "</td></tr>"
            for name, value in facts
        )
        parts.append(f"<table>{rows}</table>")
    if table is not None:
        header, body = table
        head = "".join(f"<th>{html_text(cell)}</th>" for cell in header)
        rows = "".join("<tr>" + "".join(f"<td>{html_text(cell)}</td>" for cell in row) + "</tr>" for row in body)
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return "".join(parts) + "</div>"


def one_line(err: BaseException) -> str:
    """An exception as one line: "TypeName: message"."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"
