"""The device checks: real ``peftlab train`` runs of a small ViT on one device, one per path whose
kernels depend on the device, each judged by what its own result.json records.

    python -m peftlab.training.device_check --device cuda OUT      # scripts/gpu-check.sh runs it on a GPU machine

The checks (``CHECKS``): LoRA in fp32, under bf16 autocast, under ``train.compile``, and launched by
torchrun as a one-process group; QLoRA on bitsandbytes' nf4 + double quant, fp4 and int8 bases. Each
trains a random ViT (2 blocks, width 64, 32 px) for one epoch on an ImageFolder of smooth random colour
fields this module writes (``peftlab.data.synthetic.write_jpeg_folder``: no download, nothing to carry), and
passes when the run completed, its test top-1 is a number, its merge check is within tolerance, its
provenance names the device, and the check's own record holds (bf16: ``dtype``; compile: ``compile.used``;
torchrun: ``world_size``; on CUDA: ``fused_adamw``). Nothing here measures accuracy: the images carry no
more than their class's colour.

OUT/device-check.json holds the device, torch's, CUDA's and bitsandbytes' versions, the GPU's name and
one row per check (its facts, or the last lines of stderr of a run that failed). The exit code is 1
when a check failed, 2 for a device that is not here. The tests run the same checks on the CPU, so the
harness is exercised where CI runs; the CUDA kernels are exercised only where a GPU is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from peftlab.utils.files import read_json
from peftlab.utils.programs import ProgramTimeout, run_program

CHECKS = {
    "lora-fp32": {"train": {"precision": "fp32"}},  # auto is bf16 on a GPU: fp32 named, or it never runs there
    "lora-bf16": {"train": {"precision": "bf16"}},
    "lora-compiled": {"train": {"compile": True}},
    "lora-torchrun": {},  # the same run under torchrun, one process
    "qlora-nf4-dq": {"quant": {"mode": "nf4", "double_quant": True}},
    "qlora-fp4": {"quant": {"mode": "fp4"}},
    "qlora-int8": {"quant": {"mode": "int8"}},
}
MODEL = {"name": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}
RUN_SECONDS = 900  # one run, compile included, on a loaded CPU; a GPU takes seconds


def base_config(device: str, data_root: Path) -> dict:
    """The run every check changes: LoRA r=4 on a random small ViT, one epoch of 128 images."""
    return {
        "name": "device-check",
        "model": dict(MODEL),
        "data": {"name": "imagefolder", "root": str(data_root), "val_fraction": 0.25},
        "method": {"name": "lora", "r": 4},
        "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 32, "lr": 3e-3, "device": device, "threads": 1},
    }


def command(name: str, config: Path, run_dir: Path) -> list[str]:
    """``peftlab train`` for the check, under torchrun for ``lora-torchrun``."""
    train = ["-m", "peftlab.cli", "train", str(config), "--run-dir", str(run_dir), "--quiet"]
    if name == "lora-torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", *train]
    return [sys.executable, *train]


def judge(name: str, device: str, result: dict) -> list[str]:
    """What is wrong with a check's result.json (nothing: the check passed)."""
    problems = []
    if result.get("status") != "completed":
        return [f"status {result.get('status')!r}: {result.get('error')}"]
    top1 = result.get("metrics", {}).get("test_top1")
    if not isinstance(top1, float) or not math.isfinite(top1):
        problems.append(f"test_top1 is {top1!r}")
    merge = result.get("merge") or {}
    if not merge.get("ok"):
        problems.append(f"merge check: {merge}")
    provenance = result.get("provenance", {})
    hardware = provenance.get("hardware", {})
    if not str(hardware.get("device", "")).startswith(device):
        problems.append(f"ran on {hardware.get('device')!r}, not {device}")
    wanted = {
        "lora-fp32": ("dtype", "fp32", provenance.get("dtype")),
        "lora-bf16": ("dtype", "bf16", provenance.get("dtype")),
        "lora-compiled": ("compile.used", True, (provenance.get("compile") or {}).get("used")),
        "lora-torchrun": ("world_size", 1, provenance.get("world_size")),
    }
    if device.startswith("cuda"):
        wanted["fused"] = ("fused_adamw", True, provenance.get("fused_adamw"))
    for key in (name, "fused"):
        if key in wanted and wanted[key][2] != wanted[key][1]:
            problems.append(f"provenance {wanted[key][0]} is {wanted[key][2]!r}, expected {wanted[key][1]!r}")
    return problems


