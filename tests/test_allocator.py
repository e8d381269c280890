"""train.malloc: lean hands a freed tensor's memory back to the system, where glibc's own rule keeps it."""

import json
import os
import subprocess
import sys

import pytest
import torch

from peftlab.config.schema import config_hash, load_config
from peftlab.quant import allocator
from peftlab.utils.errors import ConfigError

# In a fresh process: one 16 MiB tensor freed (glibc's rule then raises its mmap threshold to 16 MiB),
# then 40 tensors of 3 MiB (a ViT-L activation at batch 4), all freed but the last: the heap
# cannot shrink below a block still in use.
PROGRAM = """
import json, sys
from pathlib import Path
import torch
from peftlab.quant import allocator
record = allocator.configure(sys.argv[1])

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10

big = torch.ones(4 << 20)
del big
before = rss()
blocks = [torch.ones(768 << 10) for _ in range(40)]
held = rss() - before
last = blocks[-1]
del blocks
print(json.dumps({"record": record, "held": held, "kept": rss() - before}))
"""


def freed_and_kept(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(allocator.glibc() is None, reason="glibc's malloc only (Linux)")
def test_lean_gives_freed_tensors_back_where_glibc_s_rule_keeps_them():
    lean, system = freed_and_kept("lean"), freed_and_kept("system")
    mib = 1 << 20
    assert lean["held"] > 100 * mib and system["held"] > 100 * mib  # 120 MiB of tensors were written
    assert lean["kept"] < 10 * mib  # 39 blocks freed: their memory left the process
    assert system["kept"] > 100 * mib  # the premise: glibc's own rule keeps them in its heap
    assert lean["record"]["mmap_threshold"] == mib and lean["record"]["allocator"].startswith("glibc ")
    assert system["record"] == {**lean["record"], "mode": "system", "mmap_threshold": None}


@pytest.mark.skipif(allocator.glibc() is None, reason="Linux only")
def test_a_preloaded_allocator_is_named_and_left_alone(tmp_path):
    """An allocator preloaded in glibc's place is what the record names, and lean fixes no threshold
    (glibc's mallopt would not reach it). zlib, copied under jemalloc's file name, stands in for it:
    the record reads the mapped file's name, and preloading zlib changes nothing else."""
    import shutil
    import zlib  # noqa: F401  (its library is mapped: its path is read from /proc/self/maps)

    zlib_path = next((line.split()[-1] for line in open("/proc/self/maps") if "/libz.so" in line), None)
    if zlib_path is None:
        pytest.skip("zlib is linked into Python statically here")
    fake = tmp_path / "libjemalloc.so.2"
    shutil.copy(zlib_path, fake)
    env = {**os.environ, "LD_PRELOAD": str(fake)}
    out = subprocess.run([sys.executable, "-c", PROGRAM, "lean"], capture_output=True, text=True, check=True, env=env)
    record = json.loads(out.stdout)["record"]
    assert record == {"mode": "lean", "allocator": "libjemalloc.so.2", "mmap_threshold": None}


def test_train_malloc_is_checked_and_leaves_the_run_id_alone():
    base = load_config(overrides={})
    assert base.train.malloc == "system"
    assert config_hash(load_config(overrides={"train": {"malloc": "lean"}})) == config_hash(base)
    with pytest.raises(ConfigError, match="train.malloc"):
        load_config(overrides={"train": {"malloc": "jemalloc"}})


def mapped_rss(path) -> int:
    """Bytes of ``path``'s mappings resident in this process (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if "-" in head[0] and len(head) >= 5:  # a mapping's first line
            inside = len(head) == 6 and head[5] == str(path)
        elif inside and head[0] == "Rss:":
            total += int(head[1]) << 10
    return total


@pytest.fixture(scope="module")
def wide_hf_dir(tmp_path_factory):
    """An HF ViT whose Linears span many pages (1 MiB each), saved by save_pretrained."""
    from transformers import ViTConfig, ViTForImageClassification

    path = tmp_path_factory.mktemp("hf") / "vit"
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024, image_size=32, patch_size=8
    )
    ViTForImageClassification(config).save_pretrained(path)
    return path


@pytest.mark.skipif(allocator.glibc() is None, reason="Linux only")
def test_a_weight_left_in_its_mapped_file_drops_its_pages_and_keeps_its_values(wide_hf_dir):
    from transformers import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(wide_hf_dir)
    file = wide_hf_dir / "model.safetensors"
    weight = next(p for n, p in model.named_parameters() if p.numel() == 1024 * 256)
    values = weight.detach().clone()  # touches its pages
    before = mapped_rss(file)
    dropped = allocator.drop_file_pages(weight)
    assert dropped >= (1 << 20) - 8192 and mapped_rss(file) <= before - dropped + 8192
    assert torch.equal(weight, values)  # read from the file again
    anonymous = values.clone()
    assert allocator.drop_file_pages(anonymous) == 0 and torch.equal(anonymous, values)


@pytest.mark.skipif(allocator.glibc() is None, reason="Linux only")
def test_an_hf_base_quantized_keeps_none_of_its_fp32_file_pages(wide_hf_dir):
    """transformers leaves an HF base's tensors in the mapped safetensors file; quantizing a Linear reads
    its pages, which then leave the process's resident memory (an HF ViT-B kept 330 MiB of them)."""
    from peftlab.models.backbones import build_backbone
    from peftlab.quant.bases import is_quantized_linear
    from peftlab.tuners.base import TunerContext, apply_tuner

    cfg = load_config(
        overrides={
            "model": {"source": "hf", "path": str(wide_hf_dir)},
            "method": {"name": "lora"},
            "quant": {"mode": "nf4"},
        }
    )
    model = build_backbone(cfg.model, 5)
    file = wide_hf_dir / "model.safetensors"
    quantized = apply_tuner(model, cfg.method, TunerContext.for_checks(cfg)).model
    layers = [m for m in quantized.modules() if is_quantized_linear(m)]
    fp32 = sum(m.in_features * m.out_features * 4 for m in layers)
    assert len(layers) == 12 and fp32 == 6 << 20  # q, k, v, o, fc1, fc2 in 2 layers: 6 MiB of fp32 read
    assert mapped_rss(file) < 1 << 20  # the embeddings, norms and biases: the read weights' pages left
