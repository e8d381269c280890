"""Pretrained weights from the Hugging Face hub (``model.pretrained: hub``), safetensors only.

huggingface_hub finds the files: with network it downloads them into its cache (``HF_HUB_CACHE``,
else ``HF_HOME/hub``); with ``HF_HUB_OFFLINE=1``, or where the hub gives no answer to one request
(``hub_unreachable``: no network), it reads that cache alone, as
``models--<org>--<name>/snapshots/<commit>/<file>`` with ``refs/main`` naming the commit. Its log records
(retries, fallbacks to the cache) go to the library log, not to stderr (``utils.libraries``).

- timm (``hub_weights_file``): peftlab asks for the safetensors file itself and hands timm that exact
  file: timm's own hub loader, when ``model.safetensors`` is missing (offline: not cached), falls back
  to ``pytorch_model.bin``, a pickle.
- HF transformers (``model.source: hf`` or ``hf-text``, ``model.name: org/name[@revision]``;
  ``hf_model_dir``): the repository's snapshot folder, holding what transformers reads of it (config,
  tokenizer and image processor files, ``model*.safetensors``; never a pickle), is the model directory
  that ``model.path`` names otherwise.

The file loaded is the one hashed into provenance, with the repository and the commit it came from.

huggingface_hub reads the cache's ``refs/<revision>`` and ``trees/<commit>.json`` with a plain ``open()``
and ``read()``: a FIFO there would block it, a link to /dev/zero read until memory ran out.
``check_cache_refs`` holds them to regular files of bounded size before huggingface_hub is asked, and
what peftlab then reads of a snapshot is checked alike (``check_snapshot_file``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from peftlab.utils.errors import WeightsError
from peftlab.utils.files import one_line
from peftlab.utils.hub_cache import check_cache_refs, hub_unreachable, not_in_cache
from peftlab.utils.libraries import to_library_log

if TYPE_CHECKING:
    from peftlab.config.sections import ModelConfig

SAFE_WEIGHTS = "model.safetensors"
# What peftlab fetches of an HF model repository, at its top level only (a subfolder holds other formats:
# onnx/, a pipeline's parts): config.json, the tokenizer's and image processor's files (*.json, vocab.txt,
# merges.txt, spiece.model, ...), the weights model.safetensors or its shards with their index; never a pickle
HF_FILES = ("*.json", "*.txt", "*.model")
HF_WEIGHTS = ("model*.safetensors",)
HF_SKIPPED = ("*/*",)
# (hub cache, repository, revision asked) -> the commit it resolved to first in this process: later calls
# read that commit, so the weights, the tokenizer and provenance of one run come from one commit
_PINNED: dict[tuple[str, str, str], str] = {}


def hub_source(name: str) -> tuple[str, str | None, str]:
    """(repository, revision or None, file name) of timm model ``name``'s pretrained weights."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        raise WeightsError(
            f"model.pretrained='hub': timm has no Hugging Face hub weights for {name!r}; "
            "set model.pretrained to a local .safetensors file"
        )
    filename = cfg.hf_hub_filename or SAFE_WEIGHTS
    if not filename.endswith(".safetensors"):
        raise WeightsError(
            f"model.pretrained='hub': timm's hub weights for {name!r} are {filename!r}, not a "
            ".safetensors file: peftlab never loads pickled weights"
        )
    repo_id, _, revision = cfg.hf_hub_id.partition("@")  # timm's "org/name@revision"
    return repo_id, revision or None, filename


def fetch_command(repo_id: str, revision: str | None, filename: str) -> str:
    """The huggingface_hub CLI line that puts the file into the hub cache (``hf``, huggingface_hub >= 1.0)."""
    return f"hf download {repo_id} {filename}" + (f" --revision {revision}" if revision else "")


def hub_weights_file(name: str) -> Path:
    """The safetensors weights of timm model ``name`` in the hub cache (``snapshots/<commit>/<file>``, a
    link into ``blobs/``), downloaded first when there is network; every failure is one WeightsError
    line, the missing cache entry offline saying how to fetch it."""
    from huggingface_hub import hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    to_library_log("huggingface_hub")
    repo_id, revision, filename = hub_source(name)
    fetch = fetch_command(repo_id, revision, filename)
    check_cache_refs("model", repo_id, revision, "model.pretrained='hub'", WeightsError)
    unreachable = hub_unreachable(hf_hub_url(repo_id, filename, revision=revision))
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=unreachable is not None))
    except LocalEntryNotFoundError:  # not in the cache, and the hub not asked (offline) or not reachable
        what = f"model.pretrained='hub': {filename} of {repo_id}"
        instead = "set model.pretrained to a local .safetensors file"
        raise WeightsError(not_in_cache(what, fetch, instead, why=unreachable)) from None
    except EntryNotFoundError:  # the repository exists, the file does not
        raise WeightsError(
            f"model.pretrained='hub': {repo_id} on the hub has no {filename}; peftlab loads "
            "safetensors weights only: set model.pretrained to a local .safetensors file"
        ) from None
    except Exception as err:
        raise WeightsError(
            f"model.pretrained='hub': {filename} of {repo_id} could not be fetched "
            f"({one_line(err)[:200]}); set model.pretrained to a local .safetensors file"
        ) from None
    from peftlab.models.weights import check_regular_weights

    check_regular_weights(path)
    return path


