"""One run on several processes: ``torchrun --nproc_per_node N -m peftlab.cli train CONFIG``.

torchrun (PyTorch's own launcher, no extra package) starts N copies of ``peftlab train`` with
RANK, WORLD_SIZE and LOCAL_RANK in their environment. Each process trains the same model on
its shard of every micro-batch, and DistributedDataParallel averages the gradients, so a step
is the one-process step at the same global batch (``train.batch_size``) up to the order of
floating-point reductions. Only rank 0 writes files (the run directory's lock, logs,
checkpoints, result.json); every rank resumes from the same checkpoint. accelerate would add
a dependency and a launcher config for what torchrun and torch.distributed already do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


SINGLE = Group()


def from_environment() -> Group:
    """The process group torchrun describes in the environment (one process when it does not)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    return Group(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def start(group: Group, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on CPU); returns this rank's device."""
    if not group.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", rank=group.rank, world_size=group.world_size
        )
    return device


def stop(group: Group) -> None:
    if group.active and dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: torch.Tensor, group: Group) -> torch.Tensor:
    """This rank's contiguous part of a micro-batch's indices (the first ranks take one more
    when the batch does not divide)."""
    return indices.tensor_split(group.world_size)[group.rank] if group.active else indices


def data_parallel(model: torch.nn.Module, group: Group, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel under torchrun (the model itself otherwise).
    The wrapper is used for the training forward only; evaluation, hooks and checkpoints use the
    model, whose parameters it shares."""
    if not group.active:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def first_over_ranks(first: torch.Tensor, group: Group) -> torch.Tensor:
    """The earliest step any rank marked (-1: none did), the same on every rank."""
    if not group.active:
        return first
    never = torch.iinfo(torch.long).max
    value = torch.where(first < 0, torch.full_like(first, never), first)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return torch.where(value == never, torch.full_like(value, -1), value)


def mean_over_ranks(value: torch.Tensor, group: Group) -> torch.Tensor:
    if group.active:
        value = value.clone()
        dist.all_reduce(value)
        value /= group.world_size
    return value
