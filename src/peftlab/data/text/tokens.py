"""Text splits as token tensors, made once with the model's own tokenizer.

    tokenizer = load_tokenizer(hf_model_dir(cfg.model), pad_id)  # peftlab.models.hf_config: the model's own
    bundle = build_text_data(cfg.data, tokenizer, config)  # items: (int64 2 x L: ids and mask, label)

An item stacks the token ids and the attention mask, right-padded to ``data.max_length``, so that
every part of the recipe that moves a batch of (inputs, labels) moves text as it moves images;
``HFTextLogits`` splits them again. With ``data.padding: longest`` a batch is cut to its longest
example (right padding: the columns after it are padding only). Texts longer than
``data.max_length`` are cut by the tokenizer (pairs longest first) and counted in the data notes;
with ``data.truncation: false`` the first one is an error naming it.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import Dataset

from peftlab.data.text.pairs import decoder_pairs, pair_join
from peftlab.utils.errors import ConfigError, DataError

# a text is cut to data.max_length x this many characters before it is tokenized: more than any token of
# a BPE, WordPiece or SentencePiece vocabulary holds (a word a WordPiece tokenizer cannot split, and maps
# to its unknown token, may hold more)
CHARS_PER_TOKEN = 64


class TokenDataset(Dataset):
    """A tokenized split: items are (int64 2 x L, label), row 0 the token ids, row 1 the mask; the label
    an int (a classifier's), or a causal LM's targets, int64 L - 1: token t + 1 where position t is
    trained on, -100 elsewhere (prompt, padding)."""

    def __init__(self, tokens: torch.Tensor, labels: torch.Tensor, trim: bool):
        self.tokens = tokens  # int64 N x 2 x max_length, right-padded
        self.labels = labels  # int64 N, or N x (max_length - 1) targets
        self.trim = trim  # data.padding longest: a batch is cut to its longest example
        self.lengths = tokens[:, 1].sum(-1)  # int64 N: each example's tokens, padding left out

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        label = self.labels[index]
        return self.tokens[index], int(label) if label.dim() == 0 else label

    def load_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(int64 B x 2 x L, int64 B or B x L - 1): L the longest example's length with ``trim``, else
        max_length."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        tokens, labels = self.tokens[indices], self.labels[indices]
        if self.trim and len(indices):
            width = max(2, int(tokens[:, 1].sum(1).max()))
            tokens = tokens[:, :, :width]
            labels = labels[:, : width - 1] if labels.dim() == 2 else labels
        return tokens, labels

    def transform(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens  # nothing to normalize: BatchLoader's step after load_batch


def tokens_in(dataset, batches) -> int:
    """The tokens (padding left out) of a text split's examples in ``batches`` (index tensors); 0 for images."""
    lengths = getattr(dataset, "lengths", None)
    return sum(int(lengths[indices].sum()) for indices in batches) if lengths is not None else 0


def max_chars(cfg) -> int:
    """The characters of a text kept before it is tokenized: a text is cut to data.max_length tokens anyway,
    and tokenizing a 10 MB line whole cost 0.9 GB."""
    return cfg.max_length * CHARS_PER_TOKEN


def cut_texts(texts: list[str], cfg, split: str, first_index: int = 0) -> tuple[list[str], set[int]]:
    """``texts`` cut to `max_chars` characters, and the indices of those cut; with data.truncation=false a
    text that long is an error naming its example."""
    limit, cut = max_chars(cfg), set()
    for i, text in enumerate(texts):
        if len(text) > limit:
            if not cfg.truncation:
                raise DataError(
                    f"data.truncation=false: {split} example {first_index + i} has {len(text):,} characters, more "
                    f"than data.max_length={cfg.max_length} x {CHARS_PER_TOKEN} (texts are cut to that many "
                    "characters before they are tokenized)"
                )
            cut.add(i)
    return [text[:limit] for text in texts] if cut else texts, cut


def tokenize(samples, tokenizer, cfg, split: str, vocab_size: int, separator=None) -> tuple[TokenDataset, int]:
    """``samples`` (TextSamples: texts as 1- or 2-tuples, labels) as a TokenDataset; how many were cut.
    ``separator``: a decoder's pair separator's token ids (``pairs.pair_join``); None: the tokenizer's pair template."""
    if not len(samples):  # no val split (data.trainval): transformers' fast tokenizer fails on an empty list
        empty = torch.zeros(0, 2, cfg.max_length, dtype=torch.long)
        return TokenDataset(empty, torch.zeros(0, dtype=torch.long), trim=cfg.padding == "longest"), 0
    columns = list(zip(*samples.texts))
    first, cut_first = cut_texts(list(columns[0]), cfg, split)
    second, cut_second = cut_texts(list(columns[1]), cfg, split) if len(columns) > 1 else (None, set())
    if second is not None and separator is not None:
        rows, cut = decoder_pairs(first, second, separator, tokenizer, cfg, split)
        tokens = padded(rows, cfg.max_length, tokenizer.pad_token_id, split, vocab_size)
        labels = torch.as_tensor(samples.labels, dtype=torch.long)
        return TokenDataset(tokens, labels, trim=cfg.padding == "longest"), len({*cut, *cut_first, *cut_second})
    lengths = [len(ids) for ids in tokenizer(first, second, truncation=False, padding=False)["input_ids"]]
    cut = sorted({i for i, n in enumerate(lengths) if n > cfg.max_length} | cut_first | cut_second)
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
    if int(ids.max()) >= vocab_size:
        raise DataError(
            f"{split}: the tokenizer gave token id {int(ids.max())}, outside the model's vocabulary of "
            f"{vocab_size}: expected the tokenizer saved with the model"
        )
    tokens = torch.stack([ids, mask], dim=1)
    labels = torch.as_tensor(samples.labels, dtype=torch.long)
    return TokenDataset(tokens, labels, trim=cfg.padding == "longest"), len(cut)


def padded(rows: list[list[int]], width: int, pad_id: int, split: str, vocab_size: int) -> torch.Tensor:
    """Token id lists as int64 N x 2 x ``width``: the ids right-padded with ``pad_id``, and their mask."""
    tokens = torch.zeros(len(rows), 2, width, dtype=torch.long)
    tokens[:, 0] = pad_id
    for row, ids in enumerate(rows):
        tokens[row, 0, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        tokens[row, 1, : len(ids)] = 1
    if rows and int(tokens[:, 0].max()) >= vocab_size:
        raise DataError(
            f"{split}: the tokenizer gave token id {int(tokens[:, 0].max())}, outside the model's vocabulary of "
            f"{vocab_size}: expected the tokenizer saved with the model"
        )
    return tokens


# Stanford Alpaca's prompts (its train.py's PROMPT_DICT): the response follows "### Response:\n"
ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
IGNORED = -100  # F.cross_entropy's ignore_index: a position no loss is taken at


def prompt_and_response(item: tuple[str, ...], prompt_format: str = "alpaca") -> tuple[str, str]:
    """A language-model example as (prompt, response): an instruction (instruction, input, output) in
    Alpaca's template, or with ``prompt_format`` dialogue as DialoGPT's user turn (the instruction, and its input
    on the next line where there is one; `tokenize_for_lm` puts the end-of-sequence token after it); a plain
    text (text,) with no prompt."""
    if len(item) == 3 and prompt_format == "dialogue":
        instruction, context, output = item
        return (f"{instruction}\n{context}" if context.strip() else instruction), output
    if len(item) == 3:
        instruction, context, output = item
        template = ALPACA_PROMPT if context.strip() else ALPACA_PROMPT_NO_INPUT
        return template.format(instruction=instruction, input=context), output
    return "", item[0]


def tokenize_for_lm(samples, tokenizer, cfg, split: str, vocab_size: int) -> tuple[TokenDataset, int, int]:
    """``samples`` as a causal LM's TokenDataset: prompt + response + end of sequence, the loss on the
    response and the end only; (dataset, examples cut, examples dropped: their prompt alone fills
    data.max_length, so nothing of the response is left to learn). With data.prompt_format dialogue the
    prompt is DialoGPT's turn and the tokenizer's end-of-sequence token: turn EOS reply EOS."""
    eos = tokenizer.eos_token_id
    turn_end = [eos] if cfg.prompt_format == "dialogue" else []
    if turn_end and eos is None:
        raise DataError("data.prompt_format=dialogue: the tokenizer has no end-of-sequence token to end a turn with")
    rows, cut, dropped = [], 0, 0
    for index, item in enumerate(samples.texts):
        texts = list(prompt_and_response(item, cfg.prompt_format))
        (prompt, response), cut_chars = cut_texts(texts, cfg, split, index)
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and tokenizer.bos_token_id != eos else []
        prompt_ids = bos + (tokenizer(prompt, add_special_tokens=False)["input_ids"] + turn_end if prompt else [])
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
        ids = prompt_ids + response_ids
        if len(ids) > cfg.max_length or cut_chars:
            if not cfg.truncation:
                raise DataError(
                    f"data.truncation=false: {split} example {index} has {len(ids)} tokens, more than "
                    f"data.max_length={cfg.max_length}"
                )
            cut += 1
            ids = ids[: cfg.max_length]
        if len(ids) - 1 <= max(len(prompt_ids) - 1, 0):  # no response token to predict after the cut
            dropped += 1
            continue
        rows.append((ids, len(prompt_ids)))
    tokens = padded([ids for ids, _ in rows], cfg.max_length, tokenizer.pad_token_id, split, vocab_size)
    targets = torch.full((len(rows), cfg.max_length - 1), IGNORED, dtype=torch.long)
    for row, (ids, start) in enumerate(rows):
        # position t predicts token t + 1: the targets are the response's tokens (a plain text's first token
        # has no position before it)
        first = max(start - 1, 0)
        targets[row, first : len(ids) - 1] = torch.tensor(ids[first + 1 :])
    return TokenDataset(tokens, targets, trim=cfg.padding == "longest"), cut, dropped


def position_limit(config: dict) -> int | None:
    """The most tokens an HF text model's learned position embeddings take (None: rotary, no table).
    RoBERTa counts its positions from ``pad_token_id + 1``."""
    if config.get("model_type") == "gpt2":
        return config.get("n_positions")
    if config.get("model_type") in ("bert", "roberta"):
        offset = config.get("pad_token_id", 1) + 1 if config.get("model_type") == "roberta" else 0
        return config.get("max_position_embeddings", 512) - offset
    return None


def build_text_data(
    cfg, tokenizer, config: dict, language_model: bool = False, virtual_tokens: int = 0, decoder: bool = False
):
    """The DataBundle of a text dataset: its splits read (``peftlab.data.text.tasks``) and tokenized for the
    model of HF config ``config`` (config.json's values); for a causal LM with ``language_model``;
    ``virtual_tokens``: positions a prompt-learning method (``method.num_virtual_tokens``) takes before
    the text; ``decoder`` (``peftlab.models.hf_config.is_decoder``): a sentence pair is joined by
    data.pair_separator (``pairs``), not by the tokenizer's pair template. The info's ``pair_join`` says how."""
    from peftlab.data.build import DataBundle
    from peftlab.data.text.tasks import load_text_splits

    limit = min(x for x in (position_limit(config), tokenizer.model_max_length) if x is not None)
    if cfg.max_length > limit - virtual_tokens:
        shared = f", less method.num_virtual_tokens={virtual_tokens}" if virtual_tokens else ""
        raise ConfigError(
            f"data.max_length={cfg.max_length} is more than the model's {limit} positions{shared}: "
            f"expected <= {limit - virtual_tokens}"
        )
    splits, info = load_text_splits(cfg, language_model)
    separator, joined = None, None
    if not language_model and len(splits["train"].texts[0]) == 2:
        separator, joined = pair_join(tokenizer, cfg, decoder)
    datasets, notes = {}, []
    for split, samples in splits.items():
        dropped = 0
        if language_model:
            datasets[split], cut, dropped = tokenize_for_lm(samples, tokenizer, cfg, split, config["vocab_size"])
        else:
            datasets[split], cut = tokenize(samples, tokenizer, cfg, split, config["vocab_size"], separator)
        if cut:
            notes.append(f"{split}: {cut} of {len(samples)} examples cut to data.max_length={cfg.max_length} tokens")
        if dropped:
            notes.append(f"{split}: {dropped} examples left out: their prompt fills data.max_length={cfg.max_length}")
    if language_model and (not len(datasets["train"]) or not len(datasets["test"])):
        raise DataError(f"{info.name}: no train or test example keeps a response token within data.max_length")
    sizes = {split: len(dataset) for split, dataset in datasets.items()}
    info = dataclasses.replace(info, notes=[*info.notes, *notes], split_sizes=sizes, pair_join=joined)
    return DataBundle(datasets["train"], datasets["val"], datasets["test"], info)
