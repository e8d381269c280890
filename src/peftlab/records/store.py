"""Model records on disk: JSON files in peftlab's cache, each with its key and a checksum.

    body = read_record("checks", payload)            # None: absent, damaged, foreign or of other libraries
    write_record("checks", payload, body)            # atomic; never through a link

A record is ``{"format", "kind", "key", "payload", "versions", "created", "body", "sha256"}``: ``payload``
is everything its answer depends on (a model's architecture, a method's config, ...), ``versions`` the
libraries that build the model (read from their metadata, never imported), ``key`` the SHA-256 of both, the
file's name, and ``sha256`` the checksum of the rest. A record whose checksum, key, payload or versions
differ from the ones asked for is not trusted: it is rebuilt and written over. Records are JSON read with
``json.loads``, so a damaged or planted file cannot run code. The folder is ``$PEFTLAB_MODEL_CACHE``, by
default ``models`` beside the data cache (``$PEFTLAB_DATA_CACHE``'s parent, ``~/.cache/peftlab``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from importlib import metadata
from pathlib import Path

from peftlab.data.sources import data_cache
from peftlab.utils.files import read_json, write_json_atomic

ENV_MODEL_CACHE = "PEFTLAB_MODEL_CACHE"
FORMAT = 1  # the records' layout: a new one makes every older record foreign, so it is rebuilt
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
    """SHA-256 of the name, size and modification time of every module of peftlab (a few hundred stat calls,
    no reading): a record built by other code is never read back."""
    root = Path(__file__).resolve().parents[1]
    stamp = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        stat = path.stat()
        stamp.update(f"{path.relative_to(root)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return stamp.hexdigest()


def canonical(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def record_key(kind: str, payload: dict, versions: dict) -> str:
    return hashlib.sha256(canonical([FORMAT, kind, payload, versions]).encode()).hexdigest()


def checksum(record: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "sha256"}).encode()).hexdigest()


def record_path(kind: str, key: str) -> Path:
    return records_dir() / f"{kind}-{key[:32]}.json"


def read_record(kind: str, payload: dict) -> dict | None:
    """The body of the record of ``kind`` for ``payload`` under the installed libraries, or None when there
    is none to trust (absent, unreadable, damaged, another payload or other versions)."""
    versions = library_versions()
    key = record_key(kind, json.loads(canonical(payload)), versions)
    record = read_json(record_path(kind, key))
    if record is None or record.get("sha256") != checksum(record):
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
    record["sha256"] = checksum(record)
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
        names = sorted(p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except FileNotFoundError:
        return []
    rows = []
    for path in names:
        record = read_json(path)
        intact = record is not None and record.get("sha256") == checksum(record)
        stat = path.lstat()
        rows.append(
            {
                "path": str(path),
                "kind": path.name.split("-", 1)[0],
                "bytes": stat.st_size,
                "age_seconds": max(0.0, time.time() - stat.st_mtime),
                "intact": intact,
                "model": model_shown(record) if intact else None,
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
