"""``peftlab cache``: what peftlab keeps in its cache, with sizes, and clearing it.

peftlab cache                 # model records (kind, model, size, age) and the data cache's entries
peftlab cache clear           # the model records (rebuilt on the next call that needs them)
peftlab cache clear --data    # the data cache too (decoded splits, downloads, manifests)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

RECORD_NAME = re.compile(r"^[a-z]+-[0-9a-f]{32}\.json$")  # the names records.store writes


def add_cache(sub) -> None:
    p = sub.add_parser("cache", help="list or clear peftlab's cache: model records and the data cache, with sizes")
    p.add_argument("action", nargs="?", choices=["list", "clear"], default="list", help="list (default) or clear")
    p.add_argument("--data", action="store_true", help="clear: the data cache too (decoded splits, downloads)")
    p.add_argument("--json", action="store_true", help="list: print JSON")
    p.set_defaults(func=cmd_cache)


def cmd_cache(args) -> int:
    from peftlab.data.sources import data_cache
    from peftlab.records.store import records_dir

    if args.action == "clear":
        removed = clear_records(records_dir())
        print(f"removed {removed[0]} model records ({size_words(removed[1])}) from {records_dir()}")
        if args.data:
            count, size = clear_folder(data_cache())
            print(f"removed {count} data cache entries ({size_words(size)}) from {data_cache()}")
        return 0
    listing = cache_listing()
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    print("\n".join(format_listing(listing)))
    return 0


def cache_listing() -> dict:
    from peftlab.data.sources import data_cache
    from peftlab.records.store import listed, records_dir

    data = data_cache()
    try:
        entries = sorted(data.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        entries = []
    return {
        "records_dir": str(records_dir()),
        "records": listed(),
        "data_cache": str(data),
        "data": [{"path": str(entry), "bytes": tree_bytes(entry)} for entry in entries],
    }


def format_listing(listing: dict) -> list[str]:
    from peftlab.records.store import age_words

    records = listing["records"]
    total = sum(r["bytes"] for r in records)
    lines = [f"model records: {len(records)}, {size_words(total)} in {listing['records_dir']}"]
    for r in records:
        state = "" if r["intact"] else "  damaged (rebuilt when next needed)"
        lines.append(
            f"  {r['kind']:<9} {r['model'] or '-':<32} {size_words(r['bytes']):>9}  "
            f"{age_words(r['age_seconds'])} old  {Path(r['path']).name}{state}"
        )
    data_total = sum(e["bytes"] for e in listing["data"])
    lines.append(f"data cache: {len(listing['data'])} entries, {size_words(data_total)} in {listing['data_cache']}")
    lines += [f"  {Path(e['path']).name:<42} {size_words(e['bytes']):>9}" for e in listing["data"]]
    return lines


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (links counted as links, never followed)."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    total = 0
    for root, _, files in os.walk(path):
        total += sum((Path(root) / name).lstat().st_size for name in files)
    return total


def clear_records(folder: Path) -> tuple[int, int]:
    """Remove the record files (by their names; nothing else of the folder): (count, bytes)."""
    count = size = 0
    try:
        paths = [p for p in folder.iterdir() if RECORD_NAME.match(p.name)]
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0
    for path in paths:
        size += path.lstat().st_size
        path.unlink(missing_ok=True)
        count += 1
    return count, size


def clear_folder(folder: Path) -> tuple[int, int]:
    """Remove every entry of ``folder`` (a link removed as a link): (count, bytes)."""
    count = size = 0
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0
    for entry in entries:
        size += tree_bytes(entry)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
        count += 1
    return count, size


def size_words(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
