"""timm's pretrained weights from the Hugging Face hub (``model.pretrained: hub``), safetensors only.

huggingface_hub finds the file: with network it downloads it into its cache (``HF_HUB_CACHE``,
else ``HF_HOME/hub``); with ``HF_HUB_OFFLINE=1`` it reads that cache alone, as
``models--<org>--<name>/snapshots/<commit>/model.safetensors`` with ``refs/main`` naming the
commit. peftlab asks for the safetensors file itself and hands timm that exact file: timm's own
hub loader, when ``model.safetensors`` is missing (offline: not cached), falls back to
``pytorch_model.bin``, a pickle. The file loaded is the one hashed into provenance, with the
repository and the commit it came from.
"""

from __future__ import annotations

from pathlib import Path

from peftlab.errors import WeightsError
from peftlab.files import one_line

SAFE_WEIGHTS = "model.safetensors"


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
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo_id, revision, filename = hub_source(name)
    cache, fetch = constants.HF_HUB_CACHE, fetch_command(repo_id, revision, filename)
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except LocalEntryNotFoundError:  # not in the cache, and the hub not asked (offline) or not reachable
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub could not be reached"
        raise WeightsError(
            f"model.pretrained='hub': {filename} of {repo_id} is not in the hub cache {cache} and "
            f"{why}; fetch it where there is network with `{fetch}` into that cache (HF_HUB_CACHE), "
            "or set model.pretrained to a local .safetensors file"
        ) from None
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


def snapshot_source(path: str | Path) -> tuple[str, str] | None:
    """(repository, commit) of a file or folder inside a hub cache snapshot,
    ``.../models--<org>--<name>/snapshots/<commit>[/<file>]``; None for any other path. The path is read
    as named: resolving its links would leave the snapshot for ``blobs/``."""
    parts = Path(path).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--"):
            return parts[i - 1].removeprefix("models--").replace("--", "/"), parts[i + 1]
    return None
