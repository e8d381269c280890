"""``peftlab cache``: what peftlab keeps in its cache, with sizes, and clearing it.

peftlab cache                 # model records (kind, model, size, age) and the data cache's entries
peftlab cache clear           # the model records (rebuilt on the next call that needs them)
peftlab cache clear --data    # the data cache too (decoded splits, downloads, manifests, header checks)

A clear removes peftlab's own entries alone, and refuses in one line, before removing anything, a folder
that is ``/``, the home folder or an ancestor of it, or that holds anything else (``data.cache_folders``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from peftlab.data.cache_folders import MARKER, clear, clearing_plan, tree_bytes
from peftlab.utils.files import check_kind, shown_path

__all__ = ["add_cache", "cmd_cache", "tree_bytes"]


def add_cache(sub) -> None:
    p = sub.add_parser("cache", help="list or clear peftlab's cache: model records and the data cache, with sizes")
    p.add_argument("action", nargs="?", choices=["list", "clear"], default="list", help="list (default) or clear")
    p.add_argument("--data", action="store_true", help="clear: the data cache too (decoded splits, downloads)")
    p.add_argument("--json", action="store_true", help="list: print JSON")
    p.set_defaults(func=cmd_cache)


def cmd_cache(args) -> int:
    if args.action == "clear":
        plans = [records_plan(), *([data_plan()] if args.data else [])]  # every refusal before any removal
        for plan, what in zip(plans, ("model records", "data cache entries"), strict=False):
            count, size = clear(plan)
            print(f"removed {count} {what} ({size_words(size)}) from {plan.folder}")
        return 0
    listing = cache_listing()
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    print("\n".join(format_listing(listing)))
    return 0


def setting(variable: str, default: str) -> str:
    value = os.environ.get(variable)
    return f"${variable}={shown_path(value, 120)}" if value else f"${variable} unset, so {default}"


def records_plan():
    from peftlab.records.store import ENV_MODEL_CACHE, records_dir, sort_records_entry

    where = setting(ENV_MODEL_CACHE, "beside the data cache")
    hint = f"set {ENV_MODEL_CACHE} to a folder of peftlab's model records alone"
    return clearing_plan(
        records_dir(), "model records", sort_records_entry, f"the model records folder ({where})", hint
    )


def data_plan():
    from peftlab.data.sources import DEFAULT_DATA_CACHE, ENV_DATA_CACHE, data_cache, sort_cache_entry

    hint = f"set {ENV_DATA_CACHE} to a folder of peftlab's data cache alone (data.root names datasets anywhere)"
    what = f"the data cache ({setting(ENV_DATA_CACHE, DEFAULT_DATA_CACHE)})"
    return clearing_plan(data_cache(), "data", sort_cache_entry, what, hint)


def cache_listing() -> dict:
    """The records and the data cache's entries: each of peftlab's own entries with its size, an entry that
    is not peftlab's by name alone (a clear refuses the folder)."""
    from peftlab.data.sources import ENV_DATA_CACHE, data_cache, sort_cache_entry
    from peftlab.records.store import ENV_MODEL_CACHE, listed, records_dir

    data = data_cache()
    check_kind(records_dir(), True, f"the model records folder (${ENV_MODEL_CACHE})")
    check_kind(data, True, f"the data cache (${ENV_DATA_CACHE})")
    try:
        with os.scandir(data) as it:
            entries = sorted((e for e in it if e.name != MARKER), key=lambda e: e.name)
    except FileNotFoundError:
        entries = []
    except OSError as err:
        from peftlab.utils.errors import UserError

        raise UserError(f"the data cache {shown_path(data)} cannot be listed: {err.strerror}") from None
    rows = []
    for entry in entries:
        kind = sort_cache_entry(entry)
        rows.append(
            {"path": entry.path, "peftlab": kind, "bytes": None if kind == "foreign" else tree_bytes(entry.path)}
        )
    return {"records_dir": str(records_dir()), "records": listed(), "data_cache": str(data), "data": rows}


def format_listing(listing: dict) -> list[str]:
    from peftlab.records.store import age_words

    records = listing["records"]
    total = sum(r["bytes"] for r in records)
    lines = [f"model records: {len(records)}, {size_words(total)} in {shown_path(listing['records_dir'])}"]
    for r in records:
        state = "" if r["intact"] else "  damaged (rebuilt when next needed)"
        lines.append(
            f"  {r['kind']:<9} {shown_path(r['model'] or '-', 60):<32} {size_words(r['bytes']):>9}  "
            f"{age_words(r['age_seconds'])} old  {Path(r['path']).name}{state}"
        )
    data_total = sum(e["bytes"] or 0 for e in listing["data"])
    lines.append(
        f"data cache: {len(listing['data'])} entries, {size_words(data_total)} in {shown_path(listing['data_cache'])}"
    )
    notes = {"kept": "  (data you placed: a clear keeps it)", "foreign": "  not peftlab's: a clear refuses the folder"}
    lines += [
        f"  {shown_path(Path(e['path']).name, 60):<42} {size_words(e['bytes']) if e['bytes'] is not None else '':>9}"
        f"{notes.get(e['peftlab'], '')}"
        for e in listing["data"]
    ]
    return lines


def size_words(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
