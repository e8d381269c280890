"""The Hugging Face hub cache, read safely, for the models (``peftlab.models.hub``) and the datasets
(``peftlab.data.text.glue``) alike.

huggingface_hub reads the cache's ``refs/<revision>`` and ``trees/<commit>.json`` with a plain ``open()``
and ``read()``: a FIFO there would block it, a link to /dev/zero read until memory ran out.
``check_cache_refs`` holds them to regular files of bounded size before huggingface_hub is asked.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from peftlab.utils.errors import DataError, UserError
from peftlab.utils.files import one_line, read_regular_file
from peftlab.utils.libraries import to_library_log

MAX_REF_BYTES = 1024  # a ref file holds one 40-character commit hash
MAX_TREE_BYTES = 256 << 20  # a tree listing: some hundred bytes a file of the repository
COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


def not_in_cache(what: str, fetch: str, instead: str, partly: bool = False, why: str | None = None) -> str:
    """The line for ``what`` missing from the hub cache (offline, or the hub unreachable): the cache, ``why``
    the hub was not asked (``hub_unreachable``'s answer), the command that fetches it and what to do ``instead``."""
    from huggingface_hub import constants

    why = why or ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub could not be reached")
    return (
        f"{what} is not in the hub cache {constants.HF_HUB_CACHE}{', or only in part,' if partly else ''} and "
        f"{why}; fetch it where there is network with `{fetch}` into that cache (HF_HUB_CACHE), or {instead}"
    )


def hub_unreachable(url: str) -> str | None:
    """Why the hub cannot serve ``url`` (a file's ``hf_hub_url``), decided with one HEAD request and no retry;
    None where it answers, whatever the answer (a missing file, a gated repository: the download reports it).

    ``hf_hub_download`` tries once and, finding nothing in the cache, tries again five times with 23 s of
    back-off and a warning on each try, whatever the failure: a machine without network (no address for
    the hub's host, no route) waited on all of them. Asked first, such a failure sends the download to the
    cache alone (``local_files_only``), which answers at once: the file, or its absence."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants, get_hf_file_metadata
    from huggingface_hub.errors import FileMetadataError, HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        get_hf_file_metadata(url)
    except (HfHubHTTPError, FileMetadataError):  # an answer
        return None
    except Exception as err:  # no answer: DNS, connection, proxy, TLS or timeout (HF_HUB_ETAG_TIMEOUT)
        return f"the hub {urlsplit(url).netloc} could not be reached ({one_line(err)[:160]})"
    return None


def hub_dataset_dir(repo_id: str, patterns: list[str], where: str) -> Path:
    """The snapshot folder of HF dataset repository ``repo_id`` in the hub cache
    (``datasets--<org>--<name>/snapshots/<commit>``) holding the files ``patterns`` match, downloaded
    first when there is network; a failure is one DataError line that starts with ``where`` and, for a
    dataset missing from the cache offline, says how to fetch it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    to_library_log("huggingface_hub")
    fetch = f"hf download {repo_id} --repo-type dataset " + " ".join(f"--include '{p}'" for p in patterns)
    check_cache_refs("dataset", repo_id, None, where, DataError)
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns))
    except LocalEntryNotFoundError:
        raise DataError(not_in_cache(f"{where}: {repo_id}", fetch, "set data.root to the files")) from None
    except Exception as err:
        raise DataError(f"{where}: {repo_id} could not be fetched from the hub ({one_line(err)[:200]})") from None


def check_cache_refs(repo_type: str, repo_id: str, revision: str | None, where: str, error: type[UserError]) -> None:
    """The hub cache's entries for ``revision`` (None: main) of ``repo_id`` that huggingface_hub reads
    whole, ``refs/<revision>`` and the tree listing ``trees/<commit>.json``, are regular files of bounded
    size (the ref one commit hash), else one ``error`` line starting with ``where``; absent ones are
    huggingface_hub's to report."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = revision if revision and COMMIT_HASH.fullmatch(revision) else None
    ref = folder / "refs" / (revision or constants.DEFAULT_REVISION)
    if commit is None and os.path.lexists(ref):
        raw = read_cache_file(ref, MAX_REF_BYTES, where, error)
        commit = raw.decode("ascii", "replace").strip()
        if not COMMIT_HASH.fullmatch(commit):
            raise error(f"{where}: the hub cache's {ref} holds {commit[:60]!r}: expected a 40-digit commit hash")
    if commit is not None and os.path.lexists(tree := folder / "trees" / f"{commit}.json"):
        check_cache_file(tree, MAX_TREE_BYTES, where, error)


def check_cache_file(path: Path, limit: int, where: str, error: type[UserError]) -> os.stat_result:
    """``path`` (links followed) is a regular file of at most ``limit`` bytes, else one ``error`` line."""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as err:  # a broken link, a loop
        raise error(f"{where}: the hub cache's {path} cannot be read ({one_line(err)[:200]})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{where}: the hub cache's {path} is not a regular file (a FIFO, device or folder)")
    if st.st_size > limit:
        raise error(f"{where}: the hub cache's {path} has {st.st_size:,} bytes: expected at most {limit:,}")
    return st


def read_cache_file(path: Path, limit: int, where: str, error: type[UserError]) -> bytes:
    """The bytes of ``check_cache_file``'s ``path``, read without blocking and no more than ``limit``."""
    check_cache_file(path, limit, where, error)
    try:
        raw = read_regular_file(path, limit + 1)
    except OSError as err:
        raise error(f"{where}: the hub cache's {path} cannot be read ({one_line(err)[:200]})") from None
    if raw is None or len(raw) > limit:  # swapped for another kind of file, or grown, since the stat
        raise error(f"{where}: the hub cache's {path} is not a regular file of at most {limit:,} bytes")
    return raw