def facts(result: dict) -> dict:
    """A completed check's numbers and records, as device-check.json keeps them."""
    provenance = result.get("provenance", {})
    return {
        "test_top1": result.get("metrics", {}).get("test_top1"),
        "merge_max_abs_diff": (result.get("merge") or {}).get("max_abs_diff"),
        "merge_tf32": (result.get("merge") or {}).get("tf32"),  # false: the check compared in full fp32
        "dtype": provenance.get("dtype"),
        "fused_adamw": provenance.get("fused_adamw"),
        "compile_used": (provenance.get("compile") or {}).get("used"),
        "world_size": provenance.get("world_size"),
        "quantized": (result.get("config", {}).get("quant") or {}).get("mode"),
    }


def run_check(name: str, device: str, data_root: Path, work: Path) -> dict:
    """One check: its config written, its run trained in a subprocess, its result judged."""
    from peftlab.config.reading import deep_merge
    from peftlab.config.schema import dump_config, load_config

    config = work / f"{name}.yaml"
    config.write_text(dump_config(load_config(overrides=deep_merge(base_config(device, data_root), CHECKS[name]))))
    run_dir = work / name
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")])),
    }
    try:
        proc = run_program(command(name, config, run_dir), seconds=RUN_SECONDS, fix="see its run folder", env=env)
    except ProgramTimeout as err:
        return {"check": name, "passed": False, "problems": [str(err)]}
    result = read_json(run_dir / "result.json")  # opened once: absent or corrupt is None
    if proc.returncode != 0 or result is None:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        return {"check": name, "passed": False, "problems": [f"exit {proc.returncode}: {tail}"]}
    problems = judge(name, device, result)
    return {"check": name, "passed": not problems, "problems": problems, **facts(result)}


def environment(device: str) -> dict:
    """The versions and the GPU the checks ran with."""
    import torch

    info = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0]}
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        info["bitsandbytes"] = None
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(torch.device(device))))
    return info


def default_jobs(device: str, checks: int) -> int:
    """All the checks at once on a GPU (each a small ViT: a few hundred MiB of its memory, one CPU core),
    one at a time on a CPU, where each run's threads would compete."""
    return max(1, min(checks, os.cpu_count() or 1)) if device.startswith("cuda") else 1


def device_available(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available()
    return device == "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m peftlab.training.device_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("out", help="folder for device-check.json")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--only", nargs="+", choices=sorted(CHECKS), help="these checks alone")
    parser.add_argument("--work", help="keep the images and every check's run directory here (default: deleted)")
    parser.add_argument("--jobs", type=int, help="checks run at once (default: all of them on a GPU, one on a CPU)")
    options = parser.parse_args(argv)
    if not device_available(options.device):
        print(f"device_check: error: --device {options.device}: no such device here", file=sys.stderr)
        return 2
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peftlab-device-check-") as tmp:
        names = options.only or list(CHECKS)
        jobs = options.jobs or default_jobs(options.device, len(names))
        rows = run_checks(names, options.device, Path(options.work or tmp), jobs)
    report = {**environment(options.device), "checks": rows}
    (out / "device-check.json").write_text(json.dumps(report, indent=2) + "\n")
    passed = sum(row["passed"] for row in rows)
    where = report.get("gpu", options.device)
    print(f"{passed} of {len(rows)} checks passed on {where}; {out / 'device-check.json'}")
    return 0 if passed == len(rows) else 1


def run_checks(names: list[str], device: str, work: Path, jobs: int = 1) -> list[dict]:
    """The checks, ``jobs`` processes at a time, each printed as it ends; the images are written into
    ``work`` first. Each is a fresh process whose start (imports, CUDA's context, bitsandbytes) costs
    more than its training: on a GPU machine they run side by side (``default_jobs``)."""
    from peftlab.data.synthetic import write_jpeg_folder

    data_root = work / "images"
    if not data_root.is_dir():
        write_jpeg_folder(data_root, n_train=128, size=32, classes=4, n_test=32)

    def one(name: str) -> dict:
        row = run_check(name, device, data_root, work)
        print(f"{name}: {'passed' if row['passed'] else 'FAILED: ' + '; '.join(row['problems'])}", flush=True)
        return row

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, names))


if __name__ == "__main__":
    sys.exit(main())
