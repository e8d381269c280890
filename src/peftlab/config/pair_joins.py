"""Whether a run's sentence pairs are joined by a decoder's separator, known before torch is imported.

A decoder (GPT-2) reads a pair as one text with a separator between the two (``peftlab.data.text.pairs``: with
``data.pair_separator`` null, the tokenizer's end-of-sequence token); an encoder (BERT) joins it with its
tokenizer's own template. Decoder pairs were once joined with nothing between, under the same run id: the run id of
a decoder pair run therefore names its join (``decoder_pair_join``), so a study resumed across that change trains
those runs again instead of reusing results trained on pairs run together. Encoders' and single texts' ids are as
they were.

A model is a decoder when transformers builds its ``model_type`` as a causal LM and not as a masked LM
(``decoder_type``, what ``peftlab.models.hf_config.is_decoder`` asks). Importing transformers' tables imports
torch, which a study driver must not do before it pins the CPU arithmetic: they are read as data from
transformers' source (``ast.literal_eval``, nothing of it runs), and imported only where that source has
another layout.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
from pathlib import Path

from peftlab.config.checks import GLUE_PAIR_DATA
from peftlab.config.reading import read_text_file

TABLES = ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_MASKED_LM_MAPPING_NAMES")
EOS_JOIN = "the tokenizer's end-of-sequence token"  # what a run id hashes as data.pair_join


def decoder_type(model_type: object) -> bool:
    """Whether transformers builds an HF config's ``model_type`` as a causal LM and not as a masked LM."""
    causal, masked = auto_tables()
    return model_type in causal and model_type not in masked


@functools.cache
def auto_tables() -> tuple[frozenset[str], frozenset[str]]:
    """(the model types of transformers' causal-LM table, those of its masked-LM table)."""
    spec = importlib.util.find_spec("transformers")
    source = Path(spec.origin).parent / "models" / "auto" / "modeling_auto.py" if spec and spec.origin else None
    found: dict[str, frozenset[str]] = {}
    try:
        tree = ast.parse(source.read_text(encoding="utf-8")) if source is not None else ast.Module([], [])
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                if name in TABLES and isinstance(node.value, ast.Call) and len(node.value.args) == 1:
                    found[name] = frozenset(str(pair[0]) for pair in ast.literal_eval(node.value.args[0]))
    except (OSError, SyntaxError, ValueError, TypeError, IndexError):
        found = {}
    if len(found) == len(TABLES):
        return found[TABLES[0]], found[TABLES[1]]
    from transformers.models.auto import modeling_auto  # another layout: the tables themselves (torch comes in)

    return frozenset(modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES), frozenset(
        modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def decoder_pair_join(plain: dict) -> str | None:
    """``EOS_JOIN`` for a config (its ``to_dict``, paths absolute) whose sentence pairs a decoder reads joined by its
    tokenizer's end-of-sequence token (an hf-text classifier, pair data, ``data.pair_separator`` null); None for
    every other run. A separator the config sets is in its id already."""
    model, data = plain.get("model"), plain.get("data")
    if not isinstance(model, dict) or not isinstance(data, dict):
        return None
    if model.get("source") != "hf-text" or model.get("task", "classification") != "classification":
        return None
    if data.get("pair_separator") is not None or not (
        data.get("text_pair_column") or data.get("name") in GLUE_PAIR_DATA
    ):
        return None
    return EOS_JOIN if model_is_decoder(model) else None


def model_is_decoder(model: dict) -> bool:
    """Whether the HF text model a config names is a decoder, from its config.json: ``model.path``'s, else (with
    ``model.pretrained: hub``) the hub cache's copy of ``model.name``'s. A ``model.path`` with no config.json yet is a
    base a study has still to pretrain, and a text base is pretrained as a causal LM: a decoder. A hub model not in
    the cache, or a config.json that does not read, counts as an encoder here (the run itself then reads it)."""
    path = model.get("path")
    if isinstance(path, str):
        config = Path(path) / "config.json"
        try:
            if not config.exists():
                return True
        except (OSError, ValueError):  # a path no file system holds (a NUL byte): the run refuses it
            return False
    elif model.get("pretrained") == "hub" and isinstance(model.get("name"), str):
        config = hub_cached_config(model["name"])
        if config is None:
            return False
    else:
        return False
    try:
        kind = json.loads(read_text_file(config, "HF config", "a JSON file")).get("model_type")
    except Exception:  # any unreadable file: the run names it when it loads the model
        return False
    return decoder_type(kind)


def hub_cached_config(repo_id: str) -> Path | None:
    """The hub cache's config.json of ``repo_id`` (huggingface_hub's layout; no network), None where absent."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # a name the hub refuses: the run says so when it loads the model
        return None
    return Path(found) if isinstance(found, str) else None
