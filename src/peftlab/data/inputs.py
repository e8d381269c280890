"""What a model reads, as the data path produces it, and the one call that builds a run's splits for it.

    spec = model_inputs(cfg.model, cfg.data.max_length)    # peftlab.models: InputSpec, or TextSpec with its tokenizer
    bundle = build_splits(cfg.data, spec, device)           # images resized and normalised, or token ids

``peftlab.models`` fills these in (the model's image size, channels and normalisation; a text model's
config.json and tokenizer); the data path needs nothing else of the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class InputSpec:
    """What the data pipeline must produce for an image model."""

    img_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """One input's shape: C x S x S."""
        return (self.in_chans, self.img_size, self.img_size)


@dataclass(frozen=True)
class TextSpec:
    """What the data pipeline must produce for a text model (``peftlab.data.text.tokens``): token ids and
    their attention mask, stacked."""

    config: dict  # the model's config.json: vocabulary, padding id, positions
    max_length: int  # data.max_length
    tokenizer: Any = dataclasses.field(default=None, compare=False, repr=False)  # the model's own, for the splits
    language_model: bool = False  # a causal LM (model.task causal-lm): its targets are the next tokens
    decoder: bool = False  # GPT-2, Llama (models.hf_config.is_decoder): a pair gets data.pair_separator

    @property
    def shape(self) -> tuple[int, ...]:
        """One input's shape: 2 x max_length (ids, mask)."""
        return (2, self.max_length)


def build_splits(cfg, spec: InputSpec | TextSpec, device=None, virtual_tokens: int = 0):
    """The DataBundle of ``cfg`` (``cfg.data``) as the model of ``spec`` reads it: token ids made with its
    tokenizer, or images at its size, channels and normalisation. ``virtual_tokens``: the positions a
    prompt-learning method takes before the text."""
    if isinstance(spec, TextSpec):
        from peftlab.data.text.tokens import build_text_data

        return build_text_data(cfg, spec.tokenizer, spec.config, spec.language_model, virtual_tokens, spec.decoder)
    from peftlab.data.build import build_data

    return build_data(cfg, img_size=spec.img_size, in_chans=spec.in_chans, mean=spec.mean, std=spec.std, device=device)
