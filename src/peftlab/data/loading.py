"""Batches on the device: index batches of a split -> (float images, int64 labels), in order.

In-memory splits (`ArrayDataset`) index a whole batch at once in the main process. File splits
(`FileDataset`) go through a torch DataLoader: `num_workers` processes (0: the main process)
decode and resize the images, with a deeper prefetch on a GPU (CUDA or Apple's MPS), pinned memory
on CUDA only and workers that persist across epochs. Either way the uint8 batch is moved to the
device and the main process applies the transform there (augmentation, normalisation): every
random draw comes from torch's global RNG in the main process, so batches depend on the seed and
the order only, never on the number of workers or on the device. Any other map-style dataset of
(image tensor, label) items is taken as it is, item by item.

    loader = BatchLoader(data.train, device, num_workers=4, persistent=True)
    for images, labels in loader(index_batches):     # index_batches: a list of index tensors
        ...
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader

from peftlab.data.datasets import FileDataset
from peftlab.utils.cpu import RUNS_AT_ONCE_ENV

GPU_PREFETCH_FACTOR = 4  # batches each worker keeps ready on a GPU (torch's default is 2)
MAX_AUTO_WORKERS = 8
GPUS = ("cuda", "mps")  # devices that compute the step while the CPU cores would otherwise idle


def default_num_workers(device: torch.device) -> int:
    """Decoding processes when ``data.num_workers`` is null: none on CPU, where the training threads
    already use every core; on a GPU (CUDA or MPS) this run's share of the usable cores less one for the
    main process, at most 8. The share is the cores over ``$PEFTLAB_RUNS_AT_ONCE`` (a study's local workers;
    unset: 1): on an H200's 16-core host a 4-worker study took 0.56 of its wall with 3 decoding workers a run
    against 8 (benchmarks/gpu-check-h200/loader-study). On macOS the workers start by spawning (a fresh
    interpreter each, once: they persist)."""
    if device.type not in GPUS:
        return 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    runs = os.environ.get(RUNS_AT_ONCE_ENV, "1")
    share = usable // max(1, int(runs)) if runs.isdigit() else usable
    return max(0, min(MAX_AUTO_WORKERS, share - 1))


@contextlib.contextmanager
def one_thread():
    """torch with one intra-op thread inside (as in DataLoader workers): decoding resizes one image at
    a time, which gains nothing from more threads and, on a busy machine, loses several times over."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def decoded_in_this_process(loader: DataLoader) -> Iterator:
    """The batches of a DataLoader without workers, each decoded with one thread."""
    batches = iter(loader)
    while True:
        with one_thread():
            batch = next(batches, None)
        if batch is None:
            return
        yield batch


class IndexBatches:
    """A DataLoader batch sampler whose batches are set before each pass (so one DataLoader, and its
    persistent workers, serves every epoch)."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class BatchLoader:
    """Index batches of ``dataset`` -> (float B x C x S x S, int64 B) on ``device``, in the order given."""

    def __init__(self, dataset, device: torch.device, num_workers: int | None = 0, persistent: bool = False):
        self.dataset, self.device = dataset, device
        self.num_workers = default_num_workers(device) if num_workers is None else num_workers
        self.loader = None
        if isinstance(dataset, FileDataset):
            gpu = device.type in GPUS
            self.index_batches = IndexBatches()
            self.loader = DataLoader(
                dataset.decoded,
                batch_sampler=self.index_batches,
                num_workers=self.num_workers,
                pin_memory=device.type == "cuda",  # MPS shares the host's memory: nothing to pin
                prefetch_factor=GPU_PREFETCH_FACTOR if gpu and self.num_workers else None,
                persistent_workers=persistent and self.num_workers > 0,
                generator=torch.Generator(),
            )  # its seed draw leaves torch's global RNG alone

    def __len__(self) -> int:
        return len(self.dataset)

    def __call__(self, index_batches: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not hasattr(self.dataset, "load_batch"):  # any other dataset of (image tensor, label): items as they are
            for indices in index_batches:
                items = [self.dataset[i] for i in torch.as_tensor(indices).tolist()]
                images = torch.stack([x for x, _ in items])
                labels = torch.as_tensor([int(y) for _, y in items], dtype=torch.long)
                yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            return
        if self.loader is None:
            uint8_batches = (self.dataset.load_batch(indices) for indices in index_batches)
        else:
            self.index_batches.batches = [torch.as_tensor(b).tolist() for b in index_batches]
            uint8_batches = iter(self.loader) if self.num_workers else decoded_in_this_process(self.loader)
        for images, labels in uint8_batches:
            images = images.to(self.device, non_blocking=True)
            yield self.dataset.transform(images), labels.to(self.device, non_blocking=True)
