"""train.malloc: lean hands a freed tensor's memory back to the system, where glibc's own rule keeps it."""

import json
import subprocess
import sys

import pytest

from peftlab import allocator
from peftlab.config import config_hash, load_config
from peftlab.errors import ConfigError

# In a fresh process: one 16 MiB tensor freed (glibc's rule then raises its mmap threshold to 16 MiB),
# then 40 tensors of 3 MiB (a ViT-L activation at batch 4), all freed but the last: the heap
# cannot shrink below a block still in use.
PROGRAM = """
import json, sys
from pathlib import Path
import torch
from peftlab import allocator
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


def test_train_malloc_is_checked_and_leaves_the_run_id_alone():
    base = load_config(overrides={})
    assert base.train.malloc == "lean"
    assert config_hash(load_config(overrides={"train": {"malloc": "system"}})) == config_hash(base)
    with pytest.raises(ConfigError, match="train.malloc"):
        load_config(overrides={"train": {"malloc": "jemalloc"}})
