"""Pure measurements: accuracy, parameter counts, memory and timing helpers."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch
from torch import nn


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, torch.Tensor]:
    """Number of samples whose label is among the top-k logits, for each k (k capped at #classes),
    as int64 tensors on the logits' device (nothing waits for the device)."""
    max_k = min(max(ks), logits.shape[-1])
    top = logits.topk(max_k, dim=-1).indices  # (N, max_k)
    hits = top.eq(labels.unsqueeze(-1))
    return {k: hits[:, : min(k, max_k)].any(dim=-1).sum() for k in ks}


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """``topk_hits`` as Python ints."""
    return {k: int(v) for k, v in topk_hits(logits, labels, ks).items()}


def confusion_scores(confusion: torch.Tensor) -> dict[str, float | None]:
    """GLUE's other two scores from a labels x predictions count matrix: ``f1``, the F1 of class 1 on a
    two-class task (MRPC's and QQP's; None with more classes), and ``matthews``, the Matthews correlation
    coefficient (CoLA's; the multi-class form, Gorodkin's R_K, which sklearn computes too; 0 when every
    label or every prediction is one class)."""
    return class_count_scores(confusion.sum(1), confusion.sum(0), confusion.diagonal())


def class_count_scores(labelled: torch.Tensor, predicted: torch.Tensor, hits: torch.Tensor) -> dict[str, float | None]:
    """`confusion_scores` from what they need of the matrix, per class: the items labelled with it, those
    predicted as it, and those both (the diagonal); memory in proportion to the classes, not their square."""
    t, p, diagonal = labelled.double(), predicted.double(), hits.double()
    f1 = None
    if len(t) == 2:
        f1 = float(2 * diagonal[1] / (p[1] + t[1])) if p[1] + t[1] > 0 else 0.0
    n, correct = t.sum(), diagonal.sum()
    denominator = ((n * n - (p * p).sum()) * (n * n - (t * t).sum())).sqrt()
    matthews = float((correct * n - (t * p).sum()) / denominator) if denominator > 0 else 0.0
    return {"f1": f1, "matthews": matthews}


def weights_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (each storage once)."""
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        key = tensor.data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes: ``ru_maxrss`` is bytes on macOS and
    KiB on Linux (and the BSDs)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PeakRSS:
    """Peak resident memory above a baseline taken when this object is made.

    On Linux the kernel's high-water mark is reset at the baseline (``/proc/self/clear_refs``),
    so the peak is that of the work after it, not of the imports or data loading before.
    Where that is not possible the lifetime peak (``ru_maxrss``) is used, an upper bound.
    """

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        """Take the baseline again, now, and start a new high-water mark from it."""
        self.resettable = self.reset_peak()
        self.baseline = self._status("VmRSS") or psutil.Process().memory_info().rss

    @staticmethod
    def reset_peak() -> bool:
        """Start a new high-water mark (the baseline stays); False where Linux does not allow it."""
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _status(field: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def now_above_baseline(self) -> int:
        """Resident memory now, above the baseline: what the process holds, freed-but-kept heap included."""
        now = self._status("VmRSS") or psutil.Process().memory_info().rss
        return max(0, now - self.baseline)

    def peak_above_baseline(self) -> int:
        peak = (self._status("VmHWM") if self.resettable else None) or peak_rss_bytes()
        return max(0, peak - self.baseline)


def trainable_state_bytes(trainable: list[torch.Tensor], optimizer: torch.optim.Optimizer) -> int:
    """Trainable weights + their gradients (same size) + the optimizer's state tensors."""
    weights = sum(p.numel() * p.element_size() for p in trainable)
    state = sum(
        t.numel() * t.element_size()
        for s in optimizer.state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor)
    )
    return 2 * weights + state


def cuda_max_allocated_bytes(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a timing must not end before the GPU does)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of ``n`` items in which every item runs first equally often and right after every
    other item equally often (a Williams design): row r is the sequence 0, 1, n-1, 2, n-2, ...
    shifted by r; for odd n the reversed rows are added. A plain rotation (A B C, B C A, ...)
    would keep every item right after the same neighbour, and any carry-over from that neighbour
    (caches, the allocator's state) would bias that item's time the same way in every repetition."""
    first = [0] + [(k + 1) // 2 if k % 2 else n - k // 2 for k in range(1, n)]
    rows = [[(i + r) % n for i in first] for r in range(n)]
    return rows + [row[::-1] for row in rows] if n % 2 else rows


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call for each function, measured in alternation so machine drift cancels.

    Repetition k runs the functions in ``balanced_orders(len(fns))[k % len(orders)]``: no
    function always runs first or right after the same neighbour.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    orders = balanced_orders(len(names))
    for rep in range(repeats):
        for index in orders[rep % len(orders)]:
            fn = fns[names[index]]
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[names[index]].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)
