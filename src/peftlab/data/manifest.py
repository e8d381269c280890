"""A manifest per split of a listed dataset: what its list file held on first use, checked on every later use.

    manifest = split_manifest(list_file, base, samples)     # hashes every image, checks every header
    check_or_write(manifest_file(list_file), manifest)       # first use: write; later: compare

The manifest records the list file's SHA-256, the image count and classes, every image's SHA-256,
and the image formats and sizes its headers declare. A later use that finds a changed, added or
missing file is one DataError line naming it. Every image is checked by `image_checks.image_header`
(format, pixel bound, a complete file; cached per list), the check folder datasets get too. The
manifests live in the data cache (``$PEFTLAB_DATA_CACHE/manifests``), keyed by the list file's
absolute path, so a read-only dataset folder needs no write access.
"""

import hashlib
from collections import Counter
from pathlib import Path

from peftlab.data.image_checks import checked_headers, headers_file
from peftlab.data.records import Samples, hash_file
from peftlab.data.sources import data_cache, writable_cache_dir
from peftlab.errors import DataError
from peftlab.files import one_line, read_json, write_json_atomic

MANIFEST_FORMAT = 1
# formats that keep every pixel; JPEG does not
LOSSY_FORMATS = ("JPEG", "MPO", "WEBP")


def manifest_file(list_file: str) -> Path:
    key = hashlib.sha256(str(Path(list_file).resolve()).encode()).hexdigest()[:32]
    return data_cache() / "manifests" / f"{key}.json"


def split_manifest(list_file: str, base: Path, samples: Samples) -> dict:
    """The manifest of one split: ``samples``' files, named relative to ``base``. A file changed since
    the stored manifest is named as changed before any header is checked."""
    files = {}
    for path in map(Path, samples.images):
        files[path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)] = hash_file(path)
    list_sha = hash_file(Path(list_file)) if Path(list_file).is_file() else None
    manifest = {
        "format": MANIFEST_FORMAT,
        "list": list_file,
        "list_sha256": list_sha,
        "base": str(base),
        "count": len(samples),
        "classes": sorted(set(samples.labels.tolist())),
    }
    check_unchanged(manifest_file(list_file), manifest | {"files": files})
    headers = checked_headers(samples.images, headers_file(Path(list_file).resolve()))
    formats, sizes = Counter(f for f, _ in headers), Counter(size for _, size in headers)
    return manifest | {
        "formats": dict(sorted(formats.items())),
        "sizes": dict(sizes.most_common(10)),
        "distinct_sizes": len(sizes),
        "files": files,
    }


def first_difference(old: dict, new: dict) -> str | None:
    """What changed between two manifests of one list, in words naming a file; None when nothing did."""
    if old.get("list_sha256") != new["list_sha256"]:
        return f"the list file {new['list']} changed"
    old_files, new_files = old.get("files", {}), new["files"]
    for name, digest in new_files.items():
        if name not in old_files:
            return f"{name} is new"
        if old_files[name] != digest:
            return f"{Path(new['base']) / name} changed (SHA-256 {old_files[name][:12]}... became {digest[:12]}...)"
    if missing := sorted(set(old_files) - set(new_files)):
        return f"{Path(new['base']) / missing[0]} is gone"
    return None


def stored_manifest(path: Path) -> dict | None:
    stored = read_json(path) if path.is_file() else None
    return stored if stored is not None and stored.get("format") == MANIFEST_FORMAT else None


def check_unchanged(path: Path, manifest: dict) -> bool:
    """A DataError naming the first difference between ``manifest`` and the one stored at ``path``, if any.
    False when none is stored."""
    stored = stored_manifest(path)
    if stored is not None and (difference := first_difference(stored, manifest)):
        raise DataError(
            f"{manifest['list']}: {difference} since its manifest {path} was written; restore the "
            f"file, or delete the manifest to accept the dataset as it is now"
        )
    return stored is not None


def check_or_write(path: Path, manifest: dict) -> bool:
    """Compare ``manifest`` with the one stored at ``path`` (a DataError naming the first difference),
    or store it when there is none. True when it was written now."""
    if check_unchanged(path, manifest):
        return False
    writable_cache_dir(path.parent)
    try:
        write_json_atomic(path, manifest)
    except OSError as err:
        raise DataError(f"cannot write the split manifest {path}: {one_line(err)}") from None
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
