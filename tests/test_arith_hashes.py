"""The pin's bits on every x86 CPU: the pretraining's operations under peftlab's pin (``train.reproducible``)
hash as they did on an Intel Xeon with AMX (benchmarks/arith_hashes.py keeps the recorded lines, Intel's and
an AMD EPYC's). MKL's COMPATIBLE branch gives the matmuls the same bits on both vendors; the AdamW step is the one
peftlab builds when pinned (fused: ATen's exactly rounded square root, not MKL's vector math whose rounding
differs by vendor), checked against the same step in numpy float32 (exactly rounded: the same on any CPU)."""

import json
import os
import subprocess
import sys

import pytest
from testkit import REPO

from peftlab.utils import cpu

# Intel Xeon (AVX-512, AMX), MKL_CBWR=COMPATIBLE,STRICT (the pin), one thread, as benchmarks/arith_hashes.py keeps it;
# an AVX2-only AMD EPYC gives the same (2026-11-27). Under the former pin (AVX2,STRICT) Intel's qkv, fc1+gelu, fc2, dW
# and dX were fd3b0746, 8ed0c019, 754db765, 11db9dc5 and ab115c6e, which an AMD EPYC gave as well, yet a biased
# Linear's GEMM inside a training step parted the vendors (benchmarks/step_probe.py): MKL's COMPATIBLE branch does not
INTEL = {
    "qkv": "b9117bff",
    "attn": "65e7059c",
    "fc1+gelu": "237e5393",
    "fc2": "6718d695",
    "dW": "d67b9ff6",
    "dX": "ce3c36cd",
    "ln": "bffce619",
    "adamw": "873073e3",  # the fused AdamW a pinned run takes: the exactly rounded step
}

CHILD = r"""
import hashlib, json, math, numpy as np, torch
from peftlab.training.runtime import fused_adamw
torch.manual_seed(0)
h = lambda t: hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:8]
x = torch.randn(128 * 17, 128); w1 = torch.randn(512, 128) * 0.05; w2 = torch.randn(128, 512) * 0.05
qkv = torch.randn(384, 128) * 0.05
outs = {"qkv": torch.nn.functional.linear(x, qkv)}
a = torch.randn(128, 4, 17, 32); outs["attn"] = torch.softmax(a @ a.transpose(-1, -2) / 32 ** 0.5, -1) @ a
hdn = torch.nn.functional.gelu(torch.nn.functional.linear(x, w1)); outs["fc1+gelu"] = hdn
outs["fc2"] = torch.nn.functional.linear(hdn, w2)
g = torch.randn(128 * 17, 128)
outs["dW"] = g.t() @ hdn; outs["dX"] = g @ w2
outs["ln"] = torch.nn.functional.layer_norm(x.view(128, 17, 128), (128,))
p = torch.nn.Parameter(w1.clone())
opt = torch.optim.AdamW([p], lr=1e-3, fused=fused_adamw(None, torch.device("cpu"), reproducible=True) or None)
p.grad = torch.randn_like(p); opt.step(); outs["adamw"] = p
f = np.float32  # torch's AdamW step 1 (weight decay 0.01) in its operation order, exactly rounded
w, gr = w1.numpy() * f(1 - 1e-3 * 1e-2), p.grad.numpy()
m, v = f(1 - 0.9) * gr, f(1 - 0.999) * gr * gr
ref = w + (f(-1e-3 / (1 - 0.9)) * m) / (np.sqrt(v) / f(math.sqrt(1 - 0.999)) + f(1e-8))
outs["adamw_ref"] = torch.from_numpy(ref)
print(json.dumps({k: h(t) for k, t in outs.items()}))
"""


@pytest.mark.skipif(not cpu.applies(), reason="the switches exist for x86-64 CPUs only")
def test_the_pins_hashes_are_the_recorded_intel_ones():
    env = {**os.environ, **cpu.PINNED, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    hashes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert hashes["adamw"] == hashes["adamw_ref"]  # exactly rounded: what makes the step vendor-independent
    assert {k: hashes[k] for k in INTEL} == INTEL
