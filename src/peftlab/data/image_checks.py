"""Every image file of a dataset checked before the first step, from its header and its structure,
without decoding pixels where the format allows it, so a bad file costs seconds, not a run.

    image_header(path)                      # ("PNG", "32x32"), or one DataError line naming the file
    checked_headers(paths, headers_file(key))   # each file once; later only those whose stat changed

`image_header` is the one check: PIL knows the format, the size is within `MAX_IMAGE_PIXELS` (the
bound `datasets.load_image` enforces when it decodes), and the file is complete. Folder datasets
(ImageFolder, TinyImageNet) and listed ones (filelist, VTAB-1k, FGVC, with their manifests) go
through it. The results are cached in ``$PEFTLAB_DATA_CACHE/image-headers``, one file per folder or
list, keyed by each file's size, modification and change times.
"""

import hashlib
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from peftlab.data.opening import check_data_file, open_data_file
from peftlab.data.sources import data_cache, writable_cache_dir
from peftlab.utils.errors import DataError
from peftlab.utils.files import one_line, read_json, write_json_atomic

# The most pixels one image file may declare. PIL's own bound (Image.MAX_IMAGE_PIXELS, 89 Mpx) only
# warns, and refuses at twice that: images that take 2.7 GB to decode and resize would get through.
MAX_IMAGE_PIXELS = 4096 * 4096
HEADERS_FORMAT = 1
JPEG_END = b"\xff\xd9"  # the end-of-image marker, the last two bytes of a complete JPEG
# what PIL raises on a file it cannot parse or decode (UnidentifiedImageError is an OSError)
UNREADABLE = (OSError, SyntaxError, ValueError)


def check_pixels(path, width: int, height: int) -> None:
    """A DataError when ``width`` x ``height`` is more than `MAX_IMAGE_PIXELS`."""
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{path}: {width} x {height} pixels, more than MAX_IMAGE_PIXELS ({MAX_IMAGE_PIXELS:,}; "
            "a decompression bomb?): expected an image of at most 4096 x 4096"
        )


def bomb_error(path) -> DataError:
    """What PIL's DecompressionBombError means, which it raises (without the size) above twice its bound."""
    return DataError(
        f"{path}: more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, PIL refuses to open it (a "
        f"decompression bomb?): expected an image of at most 4096 x 4096"
    )


def unreadable(err: Exception) -> str:
    """Why PIL cannot read a file, in one line: a file of no format it knows says so (PIL's own message names only
    an ``<_io.BufferedReader name=3>``), a damaged one gives PIL's reason."""
    if isinstance(err, Image.UnidentifiedImageError):
        return "no image format PIL knows (PNG, JPEG, BMP, GIF, TIFF, WebP, ...)"
    return one_line(err)[:200]


def image_header(path: Path) -> tuple[str, str]:
    """(format, "WxH") of a complete image file within `MAX_IMAGE_PIXELS`; else one DataError line."""
    try:
        with open_data_file(path) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning: check_pixels replaces it
            with Image.open(f) as image:
                image_format, (width, height) = str(image.format), image.size
                check_pixels(path, width, height)
                check_complete(path, image, f)
    except Image.DecompressionBombError:
        raise bomb_error(path) from None
    except UNREADABLE as err:
        raise DataError(f"{path} is not an image PIL can read: {unreadable(err)}") from None
    return image_format, f"{width}x{height}"


def check_complete(path: Path, image: Image.Image, f) -> None:
    """A DataError when the opened file is cut short or corrupt, found as cheaply as its format allows.

    PNG: `verify` walks the chunks and checks their CRCs without inflating a pixel (a cut file misses
    its IEND or a CRC). JPEG: PIL's `verify` checks nothing, and decoding costs 10-20 times reading the
    header (1-2 ms at 500 x 375 px); a complete file ends with its end-of-image marker, a cut one (a
    download or copy that stopped) does not, and fails the decoder even one byte short. A JPEG without
    the marker at its end (cut, or with bytes after it, which decodes) is decoded, to let the decoder
    decide. Damage inside a JPEG that keeps its marker is found by decoding only (`peftlab data info
    --check`). Other formats (GIF, BMP, TIFF, WebP, PPM: rare in datasets) have no cheap check in PIL:
    decoded, within the pixel bound checked first.
    """
    try:
        if image.format == "PNG":
            image.verify()
            return
        if image.format in ("JPEG", "MPO"):
            f.seek(-len(JPEG_END), os.SEEK_END)
            if f.read(len(JPEG_END)) == JPEG_END:
                return
        image.load()
    except UNREADABLE as err:
        raise DataError(
            f"{path}: a truncated or corrupt {image.format} file ({one_line(err)[:200]}): expected a complete image"
        ) from None


def headers_file(*key: object) -> Path:
    """The cache of the checked headers of one folder or list (``key``: its path and what else picks its files)."""
    digest = hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()[:32]
    return data_cache() / "image-headers" / f"{digest}.json"


def file_stamp(path: str) -> str:
    """Size, modification and change time: a rewritten file changes its change time even when a tool
    puts its size and modification time back."""
    check_data_file(Path(path))
    st = os.stat(path)
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


def checked_headers(paths: Iterable[str], cache: Path) -> list[tuple[str, str]]:
    """(format, "WxH") of each of ``paths``, in order, each checked by `image_header` unless ``cache``
    holds it for the file's current stamp; the cache then holds ``paths``, and only them."""
    stored = read_json(cache) or {}
    known = stored.get("files") if stored.get("format") == HEADERS_FORMAT else None
    known = known if isinstance(known, dict) else {}
    entries, headers = {}, []
    for path in map(str, paths):
        stamp = file_stamp(path)
        entry = known.get(path)  # "size mtime ctime FORMAT WxH"
        if not (isinstance(entry, str) and entry.startswith(f"{stamp} ") and entry.count(" ") == 4):
            entry = " ".join((stamp, *image_header(Path(path))))
        entries[path] = entry
        image_format, size = entry.rsplit(" ", 2)[1:]
        headers.append((image_format, size))
    if entries != known:
        store_headers(cache, entries)
    return headers


def store_headers(cache: Path, entries: dict[str, str]) -> None:
    try:
        writable_cache_dir(cache.parent)  # marks a data cache it creates as peftlab's
        write_json_atomic(cache, {"format": HEADERS_FORMAT, "files": entries})
    except (OSError, DataError):
        pass  # a cache that cannot be written costs the next run a new check, not this run its data
