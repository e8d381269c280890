"""Text splits as token tensors, made once with the model's own tokenizer.

    tokenizer = load_tokenizer(cfg.model.path, pad_id)      # the directory's tokenizer, padding as the model pads
    bundle = build_text_data(cfg.data, tokenizer, vocab_size)  # items: (int64 2 x L: ids and mask, label)

An item stacks the token ids and the attention mask, right-padded to ``data.max_length``, so that
every part of the recipe that moves a batch of (inputs, labels) moves text as it moves images;
``HFTextLogits`` splits them again. With ``data.padding: longest`` a batch is cut to its longest
example (right padding: the columns after it are padding only). Texts longer than
``data.max_length`` are cut by the tokenizer (pairs longest first) and counted in the data notes;
with ``data.truncation: false`` the first one is an error naming it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.utils.data import Dataset

from peftlab.errors import ConfigError, DataError, WeightsError
from peftlab.files import one_line

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")


class TokenDataset(Dataset):
    """A tokenized split: items are (int64 2 x L, int label), row 0 the token ids, row 1 the mask."""

    def __init__(self, tokens: torch.Tensor, labels: torch.Tensor, trim: bool):
        self.tokens = tokens  # int64 N x 2 x max_length, right-padded
        self.labels = labels  # int64 N
        self.trim = trim  # data.padding longest: a batch is cut to its longest example

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.tokens[index], int(self.labels[index])

    def load_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(int64 B x 2 x L, int64 B): L the longest example's length with ``trim``, else max_length."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        tokens = self.tokens[indices]
        if self.trim and len(indices):
            tokens = tokens[:, :, : max(1, int(tokens[:, 1].sum(1).max()))]
        return tokens, self.labels[indices]

    def transform(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens  # nothing to normalize: BatchLoader's step after load_batch


def load_tokenizer(path: str | Path, pad_id: int):
    """The tokenizer saved in the HF model directory ``path``, padding on the right with the model's
    ``pad_id`` (a decoder's classifier reads the last token that is not ``pad_id``: another padding id
    would make it read a padding token)."""
    from transformers import AutoTokenizer

    from peftlab.libraries import quiet_transformers

    quiet_transformers()
    path = Path(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise WeightsError(
            f"model.path={str(path)!r} holds no tokenizer (expected tokenizer.json or the vocabulary files "
            "of transformers' save_pretrained): text data is tokenized with the model's own tokenizer"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
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


def tokenize(samples, tokenizer, cfg, split: str, vocab_size: int) -> tuple[TokenDataset, int]:
    """``samples`` (TextSamples: texts as 1- or 2-tuples, labels) as a TokenDataset; how many were cut."""
    columns = list(zip(*samples.texts)) if len(samples) else [[]]
    first, second = list(columns[0]), (list(columns[1]) if len(columns) > 1 else None)
    lengths = [len(ids) for ids in tokenizer(first, second, truncation=False, padding=False)["input_ids"]]
    cut = [i for i, n in enumerate(lengths) if n > cfg.max_length]
    if cut and not cfg.truncation:
        raise DataError(
            f"data.truncation=false: {split} example {cut[0]} has {lengths[cut[0]]} tokens, more than "
            f"data.max_length={cfg.max_length} ({len(cut)} such examples in {split})"
        )
    encoded = tokenizer(
        first,
        second,
        truncation="longest_first" if cut else False,
        max_length=cfg.max_length,
        padding="max_length",
        return_tensors="pt",
    )
    ids, mask = encoded["input_ids"].long(), encoded["attention_mask"].long()
    if len(samples) and int(ids.max()) >= vocab_size:
        raise DataError(
            f"{split}: the tokenizer gave token id {int(ids.max())}, outside the model's vocabulary of "
            f"{vocab_size}: expected the tokenizer saved with the model"
        )
    tokens = torch.stack([ids, mask], dim=1) if len(samples) else torch.zeros(0, 2, cfg.max_length, dtype=torch.long)
    labels = torch.as_tensor(samples.labels, dtype=torch.long)
    return TokenDataset(tokens, labels, trim=cfg.padding == "longest"), len(cut)


def position_limit(config: dict) -> int | None:
    """The most tokens an HF text model's learned position embeddings take (None: rotary, no table).
    RoBERTa counts its positions from ``pad_token_id + 1``."""
    if config.get("model_type") == "gpt2":
        return config.get("n_positions")
    if config.get("model_type") in ("bert", "roberta"):
        offset = config.get("pad_token_id", 1) + 1 if config.get("model_type") == "roberta" else 0
        return config.get("max_position_embeddings", 512) - offset
    return None


def build_text_data(cfg, tokenizer, config: dict, virtual_tokens: int = 0):
    """The DataBundle of a text dataset: its splits read (``peftlab.data.text``) and tokenized for the
    model of HF config ``config`` (config.json's values); ``virtual_tokens``: positions a prompt-learning
    method (``method.num_virtual_tokens``) takes before the text."""
    from peftlab.data.build import DataBundle
    from peftlab.data.text import load_text_splits

    limit = min(x for x in (position_limit(config), tokenizer.model_max_length) if x is not None)
    if cfg.max_length > limit - virtual_tokens:
        shared = f", less method.num_virtual_tokens={virtual_tokens}" if virtual_tokens else ""
        raise ConfigError(
            f"data.max_length={cfg.max_length} is more than the model's {limit} positions{shared}: "
            f"expected <= {limit - virtual_tokens}"
        )
    splits, info = load_text_splits(cfg)
    datasets, notes = {}, []
    for split, samples in splits.items():
        datasets[split], cut = tokenize(samples, tokenizer, cfg, split, config["vocab_size"])
        if cut:
            notes.append(f"{split}: {cut} of {len(samples)} examples cut to data.max_length={cfg.max_length} tokens")
    info = dataclasses.replace(info, notes=[*info.notes, *notes])
    return DataBundle(datasets["train"], datasets["val"], datasets["test"], info)
