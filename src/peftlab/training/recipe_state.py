"""What the recipe's stages hand each other: ``Setting`` (``start``: where and how the run computes),
``Data`` (``load_data``), ``Built`` (``build``: the model and its tuner), and ``RunState``, what
``peftlab.training.run.train`` keeps across the recipe's attempts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from peftlab.config.schema import RunConfig
from peftlab.config.sections import TrainConfig
from peftlab.data import DataBundle
from peftlab.data.inputs import InputSpec, TextSpec
from peftlab.data.loading import BatchLoader
from peftlab.training import distributed, metrics, tracking


@dataclass
class RunState:
    """What ``train`` keeps across the recipe's attempts (``train.auto_batch`` retries), and what a
    failed run's result reports."""

    started: float = field(default_factory=time.perf_counter)
    resume_dir: Path | None = None  # a torchrun replica resumes from rank 0's checkpoint
    split: int = 1  # the pieces each micro-batch is computed in (train.auto_batch)
    auto_batch: dict | None = None  # train.auto_batch: the halvings after out-of-memory errors
    log: tracking.RunLog | None = None
    step: int | None = None  # the last step trained in this process
    # the run's earlier processes' whole time: the wall_seconds of the checkpoint this process first restored (a
    # train.auto_batch retry restores one of its own); None until then
    earlier_wall_seconds: float | None = None
    params: dict | None = None
    provenance: dict | None = None
    execution: dict | None = None  # which executor, job and node train it (run_result.Execution)


@dataclass
class Setting:
    """Where and how the run computes (``start``)."""

    cfg: RunConfig
    tc: TrainConfig  # cfg.train, its precision made concrete ('auto' resolved)
    run_dir: Path
    device: torch.device
    ranks: distributed.Group
    log: tracking.RunLog  # metrics.jsonl, monitors.jsonl and cfg.track's sinks
    progress: bool
    row: int  # the progress bar's line (a study draws several)


@dataclass
class Data:
    """The splits, their loaders and the steps they make (``load_data``)."""

    splits: DataBundle  # train, val, test and their info
    train_loader: BatchLoader
    val_loader: BatchLoader
    spec: InputSpec | TextSpec  # what the backbone reads: image size, channels, normalization; or tokens
    num_classes: int
    total_steps: int
    batches_per_epoch: int


@dataclass
class Built:
    """The model and its tuner (``build``), with what the result reports of their making."""

    model: torch.nn.Module
    tuner: object
    counts: dict  # parameter counts before training
    rss: metrics.PeakRSS
    rss_build: int  # peak RSS of building the model, above the baseline
    memory_estimate: dict  # peftlab.training.preflight, before the first step
