"""A manifest per listed dataset: what its lists and image files held on first use, checked on every later use.

    stored = stored_manifest(base, list_files)                 # the dataset's manifest, or an empty one
    listed = list_manifest(list_file, base, samples, stored)  # hashes every image, checks every header
    check_or_record(base, {list_file: listed, ...}, stored)   # compare with it; add what is new, locked

One manifest holds a dataset folder's images, whichever list named them: every image's SHA-256 as first
seen, and per list its SHA-256, image count, classes and the formats and sizes its image headers declare.
A list read first after an image changed (train800val200.txt after train800.txt, say) is checked against
the digest the other list recorded, so trials and final runs see the same bytes or stop. A changed,
added or missing file is one DataError line naming it; so is a manifest that cannot be read (it is never
rewritten: rewriting it would turn the check off), with how to rebuild it. Every image is checked by
`image_checks.image_header` (format, pixel bound, a complete file; cached per list), the check folder
datasets get too. The manifests live in the data cache (``$PEFTLAB_DATA_CACHE/manifests``), keyed by the
dataset folder's real path, so a read-only dataset folder needs no write access; a manifest of an
earlier peftlab (one per list) is still checked against.
"""

import fcntl
import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

from peftlab.data.image_checks import checked_headers, headers_file
from peftlab.data.readers.records import Samples, hash_file
from peftlab.data.sources import data_cache, writable_cache_dir
from peftlab.utils.errors import DataError
from peftlab.utils.files import one_line, read_json, write_json_atomic

MANIFEST_FORMAT = 2  # 1: one manifest per list (still read, see legacy_files)
LEGACY_FORMAT = 1
# formats that keep every pixel; JPEG does not
LOSSY_FORMATS = ("JPEG", "MPO", "WEBP")
SHA256 = re.compile("[0-9a-f]{64}")


def manifest_file(base: Path) -> Path:
    """The manifest of the dataset whose images lie under ``base``."""
    key = hashlib.sha256(f"dataset\0{Path(base).resolve()}".encode()).hexdigest()[:32]
    return data_cache() / "manifests" / f"{key}.json"


def legacy_manifest_file(list_file: str) -> Path:
    """Where an earlier peftlab kept the manifest of one list."""
    key = hashlib.sha256(str(Path(list_file).resolve()).encode()).hexdigest()[:32]
    return data_cache() / "manifests" / f"{key}.json"


def file_names(base: Path, samples: Samples) -> dict[str, str]:
    """Name (relative to ``base`` where the file lies under it) -> SHA-256 of each file of ``samples``."""
    return {
        (path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)): hash_file(path)
        for path in map(Path, samples.images)
    }


def list_manifest(list_file: str, base: Path, samples: Samples, stored: dict) -> dict:
    """The record of one list: ``samples``' files, named relative to ``base``. A file changed since the
    dataset's manifest ``stored`` (`stored_manifest`) was written is named before any header is checked."""
    files = file_names(base, samples)
    listed = {
        "list_sha256": hash_file(Path(list_file)) if Path(list_file).is_file() else None,
        "count": len(samples),
        "classes": sorted(set(samples.labels.tolist())),
        "files_sha256": files_digest(files),
    }
    check_against(manifest_file(base), stored, base, {list_file: (listed, files)})
    headers = checked_headers(samples.images, headers_file(Path(list_file).resolve()))
    formats, sizes = Counter(f for f, _ in headers), Counter(size for _, size in headers)
    return listed | {
        "formats": dict(sorted(formats.items())),
        "sizes": dict(sizes.most_common(10)),
        "distinct_sizes": len(sizes),
        "files": files,
    }


def files_digest(files: dict[str, str]) -> str:
    """One SHA-256 over the sorted lines "name<TAB>sha256" of a list's files."""
    return hashlib.sha256("".join(sorted(f"{name}\t{digest}\n" for name, digest in files.items())).encode()).hexdigest()


def unreadable(path: Path, base: Path, why: str) -> DataError:
    return DataError(
        f"the data manifest {path} of {base} cannot be read ({why}): it is what tells a changed image, so it "
        "is not rewritten; check the dataset's images, then delete the manifest to record them as they are now"
    )


