"""Model records on disk: JSON files in peftlab's cache, each with its key and a keyed checksum.

    body = read_record("checks", payload)            # None: absent, damaged, foreign or of other libraries
    write_record("checks", payload, body)            # atomic; never through a link

A record is ``{"format", "kind", "key", "payload", "versions", "created", "body", "hmac_sha256"}``:
``payload`` is everything its answer depends on (a model's architecture, a method's config, ...),
``versions`` the libraries that build the model (read from their metadata, never imported), ``key`` the
SHA-256 of both, the file's name, and ``hmac_sha256`` the HMAC-SHA256 of the rest under the folder's secret
key (``.records-key``, 32 random bytes, mode 0600). A record whose checksum, key, payload or versions
differ from the ones asked for is not trusted: it is rebuilt and written over. Records are JSON read with
``json.loads``, so a damaged or planted file cannot run code. The folder is ``$PEFTLAB_MODEL_CACHE``, by
default ``models`` beside the data cache (``$PEFTLAB_DATA_CACHE``'s parent, ``~/.cache/peftlab``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import time
from importlib import metadata
from pathlib import Path

from peftlab.data.cache_folders import mark_cache
from peftlab.data.sources import data_cache
from peftlab.utils.files import TEMPORARY, read_json, write_json_atomic

ENV_MODEL_CACHE = "PEFTLAB_MODEL_CACHE"
FORMAT = 2  # the records' layout: a new one makes every older record foreign, so it is rebuilt
RECORD_NAME = re.compile(r"[a-z]+-[0-9a-f]{32}\.json")  # the names record_path gives
KEY_NAME = ".records-key"
KEY_BYTES = 32
LIBRARIES = ("torch", "timm", "transformers", "peft", "peftlab")


def records_dir() -> Path:
    """Where model records live: ``$PEFTLAB_MODEL_CACHE``, else ``models`` beside the data cache."""
    if os.environ.get(ENV_MODEL_CACHE):
        return Path(os.environ[ENV_MODEL_CACHE]).expanduser()
    return data_cache().parent / "models"


def library_versions() -> dict[str, str | None]:
    """The installed versions of the libraries that build and adapt a model, from their metadata (no import),
    and peftlab's own code as it is now (``code_stamp``): an edited checkout is another version."""
    if VERSIONS:
        return dict(VERSIONS)
    versions = {"peftlab code": code_stamp()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    VERSIONS.update(versions)
    return versions


VERSIONS: dict[str, str | None] = {}  # read once per process


def code_stamp() -> str:
    """SHA-256 of the name, size, inode, modification and change time of every module of peftlab (a few
    hundred stat calls, no reading): a record built by other code is never read back, a module rewritten in
    place with its modification time put back included."""
    root = Path(__file__).resolve().parents[1]
    stamp = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        st = path.stat()
        stamp.update(f"{path.relative_to(root)} {st.st_size} {st.st_ino} {st.st_mtime_ns} {st.st_ctime_ns}\n".encode())
    return stamp.hexdigest()


def canonical(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def record_key(kind: str, payload: dict, versions: dict) -> str:
    return hashlib.sha256(canonical([FORMAT, kind, payload, versions]).encode()).hexdigest()


# The checksum is keyed: an unkeyed one (SHA-256 of the record) is recomputed by whoever edits a record,
# and a forged structure's total would be printed by `params`. Re-deriving the answer to compare it would
# build the model (torch, seconds), which is what records exist to avoid; an HMAC costs what the SHA-256 did.
# The key lives in the records folder, readable by its owner alone: who can read it can write the records
# anyway. A record of another key (a missing or damaged key, replaced) is rebuilt.
def checksum(record: dict, key: bytes) -> str:
    rest = canonical({k: v for k, v in record.items() if k != "hmac_sha256"}).encode()
    return hmac.new(key, rest, hashlib.sha256).hexdigest()


def intact(record: dict | None, key: bytes | None) -> bool:
    """Whether ``record`` carries its checksum under ``key`` (never without a key)."""
    return (
        record is not None
        and key is not None
        and isinstance(record.get("hmac_sha256"), str)
        and hmac.compare_digest(record["hmac_sha256"], checksum(record, key))
    )


KEYS: dict[str, bytes] = {}  # the records folders' keys this process read, by folder


def records_key(create: bool = True) -> bytes | None:
    """The records folder's secret key: read once per process (a regular file, no link, of this user, mode
    0600, ``KEY_BYTES`` long), else (``create``) a new one replaces what is there, the folder created and
    marked first; None when there is none to use (a folder that cannot be written): records are then
    neither trusted nor written."""
    folder = records_dir()
    if str(folder) in KEYS:
        return KEYS[str(folder)]
    key = read_key(folder / KEY_NAME)
    if key is None and create:
        key = new_key(folder)
    if key is not None:
        KEYS[str(folder)] = key
    return key


def read_key(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077 or st.st_size != KEY_BYTES:
            return None
        key = os.read(fd, KEY_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return key if len(key) == KEY_BYTES else None


def new_key(folder: Path) -> bytes | None:
    """A new key in ``folder`` (created and marked if missing), written whole under a temporary name and
    linked into place: a process reading it never sees half a key; one that links first wins."""
    path = folder / KEY_NAME
    try:
        if not os.path.lexists(folder):
            folder.mkdir(parents=True, exist_ok=True)
            mark_cache(folder, "model records")
        if (key := read_key(path)) is not None:  # linked by another process since this one looked
            return key
        if os.path.lexists(path):  # damaged (a link, another owner's, readable by others): replaced
            os.unlink(path)
        tmp = folder / f".{KEY_NAME}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process linked its key first: that one is read
    except OSError:
        return None
    finally:
        tmp.unlink(missing_ok=True)
    return read_key(path)


def sort_records_entry(entry: os.DirEntry) -> str:
    """``own`` for a record file (or a link at a record's name) or an interrupted write's temporary file,
    ``kept`` for the key, else ``foreign`` (a folder named like a record included)."""
    if entry.name == KEY_NAME:
        return "kept"
    own_name = RECORD_NAME.fullmatch(entry.name) or TEMPORARY.fullmatch(entry.name)
    return "own" if own_name and not entry.is_dir(follow_symlinks=False) else "foreign"


def record_path(kind: str, key: str) -> Path:
    return records_dir() / f"{kind}-{key[:32]}.json"


def read_record(kind: str, payload: dict) -> dict | None:
    """The body of the record of ``kind`` for ``payload`` under the installed libraries, or None when there
    is none to trust (absent, unreadable, damaged, another payload or other versions)."""
    versions = library_versions()
    key = record_key(kind, json.loads(canonical(payload)), versions)
    record = read_json(record_path(kind, key))
    if not intact(record, records_key()):
        return None
    expected = {"format": FORMAT, "kind": kind, "key": key, "payload": json.loads(canonical(payload))}
    if any(record.get(k) != v for k, v in expected.items()) or record.get("versions") != versions:
        return None
    body = record.get("body")
    return body if isinstance(body, dict) else None


def write_record(kind: str, payload: dict, body: dict) -> Path | None:
    """Write the record (over a damaged or foreign one); None when the cache cannot be written (a
    read-only home): the answer stands, the next call builds it again."""
    versions = library_versions()
    payload = json.loads(canonical(payload))
    key = record_key(kind, payload, versions)
    record = {
        "format": FORMAT,
        "kind": kind,
        "key": key,
        "payload": payload,
        "versions": versions,
        "created": time.time(),
        "body": json.loads(json.dumps(body, default=str)),  # its own order (ranks by module), JSON's types
    }
    secret = records_key()
    if secret is None:
        return None
    record["hmac_sha256"] = checksum(record, secret)
    path = record_path(kind, key)
    try:
        write_json_atomic(path, record)
    except OSError:
        return None
    return path


def cached(kind: str, payload: dict, build) -> tuple[dict, bool]:
    """(the body of ``kind``'s record for ``payload``, whether it was read warm); ``build()`` makes it
    when there is none to trust, and it is written for the next call."""
    body = read_record(kind, payload)
    if body is not None:
        USED.append(
            (kind, record_path(kind, record_key(kind, json.loads(canonical(payload)), library_versions())), True)
        )
        return body, True
    body = build()
    path = write_record(kind, payload, body)
    if path is not None:
        USED.append((kind, path, False))
    return json.loads(json.dumps(body, default=str)), False


USED: list[tuple[str, Path, bool]] = []  # (kind, file, read warm) of each record this process used: validate --show


def listed() -> list[dict]:
    """Every record file of the cache: its kind, size, age and whether it can be read back (name-sorted)."""
    folder = records_dir()
    try:
        with os.scandir(folder) as it:
            names = sorted(
                Path(e.path) for e in it if RECORD_NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False)
            )
    except (FileNotFoundError, NotADirectoryError):
        return []
    rows, key = [], records_key(create=False)
    for path in names:
        record = read_json(path)
        whole = intact(record, key)
        try:
            st = path.lstat()
        except OSError:  # removed since it was listed
            continue
        rows.append(
            {
                "path": str(path),
                "kind": path.name.split("-", 1)[0],
                "bytes": st.st_size,
                "age_seconds": max(0.0, time.time() - st.st_mtime),
                "intact": whole,
                "model": model_shown(record) if whole else None,
            }
        )
    return rows


def model_shown(record: dict) -> str | None:
    """The model a record is of, as ``peftlab cache`` lists it: an HF directory's path, a timm model's name."""
    model = (record.get("payload") or {}).get("model")
    return (model.get("path") or model.get("name")) if isinstance(model, dict) else None


def age_words(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"
