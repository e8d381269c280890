"""The protocol card of a run: how its inputs were made, how it trained, which split did what.

Benchmarks such as VTAB-1k are run under protocols that differ in exactly these places
(resolution and interpolation, normalization, augmentation, schedule, label smoothing, whether
the head is counted, which split selected the hyper-parameters), so every result.json states
them in one record (``protocol``) and the report prints them as a card. Torch-free: the
analysis reads the record, the recipe writes it.
"""

from __future__ import annotations


def protocol_card(cfg, split_sources: dict[str, str], img_size: int, mean, std, counts: dict) -> dict:
    """The record of one run: ``cfg`` its RunConfig, ``split_sources`` the data info's, ``counts`` its
    final parameter counts (trainable with and without the head)."""
    data, train = cfg.data, cfg.train
    normalization = (f"mean {format_values(mean)}, std {format_values(std)}" if data.normalize
                     else "none: pixels in [0, 1]")
    head = counts.get("head")
    return {
        "resolution": img_size,
        "interpolation": f"{data.interpolation}, antialiased",
        "normalization": normalization,
        "augmentation": "random crop and horizontal flip" if data.augment else "none",
        "epochs": train.epochs,
        "warmup": f"{train.warmup_ratio:g} of the steps, linear",
        "schedule": "cosine decay to 0",
        "batch_size": train.batch_size * train.grad_accum,
        "optimizer": f"AdamW, weight decay {train.weight_decay:g}",
        "lr": train.lr,
        "drop_path": cfg.model.drop_path_rate,
        "label_smoothing": train.label_smoothing,
        "clip_grad": train.clip_grad,
        "trainable_with_head": counts.get("trainable"),
        "trainable_without_head": None if head is None else counts["trainable"] - head,
        "train_split": split_sources.get("train"),
        "selection_split": split_sources.get("val"),
        "test_split": split_sources.get("test") if train.test else None,
        "seed": cfg.seed,
    }


def format_values(values) -> str:
    return "(" + ", ".join(f"{float(v):.3g}" for v in values) + ")"
