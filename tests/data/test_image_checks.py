"""Bad images are found before the first step (issue 37): a text file named .png, a cut PNG, a PNG
declaring more pixels than the bound (a decompression bomb) and a cut JPEG are each one DataError line
naming the file, from the header check every image of a folder or listed dataset gets, cached by stat."""

import io
import json
import os
import struct
import zlib

import datafiles
import numpy as np
import pytest
import yaml
from datafiles import isolated_cache  # noqa: F401  (autouse: tests never see ~/.cache)
from PIL import Image
from testkit import TINY_MODEL, assert_one_line_refusal, cli_in_process, peak_rss, peak_rss_reset

from peftlab.config.schema import load_config
from peftlab.data import image_checks
from peftlab.data.build import describe_data
from peftlab.data.image_checks import MAX_IMAGE_PIXELS, image_header
from peftlab.utils.errors import DataError


def encoded(fmt: str, size: int = 8) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(out, fmt)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` with one tiny IDAT: its header alone, no pixels behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


# case -> (file name, its bytes, what the one line says)
BAD = {
    "text named .png": ("9.png", b"just some text\n", "is not an image PIL can read"),
    "cut PNG": ("9.png", encoded("PNG")[:-20], "a truncated or corrupt PNG file"),
    "20000x20000 PNG": ("9.png", png_header(20000, 20000), r"more than 178,956,970 pixels, PIL refuses"),
    "5000x5000 PNG": ("9.png", png_header(5000, 5000), r"5000 x 5000 pixels, more than MAX_IMAGE_PIXELS"),
    "cut JPEG": ("9.jpg", encoded("JPEG")[:-10], "a truncated or corrupt JPEG file"),
}


def refused(call, *args, match: str, naming) -> str:
    with pytest.raises(DataError, match=match) as err:
        call(*args)
    message = str(err.value)
    assert "\n" not in message and str(naming) in message, message
    return message


def image_folder(root):
    """root/train/<class>/ (4 images each) and root/test/<class>/ (2 each) of 8 x 8 PNGs."""
    for c, name in enumerate(("cat", "dog")):
        for i in range(4):
            datafiles.write_image(root / "train" / name / f"{i}.png", (90 * c, 40 * i, 7), size=8)
        for i in range(2):
            datafiles.write_image(root / "test" / name / f"{i}.png", (90 * c, 40 * i, 200), size=8)
    return root


def file_list(root):
    """The same images as a filelist: train.txt and test.txt, lines 'path label'."""
    image_folder(root)
    for split in ("train", "test"):
        lines = [f"{p.relative_to(root)} {int(p.parent.name == 'dog')}" for p in sorted((root / split).rglob("*.png"))]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def folder_cfg(root):
    return datafiles.make_cfg(name="imagefolder", root=str(root))


def list_cfg(root):
    return load_config(
        None, ["data.name=filelist", f"data.root={root}", "data.train_list=train.txt", "data.test_list=test.txt"]
    ).data


def add_bad(root, case, listed: bool):
    """The bad file of ``case`` in the test split (which today's code read only after training)."""
    name, data, _ = BAD[case]
    path = root / "test" / "dog" / name
    path.write_bytes(data)
    if listed:
        with open(root / "test.txt", "a") as f:
            f.write(f"test/dog/{name} 1\n")
    return path


@pytest.mark.parametrize("case", BAD)
def test_each_bad_image_is_one_line_naming_it(tmp_path, case):
    name, data, match = BAD[case]
    path = tmp_path / name
    path.write_bytes(data)
    peak_rss_reset()
    before = peak_rss()
    refused(image_header, path, match=match, naming=path)
    assert peak_rss() - before < 64 << 20  # headers only: the bomb's 400 Mpx are never allocated


def test_good_images_pass_with_their_format_and_size(tmp_path):
    for name, data in (
        ("a.png", encoded("PNG")),
        ("b.jpg", encoded("JPEG")),
        ("c.gif", encoded("GIF")),
        ("d.jpg", encoded("JPEG") + b"\0" * 7),
    ):  # bytes after the end marker: it decodes
        (tmp_path / name).write_bytes(data)
        assert image_header(tmp_path / name)[1] == "8x8", name
    (tmp_path / "e.png").write_bytes(png_header(4096, 4096))  # at the bound itself (its IDAT is not inflated)
    assert 4096 * 4096 == MAX_IMAGE_PIXELS and image_header(tmp_path / "e.png") == ("PNG", "4096x4096")
    assert image_header(tmp_path / "a.png") == ("PNG", "8x8")


@pytest.mark.parametrize("listed", [False, True], ids=["imagefolder", "filelist"])
@pytest.mark.parametrize("case", BAD)
def test_a_dataset_holding_a_bad_image_is_refused_when_read(tmp_path, case, listed):
    root = file_list(tmp_path / "data") if listed else image_folder(tmp_path / "data")
    path = add_bad(root, case, listed)
    refused(describe_data, list_cfg(root) if listed else folder_cfg(root), match=BAD[case][2], naming=path)


@pytest.mark.parametrize("case", ["text named .png", "cut PNG", "20000x20000 PNG", "cut JPEG"])
def test_peftlab_train_refuses_a_bad_image_before_the_first_step(tmp_path, case):
    root = image_folder(tmp_path / "data")
    path = add_bad(root, case, listed=False)
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": TINY_MODEL,
                "method": {"name": "lora", "r": 2},
                "data": {"name": "imagefolder", "root": str(root), "num_workers": 0},
                "train": {"max_steps": 2, "batch_size": 4, "log_every": 1, "ckpt_every": 1},
            }
        )
    )
    run_dir = tmp_path / "run"
    status, stderr, _, _ = cli_in_process("train", str(config), "--run-dir", str(run_dir), "--quiet")
    assert_one_line_refusal(status, stderr, str(path))
    assert not list((run_dir / "checkpoint").glob("*")) and not (run_dir / "adapter.safetensors").exists()
    log = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert not [r for r in records if r.get("kind") == "step"], records
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed" and not result["step"] and str(path) in result["error"]


def never(path):
    raise AssertionError(f"{path} was checked again")


@pytest.mark.parametrize("listed", [False, True], ids=["imagefolder", "filelist"])
def test_the_check_is_cached_until_a_file_changes(tmp_path, monkeypatch, listed):
    root = file_list(tmp_path / "data") if listed else image_folder(tmp_path / "data")
    cfg = list_cfg(root) if listed else folder_cfg(root)
    describe_data(cfg)
    with monkeypatch.context() as patch:
        patch.setattr(image_checks, "image_header", never)
        describe_data(cfg)  # every stamp matches: no header is read
    target = root / "test" / "cat" / "1.png"
    if listed:  # a listed file's change is named by its manifest first: accept the change, then check it
        (tmp_path / "cache" / "manifests").rename(tmp_path / "old-manifests")
    st = target.stat()
    damaged = bytearray(target.read_bytes())
    damaged[-20] ^= 0xFF  # in the IDAT: its CRC no longer matches; the same size, and the old mtime (below)
    target.write_bytes(bytes(damaged))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    refused(describe_data, cfg, match="a truncated or corrupt PNG file", naming=target)


def test_a_data_cache_that_cannot_be_written_costs_a_new_check_not_the_run(tmp_path, monkeypatch):
    """ImageFolder needed no writable data cache before its images were checked; it needs none now."""
    from peftlab.data.sources import ENV_DATA_CACHE

    (tmp_path / "afile").write_text("")
    monkeypatch.setenv(ENV_DATA_CACHE, str(tmp_path / "afile"))
    root = image_folder(tmp_path / "data")
    assert describe_data(folder_cfg(root)).split_sizes["test"] == 4
    add_bad(root, "cut PNG", listed=False)
    refused(describe_data, folder_cfg(root), match="a truncated or corrupt PNG file", naming=root)


@pytest.mark.parametrize("damaged", [False, True], ids=["sound", "bad-image"])
def test_data_info_check_json_prints_one_json_document(tmp_path, damaged):
    """`data info --check --json` is read by scripts: its output parses as JSON whether or not an image is bad."""
    import contextlib

    from peftlab.cli import main

    datafiles.write_image_folder(tmp_path)
    if damaged:
        (tmp_path / "dog" / "9.png").write_text("not a png")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["data", "info", "imagefolder", "--root", str(tmp_path), "--check", "--json"])
    record = json.loads(out.getvalue())
    assert status == (1 if damaged else 0) and record["check"]["checked"] == 15 + damaged
    assert len(record["check"]["bad"]) == damaged and ("split_sizes" in record) != damaged
    if damaged:
        assert "9.png" in record["check"]["bad"][0]
