"""An HF model directory's config.json, read bounded and held to the bounds of a timm model's config.

``model.depth <= 256`` and the other size bounds of ``model.*`` apply to the sizes an HF
config.json sets as well: a file with ``num_hidden_layers: 100000`` would build its model for
minutes while memory grows past 3 GB. ``check_hf_config`` refuses it in one line naming the file and the
key, before transformers reads the file or builds anything; the meta-device size check
(``peftlab.tuners.params``) then sees a model of bounded shape.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from peftlab.config.checks import MAX_DEPTH, MAX_EMBED_DIM, MAX_IMG_SIZE, MAX_MLP_DIM, check_field
from peftlab.config.reading import MissingFile, read_text_file
from peftlab.utils.errors import WeightsError
from peftlab.utils.files import one_line, read_regular_file, shown_path
from peftlab.utils.libraries import quiet_transformers

MAX_JSON_BYTES = 64 << 20  # a tokenizer.json of 256,000 tokens is about 35 MB
MAX_HF_FILE_BYTES = 1 << 30  # a tokenizer's or processor's file; the weights are as large as they are
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")
MAX_TOKENS = 2**20  # Llama 3's vocabulary is 128,256 tokens, Gemma's 256,000
# the keys of an HF ViT / DeiT config that size its classifier: their largest values, and whose bound that is
SIZE_KEYS = {
    "num_hidden_layers": (MAX_DEPTH, "model.depth"),
    "hidden_size": (MAX_EMBED_DIM, "model.embed_dim"),
    "num_attention_heads": (MAX_EMBED_DIM, "model.num_heads"),
    "intermediate_size": (MAX_MLP_DIM, "4 x model.embed_dim"),
    "pooler_output_size": (MAX_EMBED_DIM, "model.embed_dim"),
    "image_size": (MAX_IMG_SIZE, "model.img_size"),
    "patch_size": (MAX_IMG_SIZE, "model.patch_size"),
    # GPT-2 names its sizes apart; a text model's embeddings grow with its vocabulary and positions
    "n_layer": (MAX_DEPTH, "model.depth"),
    "n_embd": (MAX_EMBED_DIM, "model.embed_dim"),
    "n_head": (MAX_EMBED_DIM, "model.num_heads"),
    "vocab_size": (MAX_TOKENS, "a vocabulary of 2^20 tokens"),
    "max_position_embeddings": (MAX_TOKENS, "2^20 positions"),
    "n_positions": (MAX_TOKENS, "2^20 positions"),
}
# the files of an HF model directory whose "auto_map" names classes in Python files (the directory's own or
# another repository's) that transformers' Auto classes import: the model's and its config's, the
# tokenizer's, the image processor's and the processor's
CODE_MAPS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")


def read_hf_config(model_dir: str | Path) -> dict:
    """The JSON object of ``model_dir/config.json``: a regular UTF-8 file of at most 1 MiB, else one line."""
    path = Path(model_dir) / "config.json"
    try:  # opened once: a config.json of another kind is named by read_text_file
        text = read_text_file(path, "HF config", "a JSON file")
    except MissingFile:
        raise WeightsError(f"model.path={str(model_dir)!r} is not an HF model directory (no config.json)") from None
    unloadable = f"model.path={str(model_dir)!r} is not a loadable HF model directory: {shown_path(path)}"
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, a number of 5,000 digits, deep nesting
        raise WeightsError(f"{unloadable} is not valid JSON ({str(err)[:200]})") from None
    if not isinstance(config, dict):
        raise WeightsError(f"{unloadable} holds a {type(config).__name__}: expected a JSON object")
    check_no_code(Path(model_dir), config)
    check_hf_files(Path(model_dir))
    return config


def check_hf_files(model_dir: Path) -> None:
    """What transformers reads of an HF model directory (its top-level ``*.json``, ``*.txt``, ``*.model``
    files and ``model*.safetensors`` weights) are regular files (links followed), the others at most
    ``MAX_HF_FILE_BYTES``: transformers and tokenizers open them plainly, so that a FIFO would block and a
    link to /dev/zero read until memory ran out. One WeightsError line otherwise."""
    from peftlab.models.weights import check_regular_weights

    try:
        names = sorted(p.name for p in model_dir.iterdir())
    except OSError:  # a directory that cannot be listed: transformers' own load says so
        return
    for name in names:
        path = model_dir / name
        if name.startswith("model") and name.endswith(".safetensors"):
            check_regular_weights(path)
        elif name.endswith((".json", ".txt", ".model")):
            try:
                st = os.stat(path)
            except (OSError, ValueError) as err:
                raise WeightsError(f"{shown_path(path)} cannot be read ({one_line(err)[:200]})") from None
            if not stat.S_ISREG(st.st_mode):
                raise WeightsError(f"{shown_path(path)} is not a regular file (a FIFO, device or folder)")
            if st.st_size > MAX_HF_FILE_BYTES:
                raise WeightsError(
                    f"{shown_path(path)} has {st.st_size:,} bytes: expected at most {MAX_HF_FILE_BYTES:,}"
                )


def check_no_code(model_dir: Path, config: dict | None = None) -> None:
    """One WeightsError line if ``model_dir`` names Python code for transformers to import (``auto_map`` in
    one of ``CODE_MAPS``) or ships ``.py`` files; ``config``: config.json's object, already read."""
    where = f"model.path={shown_path(model_dir)!r} ships its own Python code"
    why = "peftlab never runs a model's code: expected a model of transformers' own classes"
    for name in CODE_MAPS:
        if name == "config.json" and config is not None:
            data = config
        elif (model_dir / name).exists() or (model_dir / name).is_symlink():
            data = read_json_object(model_dir / name)
        else:
            continue
        auto_map = data.get("auto_map")
        if auto_map is not None:
            first = next(iter(auto_map.values()), "") if isinstance(auto_map, dict) and auto_map else auto_map
            raise WeightsError(f"{where} ({name}: auto_map names {str(first)[:80]!r}): {why}")
    try:
        code = sorted(p.name for p in model_dir.glob("*.py"))
    except OSError:  # a directory that cannot be listed: transformers' own load says so
        code = []
    if code:
        raise WeightsError(f"{where} ({', '.join(code[:3])}{', ...' if len(code) > 3 else ''}): {why}")


