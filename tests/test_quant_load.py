"""A base quantized while loading (peftlab.quant.load) is the base loaded in full and then quantized.

Same stored bytes (quantized codes and statistics, the head, the adapters' initialisation), same
random generator state afterwards, same outputs and merges, for every bitsandbytes mode and QA-LoRA,
timm and HF key layouts, q/k/v slices or the whole qkv; and building it peaks far below the fp32 size.
"""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from testkit import REPO, TINY_MODEL

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.quant.load import build_base, loads_quantized
from peftlab.tuners.base import TunerContext, apply_tuner

pytest.importorskip("bitsandbytes")

NUM_CLASSES = 5
QUANTS = {
    "int8": {"mode": "int8"},
    "nf4": {"mode": "nf4"},
    "fp4": {"mode": "fp4"},
    "nf4-dq": {"mode": "nf4", "double_quant": True},
}
HF_NAMES = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "intermediate.dense",
    "mlp.fc2": "output.dense",
}


def hf_layout(state: dict) -> dict:
    """The tiny timm ViT's tensors under HF ViT names (q, k and v apart), as an HF checkpoint holds them."""
    fixed = {
        "cls_token": "embeddings.cls_token",
        "pos_embed": "embeddings.position_embeddings",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    out = {}
    for key, value in state.items():
        if key in fixed:
            out[f"vit.{fixed[key]}"] = value
            continue
        _, block, *module, param = key.split(".")
        module = ".".join(module)
        stem = f"vit.encoder.layer.{block}"
        if module == "attn.qkv":
            for name, part in zip(("query", "key", "value"), value.chunk(3)):
                out[f"{stem}.attention.attention.{name}.{param}"] = part.contiguous()
        else:
            out[f"{stem}.{HF_NAMES[module]}.{param}"] = value
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The tiny ViT's pretrained weights (head excepted) in timm's and HF's key layouts."""
    torch.manual_seed(3)
    state = {
        k: v.contiguous()
        for k, v in build_backbone(load_config(overrides={"model": TINY_MODEL}).model, NUM_CLASSES).state_dict().items()
        if not k.startswith("head")
    }
    folder = tmp_path_factory.mktemp("weights")
    save_file(state, folder / "timm.safetensors")
    save_file(hf_layout(state), folder / "hf.safetensors")
    return folder


def config(path, quant: dict, method: dict):
    return load_config(overrides={"model": {**TINY_MODEL, "pretrained": str(path)}, "method": method, "quant": quant})


def built(cfg, loader):
    """The tuned model and the random generator's state after building it, from the same seed."""
    torch.manual_seed(0)
    tuner = apply_tuner(loader(cfg), cfg.method, TunerContext.for_checks(cfg))
    return tuner, torch.get_rng_state()


def assert_same(old, new) -> None:
    old_state, new_state = old.model.state_dict(), new.model.state_dict()
    assert list(old_state) == list(new_state)
    for key, value in old_state.items():
        assert value.dtype == new_state[key].dtype and torch.equal(value, new_state[key]), key
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for tuner in (old, new):
        tuner.model.eval()
    with torch.no_grad():
        assert torch.equal(old.model(x), new.model(x))
        if old.is_adapter:
            assert torch.equal(old.merged_model()(x), new.merged_model()(x))


CASES = [
    ("timm", name, quant, {"name": "lora", "r": 4, "target_modules": targets})
    for name, quant in QUANTS.items()
    for targets in ("standard", [r"blocks\.\d+\.attn\.qkv"])
]
CASES += [("hf", name, QUANTS[name], {"name": "lora", "r": 4}) for name in ("int8", "nf4-dq")]
CASES += [(layout, "qalora", {}, {"name": "qalora", "r": 4, "group_size": 32}) for layout in ("timm", "hf")]
CASES += [("timm", "linear-nf4", QUANTS["nf4"], {"name": "linear"})]


@pytest.mark.parametrize("layout,name,quant,method", CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_a_base_quantized_while_loading_is_byte_identical_to_one_quantized_after(layout, name, quant, method, weights):
    cfg = config(weights / f"{layout}.safetensors", quant, method)
    assert loads_quantized(cfg.model, cfg.quant, cfg.method)
    old, old_rng = built(cfg, lambda c: build_backbone(c.model, NUM_CLASSES))
    new, new_rng = built(cfg, lambda c: build_base(c.model, c.quant, c.method, NUM_CLASSES))
    assert torch.equal(old_rng, new_rng)  # LoRA's initialisation, dropout: the same draws follow
    assert not any(p.is_meta for p in new.model.parameters()) and not any(b.is_meta for b in new.model.buffers())
    assert_same(old, new)


def test_weights_a_tuner_does_not_quantize_are_read_in_full(weights):
    """A Linear left in its file and never quantized (here: no tuner at all) is read by ``load_pending``."""
    from peftlab.quant.bases import load_pending

    cfg = config(weights / "timm.safetensors", QUANTS["nf4"], {"name": "lora"})
    model = build_base(cfg.model, cfg.quant, cfg.method, NUM_CLASSES)
    assert model.blocks[0].attn.qkv.weight.is_meta
    load_pending(model)
    torch.manual_seed(0)
    reference = build_backbone(cfg.model, NUM_CLASSES)
    assert torch.equal(model.blocks[0].attn.qkv.weight, reference.blocks[0].attn.qkv.weight)


def test_unquantized_runs_and_random_bases_build_as_before(weights):
    plain = config(weights / "timm.safetensors", {}, {"name": "lora"})
    random = load_config(overrides={"model": TINY_MODEL, "quant": QUANTS["nf4"]})
    assert not loads_quantized(plain.model, plain.quant, plain.method) and not loads_quantized(
        random.model, random.quant, random.method
    )


BUILD_PEAK = """
import json, os, sys, traceback, torch
from pathlib import Path
from safetensors.torch import save_file
from peftlab.models.backbones import build_backbone
from peftlab.config.schema import load_config
from peftlab.quant.load import build_base
from peftlab.tuners.base import TunerContext, apply_tuner

TINY = {"name": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}
path, modes = sys.argv[1], sys.argv[2:]
model = {"name": "vit_base_patch16_224", "img_size": 32, "patch_size": 8, "depth": 24, "embed_dim": 512,
         "num_heads": 8}


def write():
    with torch.device("meta"):
        shapes = build_backbone(load_config(overrides={"model": model}).model, 10).state_dict()
    save_file({k: torch.randn(v.shape) * 0.02 for k, v in shapes.items() if not k.startswith("head")}, path)
    return {}


def hwm():
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def measure(mode):
    cfg = load_config(overrides={"model": {**model, "pretrained": path}, "method": {"name": "lora", "r": 4},
                                 "quant": {"mode": "nf4"}})
    Path("/proc/self/clear_refs").write_text("5")  # the peak starts over from this process's size
    baseline = hwm()
    if mode == "in-full":  # an fp32 base read from its file, not quantized
        built = build_backbone(cfg.model, 10)
    elif mode == "for-saved-state":  # what export.load_quantized builds before it loads the saved state
        from peftlab.quant.bases import quantize_base
        from peftlab.quant.load import build_for_saved_state
        built = build_for_saved_state(cfg.model, 10, cfg.quant)
        quantize_base(built, cfg.quant, torch.device("cpu"))
    else:
        base = build_base(cfg.model, cfg.quant, cfg.method, 10)
        built = apply_tuner(base, cfg.method, TunerContext.for_checks(cfg)).model
    return {"peak": hwm() - baseline, "stored": sum(t.numel() * t.element_size() for t in built.state_dict().values())}


# one thread here, OMP_NUM_THREADS (2) in each fork: OpenMP's threads do not survive a fork, a pool of one is not made
torch.set_num_threads(1)
# first use imports PEFT, transformers, torch._dynamo (~0.4 GB)
tiny = load_config(overrides={"model": TINY, "method": {"name": "lora", "r": 4}, "quant": {"mode": "nf4"}})
apply_tuner(build_backbone(tiny.model, 10), tiny.method, TunerContext.for_checks(tiny))
out = {}
for mode in modes:  # each in a process forked from this warm one: the same start, its own peak
    read, written = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        status = 1
        try:
            os.write(written, json.dumps(write() if mode == "write" else measure(mode)).encode())
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(written)
    with os.fdopen(read) as answer:
        out[mode] = json.loads(answer.read() or "null")
    assert os.waitpid(pid, 0)[1] == 0, mode
print(json.dumps(out))
"""


def run_child(*args: str) -> dict:
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", BUILD_PEAK, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1]) if done.stdout.strip() else {}


def test_building_a_base_from_its_file_peaks_near_what_it_keeps(tmp_path):
    """A 24-block ViT 512 wide: 302 MB of weights in fp32, about 42 MB in nf4, its largest Linear 4.2 MB.
    bitsandbytes' quantization itself takes a few times one layer while it runs. One process imports torch,
    timm and PEFT once; each build runs in a process forked from it, its peak measured from its own start."""
    path = tmp_path / "deep.safetensors"
    measured = run_child(str(path), "write", "while-loading", "for-saved-state", "in-full")
    fp32 = path.stat().st_size
    loading = measured["while-loading"]
    assert loading["stored"] < fp32 / 5
    assert loading["peak"] < fp32 / 2, measured  # building it in fp32 first peaks above fp32
    rebuilt = measured["for-saved-state"]  # export.load_quantized's base, before its state
    assert rebuilt["stored"] < fp32 / 5 and rebuilt["peak"] < fp32 / 2, rebuilt
    # an fp32 base is read into the model one tensor at a time: reading the whole file first held two
    # copies of the model (about 2x its size)
    in_full = measured["in-full"]
    assert abs(in_full["stored"] - fp32) < fp32 / 100  # the head and the file's header apart
    assert in_full["peak"] < fp32 * 1.4, in_full
