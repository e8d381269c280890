"""Where a small run's seconds go on a GPU machine: what a fork costs before and after the process holds a CUDA
context, what a DataLoader's first batch costs with and without workers and pinned memory, and a real
`peftlab train` run of gpu-check's small LoRA with data.num_workers 0, 2 and null (the default: the usable cores
less one, at most 8) and with data.cache. gpu-check's runs took 24 s each on one H200 where their steps take
0.1 s; this probe says which part is the machine's and which is peftlab's.

    python benchmarks/cuda_loader_probe.py OUT.json [--device cuda] [--study]

--study adds the question the H200's figures left open (benchmarks/README.md, "The GPU path on one H200"): in
gpu-check's 4-worker study each run's training took 9 s where a lone run's took 2, with 8 decoding workers a run on
16 cores. It runs gpu-check-throughput's study (4 LoRA runs, 4 workers on the one GPU) with data.num_workers null
(8 each), 3 (the cores shared out: 16 / 4 less the main process) and 0, twice each in rotating order, and records
each call's wall and its runs' training and validation seconds. About 5 minutes on one H200.

Each figure is wall seconds (time.perf_counter), each fork the mean of 5, each first batch the median of 3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset


class Images(Dataset):
    """64 random 3 x 32 x 32 uint8 images with labels: nothing to decode, only the loader's own cost."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int):
        return torch.zeros(3, 32, 32, dtype=torch.uint8) + i % 7, i % 4


def fork_seconds(times: int = 5) -> float:
    """The mean wall time of a fork whose child exits at once, the parent waiting for it."""
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        spent.append(time.perf_counter() - start)
    return statistics.mean(spent)


def first_batch_seconds(workers: int, pin: bool, device: str) -> float:
    """The median wall time from a fresh DataLoader iterator to its first batch on the device."""
    spent = []
    for _ in range(3):
        start = time.perf_counter()
        loader = DataLoader(Images(), batch_size=64, num_workers=workers, pin_memory=pin)
        images, _ = next(iter(loader))
        images.to(device, non_blocking=True)
        if device == "cuda":
            torch.cuda.synchronize()
        spent.append(time.perf_counter() - start)
        del loader
    return statistics.median(spent)


def loader_figures(device: str) -> dict:
    figures = {"fork_before_cuda_s": fork_seconds()}
    if device == "cuda":
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
    figures["fork_after_cuda_s"] = fork_seconds()
    for workers in (0, 2, 8):
        for pin in (False, True) if device == "cuda" else (False,):
            figures[f"first_batch_workers{workers}_pin{int(pin)}_s"] = first_batch_seconds(workers, pin, device)
    return figures


RUN = """name: probe
model: {{name: vit_tiny_patch16_224, img_size: 32, patch_size: 8, depth: 2, embed_dim: 64, num_heads: 2}}
data: {{name: imagefolder, root: {root}, val_fraction: 0.25, num_workers: {workers}, cache: {cache}}}
method: {{name: lora, r: 4}}
train: {{epochs: 3, batch_size: 32, eval_batch_size: 64, lr: 3.0e-3, device: {device}, threads: 2}}
"""


def run_figures(device: str, work: Path) -> list[dict]:
    """gpu-check's LoRA run through `peftlab train`, one setting of the loader at a time."""
    from peftlab.data.synthetic import write_jpeg_folder

    write_jpeg_folder(work / "images", n_train=256, size=32, classes=4, n_test=64, class_colour=0.15)
    rows = []
    for workers, cache in (("null", "false"), (0, "false"), (2, "false"), ("null", "true")):
        name = f"workers-{workers}-cache-{cache}"
        config = work / f"{name}.yaml"
        config.write_text(RUN.format(root=work / "images", workers=workers, cache=cache, device=device))
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "peftlab.cli", "train", str(config), "--run-dir", str(work / name), "--quiet"],
            capture_output=True,
            text=True,
            env={**os.environ, "PEFTLAB_DATA_CACHE": str(work / "cache")},
        )
        row = {"num_workers": workers, "cache": cache, "process_s": time.perf_counter() - start, "rc": done.returncode}
        result = work / name / "result.json"
        if result.is_file():
            timing = json.loads(result.read_text())["timing"]
            row.update({k: timing[k] for k in ("train_seconds", "val_seconds", "wall_seconds")})
        else:
            row["error"] = done.stderr[-600:]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


STUDY = """name: probe-study
base: base.yaml
seeds: 4
methods:
  lora: {}
"""


def study_figures(device: str, work: Path, repeats: int = 2) -> list[dict]:
    """gpu-check-throughput's 4-worker study with each decoding-worker count, ``repeats`` rounds in rotating order."""
    from peftlab.data.synthetic import write_jpeg_folder

    write_jpeg_folder(work / "images", n_train=256, size=32, classes=4, n_test=64, class_colour=0.15)
    counts = ["null", 3, 0]
    rows = []
    for round_ in range(repeats):
        for workers in counts[round_ % len(counts) :] + counts[: round_ % len(counts)]:
            folder = work / f"study-{workers}-{round_}"
            folder.mkdir()
            run = RUN.format(root=work / "images", workers=workers, cache="false", device=device)
            (folder / "base.yaml").write_text(run.replace("epochs: 3", "epochs: 2"))
            (folder / "study.yaml").write_text(STUDY)
            argv = ["study", str(folder / "study.yaml"), "--study-dir", str(folder / "out"), "--workers", "4"]
            if device == "cuda":
                argv += ["--runs-per-gpu", "4"]
            start = time.perf_counter()
            command = [sys.executable, "-m", "peftlab.cli", *argv, "--quiet"]
            done = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            row = {"num_workers": workers, "round": round_, "study_s": seconds, "rc": done.returncode}
            timings = [json.loads(p.read_text())["timing"] for p in (folder / "out").glob("runs/*/result.json")]
            for key in ("train_seconds", "val_seconds", "wall_seconds"):
                row[key] = sorted(timing[key] for timing in timings)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--study", action="store_true", help="also the 4-worker study with 8, 3 and 0 decoding workers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rows = run_figures(args.device, Path(work))  # first: each run is a process of its own
    studies = []
    if args.study:
        with tempfile.TemporaryDirectory() as work:
            studies = study_figures(args.device, Path(work))
    figures = loader_figures(args.device)
    print(json.dumps(figures, indent=1), flush=True)
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    report = {"device": args.device, "gpu": gpu, "torch": torch.__version__, "cpus": os.cpu_count()}
    figures = {**report, "loader": figures, "runs": rows}
    args.out.write_text(json.dumps({**figures, "studies": studies} if studies else figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
