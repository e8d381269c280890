"""A Hugging Face hub cache laid out on disk exactly as huggingface_hub's client writes it, for
testing ``model.pretrained: hub`` with ``HF_HUB_OFFLINE=1`` and no network.

``<cache>/models--<org>--<name>/``: ``blobs/<etag>`` holds each file's bytes (the etag of a
git-LFS file such as model.safetensors is its SHA-256, of a plain git file such as config.json its
git blob SHA-1), ``snapshots/<commit>/<file>`` is a relative link to its blob, ``refs/main`` holds
the commit (no newline). ``huggingface_hub.scan_cache_dir`` reads it back as a valid cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# A fixed commit hash: the snapshot folder's name, which provenance records as the revision.
COMMIT = hashlib.sha1(b"peftlab test snapshot").hexdigest()


def etag(name: str, data: bytes) -> str:
    """The blob name huggingface_hub gives a downloaded file: SHA-256 for LFS files, git's blob SHA-1 otherwise."""
    if name.endswith((".safetensors", ".bin", ".parquet")):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lay_out_snapshot(
    cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT, repo_type: str = "model"
) -> Path:
    """Write ``files`` (names relative to the repository, folders included) into ``cache`` as the hub
    client stores a download of ``repo_id`` at ``commit`` (``main`` pointing at it); returns the
    snapshot folder. A dataset repository (``repo_type="dataset"``) is ``datasets--<org>--<name>``."""
    repo = cache / (f"{repo_type}s--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / etag(name, data)
        blob.write_bytes(data)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(os.path.relpath(blob, (snapshot / name).parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def timm_hub_files(name: str, **kwargs) -> tuple[dict[str, bytes], dict]:
    """(files, state dict) of a timm model of random weights as timm publishes it on the hub
    (``save_for_hf``: model.safetensors and config.json); ``kwargs`` go to ``timm.create_model``."""
    import tempfile

    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs)
    with tempfile.TemporaryDirectory() as out:
        save_for_hf(model, out, safe_serialization=True)
        files = {p.name: p.read_bytes() for p in Path(out).iterdir()}
    return files, {k: v.clone() for k, v in model.state_dict().items()}


def use_cache(monkeypatch, cache: Path) -> None:
    """Point huggingface_hub at ``cache``, offline: the environment a user sets, and the constants
    huggingface_hub read from it when it was imported (it reads them once)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