def read_json_object(path: Path) -> dict:
    """The JSON object of an HF directory's file ``path``, a regular file of at most ``MAX_JSON_BYTES``
    (a tokenizer's config lists its added tokens: more than config.json's 1 MiB), else one line."""
    try:
        raw = read_regular_file(path, MAX_JSON_BYTES + 1)
    except (OSError, ValueError) as err:
        raise WeightsError(f"{shown_path(path)} cannot be read ({one_line(err)[:200]})") from None
    if raw is None:
        raise WeightsError(f"{shown_path(path)} is not a regular file (a FIFO, device or folder): expected a JSON file")
    if len(raw) > MAX_JSON_BYTES:
        raise WeightsError(f"{shown_path(path)} has more than {MAX_JSON_BYTES:,} bytes: expected a JSON file")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise WeightsError(f"{shown_path(path)} is not valid JSON ({str(err)[:200]})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{shown_path(path)} holds a {type(data).__name__}: expected a JSON object")
    return data


def check_hf_config(model_dir: str | Path) -> dict:
    """``read_hf_config``, its sizes within the bounds of ``model.*`` and consistent, those of a CLIP
    config's ``vision_config`` (and ``text_config``) too; the config."""
    config = read_hf_config(model_dir)
    where = f"{shown_path(Path(model_dir) / 'config.json')}: "
    check_sizes(config, where)
    for nested in ("vision_config", "text_config"):
        part = config.get(nested)
        if part is not None:
            check_field(isinstance(part, dict), where + nested, type(part).__name__, "a JSON object")
            check_sizes(part, f"{where}{nested}.")
    return config


def check_sizes(config: dict, where: str) -> None:
    for key, (most, bound) in SIZE_KEYS.items():
        value = config.get(key, 1)
        check_field(
            isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= most,
            where + key,
            value,
            f"an integer in [1, {most}], as {bound}",
        )
    if "num_channels" in config:
        check_field(
            config["num_channels"] in (1, 3) and not isinstance(config["num_channels"], bool),
            where + "num_channels",
            config["num_channels"],
            "1 or 3, as model.in_chans",
        )
    for whole, part in (("hidden_size", "num_attention_heads"), ("n_embd", "n_head"), ("image_size", "patch_size")):
        if whole in config and part in config:
            check_field(
                config[whole] % config[part] == 0, where + part, config[part], f"a divisor of {whole}={config[whole]}"
            )


def pad_token(config: dict) -> int:
    """The padding token id of an HF text config: its own, else its (first) end-of-sequence token, else 0."""
    for key in ("pad_token_id", "eos_token_id"):
        value = config.get(key)
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def is_decoder(config: dict) -> bool:
    """Whether an HF text config is a decoder (GPT-2, Llama, ...): transformers builds it as a causal LM and
    not as a masked LM. An encoder (BERT, RoBERTa) or BART joins a sentence pair with its tokenizer's own
    template ([SEP], </s></s>); a decoder's tokenizer joins it with nothing between. The rule a run id uses
    (``peftlab.config.pair_joins``)."""
    from peftlab.config.pair_joins import decoder_type

    return decoder_type(config.get("model_type"))


def load_tokenizer(path: str | Path, pad_id: int):
    """The tokenizer saved in the HF model directory ``path``, padding on the right with the model's
    ``pad_id`` (a decoder's classifier reads the last token that is not ``pad_id``: another padding id
    would make it read a padding token)."""
    from transformers import AutoTokenizer

    quiet_transformers()
    path = Path(path)
    check_no_code(path)  # tokenizer_config.json's auto_map: transformers would ask to run its code
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise WeightsError(
            f"model.path={str(path)!r} holds no tokenizer (expected tokenizer.json or the vocabulary files "
            "of transformers' save_pretrained): text data is tokenized with the model's own tokenizer"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except Exception as err:
        raise WeightsError(f"model.path={str(path)!r}: its tokenizer does not load ({one_line(err)[:200]})") from None
    if tokenizer.pad_token_id is None:  # GPT-2's and Llama's tokenizers have none: pad with the model's id
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    if tokenizer.pad_token_id != pad_id:
        raise WeightsError(
            f"model.path={str(path)!r}: the tokenizer pads with token {tokenizer.pad_token_id} and the model "
            f"with {pad_id} (config.json pad_token_id): expected the same id"
        )
    tokenizer.padding_side = "right"
    return tokenizer
