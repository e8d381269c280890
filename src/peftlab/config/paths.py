"""Paths in a config: resolved against the file that names them, hashed relative to the
checkout, and the architecture a peftlab base's ``manifest.json`` records."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from peftlab.config.checks import shown
from peftlab.utils.errors import ConfigError
from peftlab.utils.files import read_json

# Config fields that hold file or directory paths (``model.pretrained`` also takes "none" / "hub").
PATH_FIELDS = ("model.pretrained", "model.path", "data.root", "data.test_dir", "method.importance_from")
PATH_WORDS = {"model.pretrained": ("none", "hub")}
# The checkout peftlab runs from: a path inside it enters run ids relative to it (see config_hash).
REPO_ROOT = Path(os.path.abspath(__file__)).parents[3]


def resolve_paths(data: dict, base_dir: str | Path) -> dict:
    """``data`` (a nested config dict) with each relative path of ``PATH_FIELDS`` joined to
    ``base_dir`` (the directory of the file that names it) and normalised: an absolute path."""
    out = dict(data)
    for dotted in PATH_FIELDS:
        section, _, name = dotted.rpartition(".")
        fields = out.get(section)
        value = fields.get(name) if isinstance(fields, dict) else None
        if isinstance(value, str):
            out[section] = {**fields, name: resolve_path(value, base_dir, dotted)}
    return out


def resolve_path(value: str, base_dir: str | Path, dotted: str = "") -> str:
    """``value``, the path of field ``dotted``, joined to ``base_dir`` where it is relative and normalised; a value
    that is no path (empty, a keyword of the field such as ``hub``, or holding NUL: the field's check refuses it)
    as it is."""
    if not value or value in PATH_WORDS.get(dotted, ()) or "\x00" in value:
        return value
    path = os.path.expanduser(value)
    if not os.path.isabs(path):
        path = os.path.join(os.path.abspath(base_dir), path)
    return os.path.normpath(path)


def hashed_path(value: str) -> str:
    """How a path enters a run id: relative to the peftlab checkout when it lies inside it (so
    ids do not depend on where the checkout is, and match the ids of earlier versions, which
    hashed these paths as written relative to the repository root), else absolute."""
    for root in _repo_roots():
        if os.path.isabs(value) and (value == root or value.startswith(root + os.sep)):
            return os.path.relpath(value, root)
    return value


@functools.cache
def _repo_roots() -> tuple[str, ...]:
    """The checkout as named and as its real path (one name when they agree): resolved once, not per run id."""
    return tuple(dict.fromkeys((str(REPO_ROOT), os.path.realpath(REPO_ROOT))))


# What a peftlab base's manifest.json records of its architecture and a config may leave out.
# The weights fix the shapes (patch_size, depth, embed_dim, in_chans) and num_heads: a config
# that sets one of them otherwise is an error; img_size (the position embedding is resampled)
# and name (a timm name; the keys above decide the shapes) set in the config win.
BASE_ARCHITECTURE = ("name", "img_size", "patch_size", "depth", "embed_dim", "num_heads", "in_chans")
BASE_FIXED = ("patch_size", "depth", "embed_dim", "num_heads", "in_chans")


def base_manifest(weights: str) -> tuple[Path, dict] | None:
    """(manifest path, architecture) of a peftlab base: a ``manifest.json`` beside the weights
    file that names it (``peftlab pretrain`` writes one); None for any other weights file."""
    path = Path(weights).parent / "manifest.json"
    manifest = read_json(path)  # opened once: absent, of another kind, too large or corrupt is None
    if (
        not manifest
        or manifest.get("weights") != Path(weights).name
        or not isinstance(manifest.get("architecture"), dict)
    ):
        return None
    return path, manifest["architecture"]


def with_base_architecture(data: dict, architecture: dict | None = None, source: str | Path | None = None) -> dict:
    """``data`` (a nested config dict) with the architecture keys it leaves out (or null) taken
    from its base: ``architecture`` when given (a study's pretraining config), else the manifest
    of a peftlab base that ``model.pretrained`` names. A key the config sets that contradicts the
    weights' shapes is one ConfigError line."""
    model = data.get("model")
    if not isinstance(model, dict) or model.get("source", "timm") != "timm":
        return data
    pretrained = model.get("pretrained")
    if not isinstance(pretrained, str) or pretrained in ("none", "hub", ""):
        return data
    if architecture is None:
        found = base_manifest(pretrained)
        if found is None:
            return data
        source, architecture = found
    filled = dict(model)
    for key in BASE_ARCHITECTURE:
        if key not in architecture or architecture[key] is None:
            continue
        if model.get(key) is None:
            filled[key] = architecture[key]
        elif key in BASE_FIXED and model[key] != architecture[key]:
            raise ConfigError(
                f"model.{key}={shown(model[key])} conflicts with the base model.pretrained={pretrained} "
                f"({source} says {key}: {architecture[key]!r}): leave model.{key} out to take the "
                "base's, or name another base"
            )
    return {**data, "model": filled}
