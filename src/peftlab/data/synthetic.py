"""Synthetic image folders, written offline: JPEGs that compress and decode like photographs, for the bench's
data path (``peftlab.bench.data``), the device check (``peftlab.training.device_check``) and the tests.
"""

from __future__ import annotations

from pathlib import Path


def write_jpeg_folder(
    directory: Path,
    n_train: int,
    size: int = 256,
    classes: int = 8,
    n_test: int = 16,
    seed: int = 0,
    class_colour: float = 0.0,
) -> None:
    """An ImageFolder (train/<class>/, test/<class>/) of size x size RGB JPEGs (quality 90): smooth
    random colour fields with pixel noise, which compress and decode like photographs do. Their class
    is in no pixel, unless ``class_colour`` (0 to 1) mixes that much of a colour of the class's own (one
    of ``classes`` hues around the colour wheel) into every field: then a model can learn it."""
    import colorsys

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    hues = [np.array(colorsys.hsv_to_rgb(c / classes, 0.9, 0.9)) * 255 for c in range(classes)]
    for split, count in (("train", n_train), ("test", n_test)):
        for i in range(count):
            folder = directory / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            colours = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            if class_colour:
                colours = ((1 - class_colour) * colours + class_colour * hues[i % classes]).astype(np.uint8)
            field = Image.fromarray(colours).resize((size, size), Image.BICUBIC)
            pixels = np.asarray(field, dtype=np.int16) + rng.integers(-16, 17, (size, size, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)


def write_vtab_lists(directory: Path) -> None:
    """VTAB-1k's four lists over an ImageFolder written by ``write_jpeg_folder``: its training images
    as train800 (the first 80%) and val200, test as test.txt (``relative/path label`` lines)."""
    train = sorted((directory / "train").glob("*/*.jpg"))
    test = sorted((directory / "test").glob("*/*.jpg"))

    def lines(paths) -> str:
        return "".join(
            f"{p.relative_to(directory).as_posix()} {int(p.parent.name.removeprefix('class'))}\n" for p in paths
        )

    cut = int(0.8 * len(train))
    (directory / "train800.txt").write_text(lines(train[:cut]))
    (directory / "val200.txt").write_text(lines(train[cut:]))
    (directory / "train800val200.txt").write_text(lines(train))
    (directory / "test.txt").write_text(lines(test))