def read_manifest(path: Path, base: Path, expected_format: int) -> dict | None:
    """The manifest stored at ``path`` (None: there is none), its fields checked; anything else is one line."""
    if not os.path.lexists(path):
        return None
    stored = read_json(path)
    if stored is None:
        raise unreadable(path, base, "not a JSON object in a regular file")
    if stored.get("format") != expected_format:
        raise unreadable(path, base, f"format {str(stored.get('format'))[:20]}, expected {expected_format}")
    files = stored.get("files")
    if not isinstance(files, dict) or not all(isinstance(d, str) and SHA256.fullmatch(d) for d in files.values()):
        raise unreadable(path, base, "'files' is not an object of SHA-256 digests")
    if expected_format == LEGACY_FORMAT:
        if not isinstance(stored.get("list_sha256"), str | None):
            raise unreadable(path, base, "'list_sha256' is not a string")
        return stored
    lists = stored.get("lists")
    if not isinstance(lists, dict) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("list_sha256"), str | None)
        and isinstance(entry.get("files_sha256"), str)
        for entry in lists.values()
    ):
        raise unreadable(path, base, "'lists' is not an object of list records")
    return stored


def stored_manifest(base: Path, list_files: Iterable[str]) -> dict:
    """The dataset's manifest (empty when there is none yet), with what an earlier peftlab's manifests
    of ``list_files`` recorded merged in."""
    stored = read_manifest(manifest_file(base), base, MANIFEST_FORMAT) or {"files": {}, "lists": {}}
    for list_file in list_files:
        if list_file in stored["lists"]:
            continue
        legacy = read_manifest(legacy_manifest_file(list_file), base, LEGACY_FORMAT)
        if legacy is not None and Path(legacy.get("base", "")) == Path(base):
            stored["files"] = legacy["files"] | stored["files"]
            stored["lists"][list_file] = {
                "list_sha256": legacy["list_sha256"],
                "files_sha256": files_digest(legacy["files"]),
                "legacy": True,  # not in the dataset's manifest yet
            }
    return stored


def first_difference(stored: dict, base: Path, list_file: str, listed: dict, files: dict[str, str]) -> str | None:
    """What changed in one list or its files since ``stored`` was written, in words naming a file."""
    for name, digest in files.items():
        old = stored["files"].get(name)
        if old is not None and old != digest:
            return f"{base / name} changed (SHA-256 {old[:12]}... became {digest[:12]}...)"
    recorded = stored["lists"].get(list_file)
    if recorded is None:
        return None
    if recorded["list_sha256"] != listed["list_sha256"]:
        return f"the list file {list_file} changed"
    if recorded["files_sha256"] != listed["files_sha256"]:
        return f"the images {list_file} names changed (an image is new or gone)"
    return None


def check_against(path: Path, stored: dict, base: Path, used: dict[str, tuple[dict, dict]]) -> None:
    for list_file, (listed, files) in used.items():
        if difference := first_difference(stored, base, list_file, listed, files):
            raise DataError(
                f"{list_file}: {difference} since the dataset's manifest {path} was written; restore the "
                f"file, or delete the manifest to accept the dataset as it is now"
            )


@contextmanager
def locked(path: Path):
    """``path``'s lock file held: two runs that record new lists of one dataset at once keep both."""
    writable_cache_dir(path.parent)
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise DataError(f"cannot lock the data manifest {path}: {one_line(err)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def check_or_record(base: Path, used: dict[str, dict], stored: dict) -> bool:
    """Compare the ``used`` lists' records (list file -> `list_manifest`) with the dataset's manifest
    ``stored`` (a DataError naming the first difference), and record the lists and files it lacks. True
    when written now."""
    path = manifest_file(base)
    pairs = {list_file: (listed, listed["files"]) for list_file, listed in used.items()}
    check_against(path, stored, base, pairs)
    if all(list_file in stored["lists"] and not stored["lists"][list_file].get("legacy") for list_file in used):
        return False
    with locked(path):
        stored = stored_manifest(base, used)  # again: another run may have recorded lists since
        check_against(path, stored, base, pairs)
        for list_file, listed in used.items():
            stored["files"] = stored["files"] | listed["files"]
            stored["lists"][list_file] = {key: value for key, value in listed.items() if key != "files"}
        try:
            write_json_atomic(path, {"format": MANIFEST_FORMAT, "base": str(base), **stored})
        except OSError as err:
            raise DataError(f"cannot write the data manifest {path}: {one_line(err)}") from None
    return True


def lossy_copy_note(dataset: str, split: str, manifest: dict) -> str | None:
    """A note when a split of a losslessly stored source dataset is held as JPEG (or another lossy format)."""
    lossy = sum(n for fmt, n in manifest["formats"].items() if fmt in LOSSY_FORMATS)
    if not lossy:
        return None
    return (
        f"lossy copy: {lossy:,} of the {manifest['count']:,} {split} images of {dataset} are "
        f"{'/'.join(f for f in manifest['formats'] if f in LOSSY_FORMATS)}, but the source dataset's own "
        "images are lossless; results on a JPEG copy are not comparable with results on the original "
        "(a JPEG copy of CIFAR-100 costs about 10 points: NOAH #28)"
    )
