# ruff: noqa: E501  (the recorded lines are kept whole, as the probe prints them)
"""Which CPU arithmetic gives the same bits on every x86 CPU: one line of hashes per MKL pin.

A copy of the session probe (../shared/probes/arith_hashes.py) with one more line: peftlab's pin, the
AdamW step as peftlab builds it under ``train.reproducible`` (``fused=True``: ATen's own exactly rounded
square root instead of MKL's vector math, whose rounding depends on the CPU's vendor), and an ``adamw_ref``
hash: the same AdamW step in numpy float32, exactly rounded, in torch's operation order.
tests/test_arith_hashes.py pins that line's hashes.

Run it with the project's Python:  python benchmarks/arith_hashes.py
Each line: the MKL_CBWR value tried (ONEDNN_MAX_CPU_ISA=AVX2 and ATEN_CPU_CAPABILITY=avx2 always set),
the ATen capability torch reports, a hash over everything, then one short hash per operation: matmuls at
the default study's pretraining shapes (batch 128, 17 tokens, width 128, MLP 512; forward and both
backward products), an attention softmax, GELU, LayerNorm, and one AdamW step. Two CPUs agree on a pin
when their lines for that pin are equal. RECORDED below is what an Intel Xeon with AMX and an AMD EPYC gave.
"""

import os
import subprocess
import sys

PINS = ["AVX2,STRICT", "AVX2", "COMPATIBLE", "COMPATIBLE,STRICT", "AVX,STRICT", "SSE4_2,STRICT"]

CHILD = r"""
import hashlib, math, os, sys, numpy as np, torch
fused = sys.argv[1] == "fused"
torch.manual_seed(0)
h = lambda t: hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:8]
x = torch.randn(128 * 17, 128); w1 = torch.randn(512, 128) * 0.05; w2 = torch.randn(128, 512) * 0.05
qkv = torch.randn(384, 128) * 0.05
outs = {}
y = torch.nn.functional.linear(x, qkv); outs["qkv"] = y
a = torch.randn(128, 4, 17, 32); outs["attn"] = torch.softmax(a @ a.transpose(-1, -2) / 32 ** 0.5, -1) @ a
hdn = torch.nn.functional.gelu(torch.nn.functional.linear(x, w1)); outs["fc1+gelu"] = hdn
outs["fc2"] = torch.nn.functional.linear(hdn, w2)
g = torch.randn(128 * 17, 128)
outs["dW"] = g.t() @ hdn; outs["dX"] = g @ w2
outs["ln"] = torch.nn.functional.layer_norm(x.view(128, 17, 128), (128,))
p = torch.nn.Parameter(w1.clone()); opt = torch.optim.AdamW([p], lr=1e-3, fused=fused or None)
p.grad = torch.randn_like(p); opt.step(); outs["adamw"] = p
allh = hashlib.sha256("".join(h(v) for v in outs.values()).encode()).hexdigest()[:12]
line = " ".join(f"{k}={h(v)}" for k, v in outs.items())
if fused:  # torch's single-tensor AdamW, step 1, weight decay 0.01, in numpy float32 (np.sqrt: IEEE, exact)
    f = np.float32
    w, gr = w1.numpy(), p.grad.numpy()
    w = w * f(1 - 1e-3 * 1e-2)  # decoupled weight decay
    m = f(1 - 0.9) * gr  # lerp_ from zero
    v = f(1 - 0.999) * gr * gr  # mul_(beta2) of zero, addcmul_
    denom = np.sqrt(v) / f(math.sqrt(1 - 0.999)) + f(1e-8)
    ref = w + (f(-1e-3 / (1 - 0.9)) * m) / denom  # addcdiv_: self + value * t1 / t2
    line += " adamw_ref=" + h(torch.from_numpy(ref))
print(torch.backends.cpu.get_cpu_capability(), allh, line)
"""

# The candidate pin (peftlab.models.products): the same products through oneDNN's linear instead of MKL's GEMM
# (oneDNN generates its kernels per instruction set, not per vendor), its bias inside (qkv+b) and apart, and the
# backward products as peftlab's OneDNNLinear takes them (strided views, no copies). Attention, LayerNorm and AdamW
# are left out (they are not products of a Linear).
ONEDNN_CHILD = r"""
import hashlib, torch
torch.manual_seed(0)
h = lambda t: hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:8]
x = torch.randn(128 * 17, 128); w1 = torch.randn(512, 128) * 0.05; w2 = torch.randn(128, 512) * 0.05
qkv = torch.randn(384, 128) * 0.05
L = lambda a, w, b=None: torch.ops.mkldnn._linear_pointwise(a, w, b, "none", [], "")
y = L(x, qkv); a = torch.randn(128, 4, 17, 32)
hdn = torch.nn.functional.gelu(L(x, w1)); fc2 = L(hdn, w2)
g = torch.randn(128 * 17, 128)
dW = L(g.t().contiguous(), hdn.t().contiguous()); dX = L(g, w2.t().contiguous())
b = torch.randn(384) * 0.05
line = f"qkv={h(y)} fc1+gelu={h(hdn)} fc2={h(fc2)} dW={h(dW)} dX={h(dX)} qkv+b={h(L(x, qkv, b))} qkv,+b={h(y + b)}"
line += f" dW_strided={h(L(g.t(), hdn.t()))} dX_strided={h(L(g, w2.t()))}"
print(torch.backends.cpu.get_cpu_capability(), line)
"""


