"""The data figure: images/s of the data path alone / images/s of a training step, interleaved."""

from __future__ import annotations

from pathlib import Path

import torch

from peftlab.bench.common import Trainer, make_cfg, spread
from peftlab.config.schema import load_config
from peftlab.data.synthetic import write_jpeg_folder, write_vtab_lists
from peftlab.models.backbones import input_spec_for
from peftlab.training import metrics
from peftlab.training.step import epoch_batches

DATA_PATH_MODEL = "deit_tiny_patch16_224"


def write_images(directory: Path, n_images: int, layout: str) -> dict:
    """The data path's ``n_images`` JPEGs written to ``directory`` (``write_jpeg_folder``), and the data
    section that reads them: an ImageFolder with augmentation, or with ``layout`` vtab1k VTAB-1k's lists
    over the same JPEGs (``write_vtab_lists``: filelist, train800val200.txt, no augmentation, bicubic)."""
    write_jpeg_folder(directory, n_images)
    source = {"name": "imagefolder", "val_fraction": 0.0, "augment": True}
    if layout == "vtab1k":
        write_vtab_lists(directory)
        source = {
            "name": "filelist",
            "train_list": "train800.txt",
            "val_list": "val200.txt",
            "test_list": "test.txt",
            "trainval_list": "train800val200.txt",
            "trainval": True,
            "interpolation": "bicubic",
        }
    return source


def build_image_data(tmp: str, source: dict, num_workers: int | None, cache: bool, spec, device: torch.device):
    """(data config, built data) of the JPEGs in ``tmp``/jpegs, read as a run reads them for a model with
    input ``spec``."""
    from peftlab.data import build_data

    data_cfg = load_config(
        overrides={"data": {**source, "root": f"{tmp}/jpegs", "num_workers": num_workers, "cache": cache}}
    ).data
    data = build_data(
        data_cfg,
        img_size=spec.img_size,
        in_chans=spec.in_chans,
        mean=spec.mean,
        std=spec.std,
        device=device,
        cache_dir=Path(tmp) / "cache",
    )  # the decoded copy goes with the JPEGs
    return data_cfg, data


def data_path(
    batch: int,
    repeats: int,
    num_workers: int | None,
    device: torch.device,
    n_images: int = 512,
    model: str = DATA_PATH_MODEL,
    cache: bool = False,
    progress=print,
    layout: str = "imagefolder",
) -> dict:
    """Images/s of the data path alone / images/s of a training step of ``model`` (LoRA r=8), interleaved.

    The data path: an ImageFolder of ``n_images`` 256 px JPEGs written to a temporary folder, read
    as a run reads it (decode, resize to the model's input, augment, normalise, on ``device``),
    one epoch per repetition through the recipe's own ``BatchLoader`` with persistent workers.
    With ``cache`` the images are decoded once beforehand (``data.cache``, kept in the temporary
    folder) and the figure times the memory-mapped path later epochs and runs take. With ``layout``
    vtab1k the same JPEGs are read through VTAB-1k's lists (``data.name: filelist``, train800val200.txt,
    no augmentation, bicubic): the path of a VTAB-1k task's final run.
    """
    import tempfile

    from peftlab.data.loading import BatchLoader

    cfg = make_cfg(model, None, "lora")
    spec = input_spec_for(cfg.model)
    with tempfile.TemporaryDirectory(prefix="peftlab-bench-data-") as tmp:
        progress(f"data: writing {n_images} JPEGs of 256 px")
        source = write_images(Path(tmp) / "jpegs", n_images, layout)
        data_cfg, data = build_image_data(tmp, source, num_workers, cache, spec, device)
        loader = BatchLoader(data.train, device, num_workers, persistent=True)
        epochs = iter(range(10**6))

        def data_epoch(loader: BatchLoader = loader) -> None:
            for _ in loader(epoch_batches(len(data.train), batch, 0, next(epochs))):
                pass

        images = torch.randn(batch, 3, spec.img_size, spec.img_size)
        trainer = Trainer(cfg, images, torch.arange(batch) % 10, "fp32", device=device)
        progress(f"data: {len(data.train)} images per epoch / {model} steps (interleaved)")
        times = metrics.time_interleaved({"data_epoch": data_epoch, "step": trainer.step}, repeats, device)
        workers = loader.num_workers
        del data_epoch, loader  # the loader's workers end here
    data_ips = [len(data.train) / t for t in times["data_epoch"]]
    step_ips = [batch / t for t in times["step"]]
    ratio = spread([d / s for d, s in zip(data_ips, step_ips)])
    return {
        "model": model,
        "img_size": spec.img_size,
        "batch": batch,
        "images": len(data.train),
        "jpeg_size": 256,
        "augment": data_cfg.augment,
        "layout": layout,
        "cache": cache,
        "device": str(device),
        "num_workers": workers,
        "num_workers_config": num_workers,
        "data_images_per_second": spread(data_ips),
        "step_images_per_second": spread(step_ips),
        "ratio": ratio,
        "target": 2.0,
        "meets_target": ratio["median"] >= 2.0,
    }
