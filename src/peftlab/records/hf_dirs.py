"""What a local HF model directory's records depend on: its files as they are now, without torch.

    files = dir_files(path)      # {name: {"size", "sha256"} or {"size"}}, or None: answered live
    source, labels = hf_source(path)   # ``models.backbones.hf_source_of``, from its record

The meta-device build of an HF model (``build_hf``, ``build_hf_text``: ``check_hf_config`` and
``AutoConfig.from_pretrained``) and its input spec (``input_spec_for``) read, of the directory, config.json
and the other files of ``models.hf_config.CODE_MAPS`` where present (tokenizer_config.json for its
``auto_map``, preprocessor_config.json also for its normalisation); they look at the other top-level files
only to refuse one (a FIFO, Python code, an empty weights file, a file past its bound). So a record's
payload holds those files read, each by size and SHA-256, and every other file the checks look at by size
alone (the weights are never read: a new weights file of the same shapes counts the same; the checks answer
from those files' kind and size alone, so no write in place can change their answer). A directory with
something the checks would refuse (or that cannot be listed) gets no payload: the live code says what.
The tokenizer's vocabulary files are not read: the vocabulary is config.json's ``vocab_size``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from peftlab.models.hf_config import CODE_MAPS, MAX_JSON_BYTES
from peftlab.records.store import cached

HASH_CHUNK = 1 << 20


def is_checked(name: str) -> bool:
    """A top-level name the live checks look at: ``check_hf_files`` (the tokenizer's and processor's files,
    the weights), ``check_no_code`` (Python code), ``hf_has_weights`` (the weights and their index)."""
    return name.endswith((".json", ".txt", ".model", ".py")) or (
        name.startswith("model") and name.endswith(".safetensors")
    )


def dir_files(path: str | Path) -> dict | None:
    """The files of the HF model directory ``path`` that its meta model depends on, by name: those read by
    size and SHA-256, the others checked by size; None for a directory that cannot be listed, holds no
    config.json, or an entry the checks look at that is no regular file (links followed) or a read file
    past ``MAX_JSON_BYTES``."""
    try:
        names = sorted(os.listdir(path))
    except (OSError, ValueError):
        return None
    files = {}
    for name in names:
        if not is_checked(name):
            continue
        try:
            st = os.stat(os.path.join(path, name))
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if name not in CODE_MAPS:
            files[name] = {"size": st.st_size}
            continue
        if st.st_size > MAX_JSON_BYTES:  # refused live, unread
            return None
        digest = sha256_of(os.path.join(path, name), st.st_size)
        if digest is None:
            return None
        files[name] = {"size": st.st_size, "sha256": digest}
    return files if "config.json" in files else None


def sha256_of(path: str, size: int) -> str | None:
    """SHA-256 of the regular file ``path`` of ``size`` bytes (as stat said); None when what opens is no
    regular file of that size (swapped since): opened without blocking, as ``utils.files.read_regular_file``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    digest, left = hashlib.sha256(), size
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return None
        while left and (chunk := os.read(fd, min(HASH_CHUNK, left))):
            digest.update(chunk)
            left -= len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if left else digest.hexdigest()


def hf_source(path: str | Path) -> tuple[str, int]:
    """``models.backbones.hf_source_of(path)`` (``hf`` or ``hf-text``, its number of labels), recorded per
    directory files (config.json's ``model_type`` and labels) and transformers' version (which names the
    image classifiers); live for a directory ``dir_files`` gives no payload."""

    def live() -> dict:
        from peftlab.models.backbones import hf_source_of  # torch and transformers: only when built

        source, labels = hf_source_of(path)
        return {"source": source, "labels": labels}

    files = dir_files(path)
    body = live() if files is None else cached("hf-source", {"files": files}, live)[0]
    return body["source"], body["labels"]