def snapshot_source(path: str | Path) -> tuple[str, str] | None:
    """(repository, commit) of a file or folder inside a hub cache snapshot,
    ``.../models--<org>--<name>/snapshots/<commit>[/<file>]``; None for any other path. The path is read
    as named: resolving its links would leave the snapshot for ``blobs/``."""
    parts = Path(path).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--"):
            return parts[i - 1].removeprefix("models--").replace("--", "/"), parts[i + 1]
    return None


def hf_model_dir(cfg: ModelConfig, weights: bool = True) -> Path:
    """The HF model directory of an ``hf`` or ``hf-text`` model: ``model.path``, or with ``pretrained: hub``
    the hub snapshot of ``model.name`` (``org/name`` or ``org/name@revision``; ``weights`` False: its
    config and tokenizer, what counting and tokenizing read)."""
    if cfg.pretrained != "hub":
        return Path(cfg.path)
    repo_id, _, revision = cfg.name.partition("@")
    return hub_model_dir(repo_id, revision or None, weights)


def hf_fetch_command(repo_id: str, revision: str | None) -> str:
    """The huggingface_hub CLI line that puts what ``hub_model_dir`` reads into the hub cache."""
    patterns = " ".join(f"--include '{p}'" for p in HF_FILES + HF_WEIGHTS)
    revision = f" --revision {revision}" if revision else ""
    return f"hf download {repo_id} {patterns} --exclude '{HF_SKIPPED[0]}'{revision}"


def hub_model_dir(repo_id: str, revision: str | None = None, weights: bool = True) -> Path:
    """The snapshot folder of HF model repository ``repo_id`` in the hub cache
    (``models--<org>--<name>/snapshots/<commit>``), its files (``HF_FILES``, and ``HF_WEIGHTS`` with
    ``weights``) downloaded first when there is network; every failure is one WeightsError line naming
    ``model.name``, a repository missing from the cache offline saying how to fetch it."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    to_library_log("huggingface_hub")
    name = repo_id + (f"@{revision}" if revision else "")
    where, fetch = f"model.name={name!r} (model.pretrained: hub)", hf_fetch_command(repo_id, revision)
    key = (str(constants.HF_HUB_CACHE), repo_id, revision or constants.DEFAULT_REVISION)
    check_cache_refs("model", repo_id, _PINNED.get(key, revision), where, WeightsError)
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=_PINNED.get(key, revision),
                allow_patterns=list(HF_FILES + HF_WEIGHTS if weights else HF_FILES),
                ignore_patterns=list(HF_SKIPPED),
            )
        )
    except LocalEntryNotFoundError:  # not in the cache, and the hub not asked (offline) or not reachable
        instead = "set model.path to a local HF model directory"
        raise WeightsError(not_in_cache(f"{where}: {name}", fetch, instead, partly=True)) from None
    except RevisionNotFoundError:
        raise WeightsError(f"{where}: {repo_id} on the hub has no revision {revision!r}") from None
    except RepositoryNotFoundError:  # gated and private repositories included
        raise WeightsError(
            f"{where}: the hub has no model repository {repo_id} that this login may read "
            "(a private or gated one needs `hf auth login`)"
        ) from None
    except Exception as err:
        raise WeightsError(f"{where}: {name} could not be fetched ({one_line(err)[:200]})") from None
    _PINNED.setdefault(key, folder.name)
    check_hub_snapshot(folder, where, fetch, weights)
    return folder


def check_hub_snapshot(folder: Path, where: str, fetch: str, weights: bool) -> None:
    """A snapshot folder holds a transformers model: config.json, and with ``weights`` its safetensors
    weights (a repository of pickled pytorch_model.bin weights alone is refused)."""
    if not (folder / "config.json").is_file():
        raise WeightsError(
            f"{where}: the hub snapshot {folder} holds no config.json (not a transformers model, or not "
            f"fetched: `{fetch}`)"
        )
    if weights and not any(folder.glob("model*.safetensors")):
        raise WeightsError(
            f"{where}: the hub snapshot {folder} holds no safetensors weights (model.safetensors) and peftlab "
            f"never loads pickled ones (pytorch_model.bin): fetch them with `{fetch}` if the repository has "
            "them, else convert the weights to safetensors and set model.path to that directory"
        )
