"""Which GPU each local worker gets, and how many GPUs a remote run asks for.

The local executor spreads its workers over the GPUs this process sees: worker slot ``p`` (1, 2, ...)
gets the ``(p - 1) % n``-th of the ``n`` visible GPUs, so ``--workers 8`` on 4 GPUs puts two runs on each,
and ``--runs-per-gpu N`` caps how many share one (``worker_gpus``). A worker is given its GPU as
``CUDA_VISIBLE_DEVICES`` before torch initialises CUDA in it (``use_gpu``), so its run's ``cuda`` is that
GPU and nothing else; the run records the value in its provenance (``hardware.cuda_visible_devices``).

The visible GPUs are read without initialising CUDA here (a forkserver's children could not use CUDA
after it): ``CUDA_VISIBLE_DEVICES`` where it is set, else ``nvidia-smi -L``; none where neither says,
and then workers are left as they are.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil

from peftlab.utils.errors import UserError

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
# an entry CUDA accepts: an index, a GPU's or MIG instance's UUID (CUDA ignores everything from the first other)
ENTRY = re.compile(r"\d+|GPU-[0-9A-Za-z-]+|MIG-[0-9A-Za-z/-]+")
NVIDIA_SMI_SECONDS = 30.0


def visible_gpus() -> list[str]:
    """The GPUs a worker can be given, each as one ``CUDA_VISIBLE_DEVICES`` entry (CUDA is not initialised)."""
    text = os.environ.get(VISIBLE_ENV)
    if text is not None:
        return parse_visible(text)
    return nvidia_smi_gpus()


def parse_visible(text: str) -> list[str]:
    """``CUDA_VISIBLE_DEVICES``'s entries as CUDA reads them: up to the first that is not an index or a UUID
    (``""`` and ``-1`` hide every GPU)."""
    entries = []
    for entry in text.split(","):
        entry = entry.strip()
        if not ENTRY.fullmatch(entry):
            break
        entries.append(entry)
    return entries


def nvidia_smi_gpus() -> list[str]:
    """The GPUs ``nvidia-smi -L`` lists (their indices; MIG instances by UUID); none where it is absent or fails."""
    from peftlab.utils.programs import run_program

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = run_program(["nvidia-smi", "-L"], seconds=NVIDIA_SMI_SECONDS, fix="check the NVIDIA driver")
    except (OSError, UserError):
        return []
    if listed.returncode != 0:
        return []
    migs = re.findall(r"^\s+MIG .*\(UUID: (MIG-[^)]+)\)", listed.stdout, re.M)
    return migs or re.findall(r"^GPU (\d+):", listed.stdout, re.M)


def worker_gpus(workers: int, runs_per_gpu: int | None = None, gpus: list[str] | None = None) -> list[str | None]:
    """The GPU of each worker slot (slot ``p`` at index ``p - 1``): the visible GPUs in turn, ``None`` for every
    slot where none is visible. ``runs_per_gpu`` refuses more workers than the GPUs hold at that count."""
    gpus = visible_gpus() if gpus is None else gpus
    if runs_per_gpu is not None:
        if not gpus:
            env = os.environ.get(VISIBLE_ENV)
            why = f"is {env!r}" if env is not None else "is unset, nvidia-smi lists none"
            raise UserError(f"--runs-per-gpu={runs_per_gpu} needs visible GPUs: none here ({VISIBLE_ENV} {why})")
        if workers > runs_per_gpu * len(gpus):
            raise UserError(
                f"--workers={workers} is more than --runs-per-gpu={runs_per_gpu} on the {len(gpus)} visible "
                f"GPU{'s' if len(gpus) > 1 else ''} hold: expected at most {runs_per_gpu * len(gpus)}"
            )
    if not gpus:
        return [None] * workers
    return [gpus[slot % len(gpus)] for slot in range(workers)]


def default_workers(runs_per_gpu: int | None) -> int:
    """``--workers`` where it is not given: ``--runs-per-gpu`` on every visible GPU, else 1."""
    if runs_per_gpu is None:
        return 1
    gpus = visible_gpus()
    return runs_per_gpu * len(gpus) if gpus else 1  # none: worker_gpus says so


def use_gpu(gpu: str | None) -> None:
    """Give this worker process ``gpu`` (a ``CUDA_VISIBLE_DEVICES`` entry), before torch initialises CUDA in it;
    nothing for ``None``. A process whose CUDA is already up cannot change GPUs: that is a bug, said loudly."""
    import sys

    if gpu is None:
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError(f"CUDA was initialised before this worker was given GPU {gpu}")
    os.environ[VISIBLE_ENV] = gpu


def asks_for_gpu(device: str) -> bool:
    """Whether a run's ``train.device`` needs a GPU (``auto`` takes one where the job finds one: it asks for none)."""
    return device == "cuda" or device.startswith("cuda:")


def with_gpu_requests(options, devices: list[str]):
    """``options`` with ``--slurm-gpus`` / ``--ray-gpus`` of 1 where they are not given and a run's
    ``train.device`` is cuda; refused in one line where they are given as 0 for such a run."""
    flag, field = {"submitit": ("--slurm-gpus", "slurm_gpus"), "ray": ("--ray-gpus", "ray_gpus")}.get(
        options.name, (None, None)
    )
    if field is None:
        return options
    cuda = next((device for device in devices if asks_for_gpu(device)), None)
    given = getattr(options, field)
    if given is None:
        return dataclasses.replace(options, **{field: 1 if cuda else 0})
    if given == 0 and cuda:
        raise UserError(f"{flag}=0 gives no GPU to runs whose train.device is {cuda}: expected {flag} >= 1 or none")
    return options