def main() -> None:
    runs = [(pin, "1", "unfused") for pin in PINS] + [("AVX2,STRICT", "2", "unfused"), ("AVX2,STRICT", "1", "fused")]
    for pin, threads, adamw in runs:
        env = {
            **os.environ,
            "MKL_CBWR": pin,
            "ONEDNN_MAX_CPU_ISA": "AVX2",
            "ATEN_CPU_CAPABILITY": "avx2",
            "OMP_NUM_THREADS": threads,
        }
        out = subprocess.run([sys.executable, "-c", CHILD, adamw], env=env, capture_output=True, text=True)
        label = pin + (" fused" if adamw == "fused" else "")
        print(f"{label:18s} t{threads} {(out.stdout or out.stderr).strip().splitlines()[-1]}")
    for isa, threads in [("AVX2", "1"), ("AVX2", "2"), ("AVX512_CORE", "1")]:
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa, "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": threads}
        env.pop("MKL_CBWR", None)
        out = subprocess.run([sys.executable, "-c", ONEDNN_CHILD], env=env, capture_output=True, text=True)
        print(f"{'oneDNN ' + isa:18s} t{threads} {(out.stdout or out.stderr).strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()

# RECORDED on 2026-11-26, an Intel Xeon with AVX-512 and AMX (flags avx2 avx512f avx512_bf16 avx512_fp16 amx_tile amx_bf16),
# torch 2.14.1+cu130 from requirements.lock; this CPU's pinned default study gave the base sha256 d57d1cc0... (MNIST 95.36%),
# not the header's a6bffe95... (95.84%) measured on AMD EPYC machines:
#   AVX2,STRICT        t1 AVX2 b98ab80a307e qkv=fd3b0746 attn=49307866 fc1+gelu=8ed0c019 fc2=754db765 dW=11db9dc5 dX=ab115c6e ln=bffce619 adamw=873073e3
#   AVX2               t1 AVX2 ed416c7cfe39 qkv=fd3b0746 attn=46a66663 fc1+gelu=0409176a fc2=37bc76fb dW=4cea9356 dX=629f9f1c ln=bffce619 adamw=873073e3
#   COMPATIBLE         t1 AVX2 eab24e4f38c2 qkv=b9117bff attn=65e7059c fc1+gelu=237e5393 fc2=6718d695 dW=d67b9ff6 dX=ce3c36cd ln=bffce619 adamw=fd257d48
#   COMPATIBLE,STRICT  t1 AVX2 eab24e4f38c2 qkv=b9117bff attn=65e7059c fc1+gelu=237e5393 fc2=6718d695 dW=d67b9ff6 dX=ce3c36cd ln=bffce619 adamw=fd257d48
#   AVX,STRICT         t1 AVX2 13f40f38ca0e qkv=45679088 attn=a856c607 fc1+gelu=a38793d9 fc2=1ed73cb8 dW=02816435 dX=81a52ea6 ln=bffce619 adamw=fd257d48
#   SSE4_2,STRICT      t1 AVX2 13f40f38ca0e qkv=45679088 attn=a856c607 fc1+gelu=a38793d9 fc2=1ed73cb8 dW=02816435 dX=81a52ea6 ln=bffce619 adamw=fd257d48
#   AVX2,STRICT        t2 AVX2 b98ab80a307e qkv=fd3b0746 attn=49307866 fc1+gelu=8ed0c019 fc2=754db765 dW=11db9dc5 dX=ab115c6e ln=bffce619 adamw=873073e3
# RECORDED on 2026-11-26, an AMD EPYC (2 cores; flags avx2 avx512f avx512_bf16, no AMX), the same torch: every matmul,
# attention, GELU and LayerNorm hash equals the Intel AVX2,STRICT line under AVX2,STRICT (and here under AVX,STRICT and
# SSE4_2,STRICT too: MKL on this CPU takes its AVX2 path for them); only the unfused AdamW differs, under every pin.
# torch.sqrt (MKL's vsSqrt) rounds 16% of 2^20 random floats one ulp away from numpy's exact np.sqrt here, so the unfused
# AdamW step differs from the exact one in 619 of 65,536 weights. The fused AdamW (ATen's own sqrt instruction) equals the
# numpy reference (adamw_ref), and with it the whole line equals the Intel AVX2,STRICT one (b98ab80a307e): peftlab's pin.
#   AVX2,STRICT        t1 AVX2 a94156298435 qkv=fd3b0746 attn=49307866 fc1+gelu=8ed0c019 fc2=754db765 dW=11db9dc5 dX=ab115c6e ln=bffce619 adamw=431c8a51
#   AVX2               t1 AVX2 a94156298435 qkv=fd3b0746 attn=49307866 fc1+gelu=8ed0c019 fc2=754db765 dW=11db9dc5 dX=ab115c6e ln=bffce619 adamw=431c8a51
#   COMPATIBLE         t1 AVX2 7ed8eb6ee5c1 qkv=b9117bff attn=65e7059c fc1+gelu=237e5393 fc2=6718d695 dW=d67b9ff6 dX=ce3c36cd ln=bffce619 adamw=431c8a51
#   COMPATIBLE,STRICT  t1 AVX2 7ed8eb6ee5c1 qkv=b9117bff attn=65e7059c fc1+gelu=237e5393 fc2=6718d695 dW=d67b9ff6 dX=ce3c36cd ln=bffce619 adamw=431c8a51
#   AVX,STRICT         t1 AVX2 a94156298435 qkv=fd3b0746 attn=49307866 fc1+gelu=8ed0c019 fc2=754db765 dW=11db9dc5 dX=ab115c6e ln=bffce619 adamw=431c8a51
#   SSE4_2,STRICT      t1 AVX2 a94156298435 qkv=fd3b0746 attn=49307866 fc1+gelu=8ed0c019 fc2=754db765 dW=11db9dc5 dX=ab115c6e ln=bffce619 adamw=431c8a51
#   AVX2,STRICT        t2 AVX2 a94156298435 qkv=fd3b0746 attn=49307866 fc1+gelu=8ed0c019 fc2=754db765 dW=11db9dc5 dX=ab115c6e ln=bffce619 adamw=431c8a51
#   AVX2,STRICT fused  t1 AVX2 b98ab80a307e qkv=fd3b0746 attn=49307866 fc1+gelu=8ed0c019 fc2=754db765 dW=11db9dc5 dX=ab115c6e ln=bffce619 adamw=873073e3 adamw_ref=873073e3
# RECORDED on 2026-11-28, oneDNN's products (the candidate pin, peftlab.models.products). An AMD EPYC with AVX-512 and
# avx512_bf16 (torch 2.14.1, the session probe ../shared/probes/arith_hashes.py, which has the first five hashes):
#   oneDNN AVX2        t1 AVX2 qkv=fd3b0746 fc1+gelu=8ed0c019 fc2=2e0642d7 dW=8d807451 dX=ab115c6e
#   oneDNN AVX2        t2 AVX2 (the same as t1)
#   oneDNN AVX512_CORE t1 AVX2 qkv=fd3b0746 fc1+gelu=3aed78f7 fc2=064d3de5 dW=6b862512 dX=ab115c6e
# An Intel Xeon with AVX-512 and AMX (flags avx2 avx512f avx512_bf16 avx512_fp16 amx_tile amx_bf16, 2 cores, torch
# 2.14.1 from the lock): the same five hashes as the AMD EPYC under both caps, at 1 and 2 threads; the bias inside
# oneDNN's linear gives the bits of a separate "+ b", and strided (transposed) operands those of contiguous copies:
#   oneDNN AVX2        t1 AVX2 qkv=fd3b0746 fc1+gelu=8ed0c019 fc2=2e0642d7 dW=8d807451 dX=ab115c6e qkv+b=02a152b2 qkv,+b=02a152b2 dW_strided=8d807451 dX_strided=ab115c6e
#   oneDNN AVX2        t2 AVX2 qkv=fd3b0746 fc1+gelu=8ed0c019 fc2=2e0642d7 dW=8d807451 dX=ab115c6e qkv+b=02a152b2 qkv,+b=02a152b2 dW_strided=8d807451 dX_strided=ab115c6e
#   oneDNN AVX512_CORE t1 AVX2 qkv=fd3b0746 fc1+gelu=3aed78f7 fc2=064d3de5 dW=6b862512 dX=ab115c6e qkv+b=02a152b2 qkv,+b=02a152b2 dW_strided=6b862512 dX_strided=ab115c6e
# RECORDED on 2026-11-30, an AMD EPYC with AVX2 only (2 cores; flags avx2 fma f16c, no avx512f; torch 2.14.1 from the
# lock, benchmarks/pin_candidates.sh): its MKL lines are the AVX-512 EPYC's above, line for line, and its oneDNN lines
# are the Xeon's oneDNN AVX2 lines, all ten hashes, at 1 and 2 threads; capped at AVX512_CORE it runs AVX2's kernels
# (the cap is above what it has), so that line is its AVX2 line:
#   oneDNN AVX2        t1 AVX2 qkv=fd3b0746 fc1+gelu=8ed0c019 fc2=2e0642d7 dW=8d807451 dX=ab115c6e qkv+b=02a152b2 qkv,+b=02a152b2 dW_strided=8d807451 dX_strided=ab115c6e
#   oneDNN AVX512_CORE t1 AVX2 qkv=fd3b0746 fc1+gelu=8ed0c019 fc2=2e0642d7 dW=8d807451 dX=ab115c6e qkv+b=02a152b2 qkv,+b=02a152b2 dW_strided=8d807451 dX_strided=ab115c6e
