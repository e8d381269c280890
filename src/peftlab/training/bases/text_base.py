"""A pretrained text base for offline studies: a small causal LM trained from scratch on a corpus.

``pretrain_text(cfg, out_dir)`` (``peftlab.training.bases.pretrain`` calls it for a config of
``model.source: hf-text``):

1. a byte-level BPE tokenizer is trained on the corpus's training texts (``data.root``, a
   ``data.name: text`` folder such as ``peftlab data fortunes-corpus`` writes) to the vocabulary size of
   the architecture's config.json (``model.path``: a directory holding config.json alone);
2. config.json and the tokenizer are written to ``out_dir/init``, and the one recipe trains that random
   model in ``out_dir/run`` (method full, ``model.task: causal-lm``);
3. the trained model and its tokenizer are saved as an HF model directory in ``out_dir``
   (model.safetensors in transformers' own layout, GPT-2's Conv1D included), which a downstream
   config names as its ``model.path``.

The tokenizer's one special token, ``<|endoftext|>`` (id 0), begins, ends and pads a text, as GPT-2's
does. Training the tokenizer is deterministic: the same corpus gives the same tokenizer.json.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from peftlab.config.schema import RunConfig
from peftlab.utils.errors import ConfigError
from peftlab.utils.files import write_atomic

END_OF_TEXT = "<|endoftext|>"


def check_text_base(cfg: RunConfig) -> dict:
    """The architecture's config.json (``model.path``), checked: a causal LM whose special tokens are
    ``END_OF_TEXT``'s id 0 and whose directory holds no weights or tokenizer of its own."""
    from peftlab.models.hf_config import check_hf_config

    if cfg.model.task != "causal-lm":
        raise ConfigError(f"model.task={cfg.model.task!r}: a text base is pretrained as a causal-lm")
    if cfg.model.pretrained != "none":
        raise ConfigError(
            f"model.pretrained={cfg.model.pretrained!r}: a text base is trained from scratch from the config.json "
            "of model.path: expected 'none'"
        )
    config = check_hf_config(cfg.model.path)
    for key in ("bos_token_id", "eos_token_id"):
        if config.get(key) != 0:
            raise ConfigError(
                f"{Path(cfg.model.path) / 'config.json'}: {key}={config.get(key)!r}: expected 0, the id the "
                f"tokenizer trained for it gives {END_OF_TEXT}"
            )
    return config


def train_tokenizer(texts: list[str], vocab_size: int, max_length: int):
    """A byte-level BPE tokenizer of ``vocab_size`` tokens trained on ``texts``, as transformers wraps one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        model_max_length=max_length,
    )


def pretrain_text(cfg: RunConfig, out_dir: Path, progress: bool, execution: dict | None = None) -> dict:
    """Train the text base of ``cfg`` into ``out_dir`` (locked by the caller); its manifest's fields."""
    from peftlab.data.text.tasks import load_text_splits
    from peftlab.training.export import load_trained, save_hf_model
    from peftlab.training.run import train

    config = check_text_base(cfg)
    init = out_dir / "init"
    splits, _ = load_text_splits(cfg.data, language_model=True)
    positions = config.get("n_positions") or config.get("max_position_embeddings")
    tokenizer = train_tokenizer([item[0] for item in splits["train"].texts], config["vocab_size"], positions)
    if len(tokenizer) != config["vocab_size"]:
        raise ConfigError(
            f"{Path(cfg.model.path) / 'config.json'}: vocab_size={config['vocab_size']}, but the corpus gives a "
            f"tokenizer of {len(tokenizer)} tokens: expected a vocabulary the corpus fills"
        )
    shutil.rmtree(init, ignore_errors=True)
    init.mkdir(parents=True)
    shutil.copyfile(Path(cfg.model.path) / "config.json", init / "config.json")
    tokenizer.save_pretrained(init)
    run_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=str(init.resolve())))
    result = train(run_cfg, out_dir / "run", progress=progress, execution=execution)
    if result["status"] != "completed":
        return {"result": result}
    model = load_trained(out_dir / "run").model
    staging = out_dir / "saved"
    shutil.rmtree(staging, ignore_errors=True)
    save_hf_model(model, staging)
    tokenizer.save_pretrained(staging)
    for name in sorted(p.name for p in staging.iterdir()):  # the weights last: their presence says complete
        if name != "model.safetensors":
            write_atomic(out_dir / name, lambda tmp, name=name: shutil.copyfile(staging / name, tmp))
    write_atomic(out_dir / "model.safetensors", lambda tmp: shutil.copyfile(staging / "model.safetensors", tmp))
    shutil.rmtree(staging)
    vocabulary = json.loads((out_dir / "tokenizer.json").read_text())["model"]["vocab"]
    return {"result": result, "vocabulary": len(vocabulary)}
