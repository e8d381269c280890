"""The protocol card of a run: how its inputs were made, how it trained, which split did what.

Benchmarks such as VTAB-1k are run under protocols that differ in exactly these places
(resolution and interpolation, normalization, augmentation, schedule, label smoothing, whether
the head is counted, which split selected the hyper-parameters), so every result.json states
them in one record (``protocol``) and the report prints them as a card. Torch-free: the
analysis reads the record, the recipe writes it.
"""

from __future__ import annotations


def protocol_card(
    cfg,
    split_sources: dict[str, str],
    img_size: int | None,
    mean,
    std,
    counts: dict,
    steps: int | None = None,
    epochs_bound: bool = True,
    pair_join: str | None = None,
) -> dict:
    """The record of one run: ``cfg`` its RunConfig, ``split_sources`` the data info's, ``counts`` its
    final parameter counts (trainable with and without the head); ``img_size`` None for a text model,
    whose inputs are its tokens (``tokens``). Its length is what ran: ``steps`` the optimizer steps taken,
    ``epochs`` only where train.epochs bounded the run; where train.max_steps stopped it first, ``epochs``
    is None and ``max_steps`` names the bound (a preset's 100 epochs that never ran are not recorded).
    ``pair_join``: how a sentence pair's two texts were joined (the data info's; None for single texts)."""
    data, train = cfg.data, cfg.train
    head = counts.get("head")
    text = img_size is None
    if text:
        inputs = {
            "resolution": None,
            "interpolation": None,
            "normalization": None,
            "tokens": f"at most {data.max_length} per example, the model's tokenizer; padding {data.padding}; "
            + ("longer examples cut" if data.truncation else "no example cut"),
            "pair_join": pair_join,
        }
    else:
        inputs = {
            "resolution": img_size,
            "interpolation": f"{data.interpolation}, antialiased",
            "normalization": {
                "model": f"the model's: mean {format_values(mean)}, std {format_values(std)}",
                "imagenet": "ImageNet's: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)",
                "none": "none: pixels in [0, 1]",
            }[data.normalize],
            "tokens": None,
            "pair_join": None,
        }
    return {
        **inputs,
        "augmentation": "random crop and horizontal flip" if data.augment and not text else "none",
        "epochs": train.epochs if epochs_bound else None,
        "max_steps": None if epochs_bound else train.max_steps,
        "steps": steps,
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


# ---------------------------------------------------------------------------------------
# presets: the settings of published VTAB-1k protocols, chosen by the config key ``protocol``

# V-PETL Bench turns on RandAugment, flips and label smoothing 0.1 for these tasks (configs/model_*/vtab/*.yaml)
VPETL_AUGMENTED = (
    "clevr_count",
    "diabetic_retinopathy",
    "dmlab",
    "dtd",
    "eurosat",
    "kitti",
    "oxford_flowers102",
    "oxford_iiit_pet",
    "patch_camelyon",
    "resisc45",
    "sun397",
    "svhn",
)
SHARED = {
    "model.drop_path_rate": 0.1,
    "data.augment": False,
    "train.epochs": 100,
    "train.warmup_ratio": 0.1,
    "train.batch_size": 64,
    "train.grad_accum": 1,
    "train.clip_grad": None,
    "train.head_lr": None,
    "train.head_weight_decay": None,
}
PRESETS = {
    # OSU-MLB/PETL_Vision at 245d2628: experiment/config/default_vtab_processed.yml, vtab_processed.py
    "petl_vision": {**SHARED, "data.interpolation": "bicubic", "data.normalize": "none", "train.label_smoothing": 0.0},
    # synbol/Parameter-Efficient-Transfer-Learning-Benchmark at c188fad: ImageClassification/dataloader/vtab.py
    "vpetl_bench": {**SHARED, "data.interpolation": "bilinear", "data.normalize": "imagenet"},
}
# what peftlab does not reproduce of each protocol (the protocol card lists them)
PRESET_DIFFERENCES = {
    "petl_vision": [
        "its cosine schedule (timm CosineLRScheduler) is stepped once per epoch, warms up from 1e-6 and ends at "
        "1e-5; peftlab's is stepped per optimizer step and ends at 0",
        "it drops the last partial batch (15 steps an epoch on 1,000 images); peftlab keeps it",
        "it tunes lr x weight decay on a grid of {1e-3, 1e-2} x {1e-4, 1e-3} with one seed (42) and reports one "
        "run; peftlab's study sets its own search and seeds",
    ],
    "vpetl_bench": [
        "it uses RandAugment (rand-m9-mstd0.5-inc1) and horizontal flips on 12 of the 19 tasks; peftlab has no "
        "RandAugment and trains those tasks without augmentation",
        "it hard-codes lr and weight decay per task and reports the best test accuracy over epochs (selection on "
        "test); peftlab tunes on val200 and reports the last epoch",
        "its cosine schedule is stepped once per epoch (lr_min 1e-5, warm-up from 1e-6); peftlab's per step, to 0",
    ],
}


def preset_values(name: str, dataset: str | None) -> dict:
    """The dotted settings protocol ``name`` fixes for a run on ``dataset`` (its data.name)."""
    values = dict(PRESETS[name])
    if name == "vpetl_bench":
        task = dataset.removeprefix("vtab1k/") if isinstance(dataset, str) else ""  # a wrong type: data.name refuses it
        values["train.label_smoothing"] = 0.1 if task in VPETL_AUGMENTED else 0.0
    return values
