"""FacT (TT, TK), Convpass and RepAdapter, the VTAB-1k leaderboards' vision methods, table-driven: ViT-B/16 counts
equal to PETL_Vision's, the tiny model's counts against the formulas, the start equal to plain timm's model, the
merge (FacT, RepAdapter) loaded into plain timm, the layers against the authors' arithmetic, every added tensor
trained, and a short run through the recipe. Every family's cell is in tests/tuners/test_families.py."""

import copy
import json

import pytest
import timm
import torch
from safetensors.torch import load_file
from testkit import TINY_MODEL, needs_fashion_mnist

from peftlab.config.schema import load_config
from peftlab.tuners.base import TunerContext, apply_tuner, is_head_param

METHODS = ["fact_tt", "fact_tk", "convpass", "repadapter"]
MERGING = ["fact_tt", "fact_tk", "repadapter"]
NUM_CLASSES = 5
SIZES = {k: v for k, v in TINY_MODEL.items() if k != "name"}

# ViT-B/16 without the head, as PETL_Vision's tune_output/default_vtab/*/final_result.json record them
# (inserted_parameters) for the settings its VTAB-1k search chose, and as its model/ code counts them
# (fact.py's FacT, 24 of convpass.py's ConvPass, 24 of repadapter.py's RepAdapter, built on the meta device)
PETL_VISION = [
    ("fact_tt", {"r": 8}, 21_504),
    ("fact_tt", {"r": 16}, 61_440),
    ("fact_tt", {"r": 32}, 196_608),
    ("fact_tk", {"r": 8}, 13_952),  # its code's count; no VTAB run used r = 8
    ("fact_tk", {"r": 16}, 30_976),
    ("fact_tk", {"r": 32}, 86_528),
    ("fact_tk", {"r": 64}, 369_664),
    ("convpass", {"dim": 8}, 327_552),
    ("convpass", {"dim": 16}, 664_320),
    ("repadapter", {"dim": 8}, 239_808),
    ("repadapter", {"dim": 16}, 461_184),
    ("repadapter", {"dim": 32}, 903_936),
]
DEFAULTS = {"fact_tt": 21_504, "fact_tk": 30_976, "convpass": 327_552, "repadapter": 239_808}


def body_formula(method: str, depth: int, d: int, k: int, options: dict) -> int:
    """Trainable parameters outside the head, by hand: L blocks of width d, MLPs k d wide."""
    if method == "fact_tt":  # U, V; per block the cores of q, k, v, proj (r x r each), fc1 and fc2 (k r x r each)
        r = options.get("r", 8)
        return 2 * d * r + depth * (4 + 2 * k) * r * r
    if method == "fact_tk":  # U, V, the r x r x r core, r coefficients per weight matrix
        r = options.get("r", 16)
        return 2 * d * r + depth * (4 + 2 * k) * r + r**3
    if method == "convpass":  # two bypasses per block: down (d m + m), conv (9 m^2 + m), up (m d + d)
        m = options.get("dim", 8)
        return depth * 2 * (2 * d * m + 9 * m * m + 2 * m + d)
    if method == "repadapter":  # two adapters per block: conv_A (d m + m), conv_B in g groups (d m / g + d)
        m, g = options.get("dim", 8), options.get("groups", 2)
        return depth * 2 * (d * m + m + d * m // g + d)
    raise KeyError(method)


def trainable_without_head(model: dict, method: str, options: dict) -> int:
    from peftlab.tuners.params import count_parameters

    counts = count_parameters(
        load_config(overrides={"model": {**model, "num_classes": 1000}, "method": {"name": method, **options}})
    )
    assert counts["adapter"] == counts["trainable"] - counts["head"] and counts["in_place"] == 0
    return counts["trainable"] - counts["head"]


@pytest.mark.parametrize("method, options, expected", PETL_VISION, ids=lambda v: str(v))
def test_vit_b16_counts_equal_petl_visions(method, options, expected):
    assert body_formula(method, 12, 768, 4, options) == expected
    assert trainable_without_head({"name": "vit_base_patch16_224"}, method, options) == expected


def test_the_defaults_are_petl_visions_settings():
    assert {m: trainable_without_head({"name": "vit_base_patch16_224"}, m, {}) for m in METHODS} == DEFAULTS


@pytest.mark.parametrize(
    "method, options",
    [("fact_tt", {}), ("fact_tt", {"r": 3}), ("fact_tk", {"r": 5}), ("convpass", {"dim": 4}), ("repadapter", {})]
    + [("repadapter", {"dim": 12, "groups": 4})],
)
def test_tiny_counts_follow_the_formula(method, options):
    assert trainable_without_head(TINY_MODEL, method, options) == body_formula(method, 2, 64, 4, options)


def plain_timm() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(TINY_MODEL["name"], pretrained=False, num_classes=NUM_CLASSES, **SIZES).eval()


def adapt(method: str, base: torch.nn.Module, **options):
    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": method, **options}})
    return apply_tuner(copy.deepcopy(base), cfg.method, TunerContext.for_checks(cfg))


def images(n=4):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", METHODS)
def test_the_adapted_model_starts_as_plain_timms(method):
    base = plain_timm()
    tuner = adapt(method, base, scale=3.0)
    tuner.model.eval()
    with torch.no_grad():
        assert torch.equal(tuner.model(images()), base(images()))


@pytest.mark.parametrize("method", MERGING)
def test_the_merged_model_is_a_plain_timm_model_computing_the_adapted_one(method):
    base = plain_timm()
    tuner = adapt(method, base, scale=0.5)
    with torch.no_grad():  # every added tensor away from its start (V, conv_B: zero there)
        for name, param in tuner.trainable_parameters().items():
            if not is_head_param(name, tuner.head):
                param.normal_(0, 0.2)
    tuner.model.eval()
    plain = timm.create_model(TINY_MODEL["name"], pretrained=False, num_classes=NUM_CLASSES, **SIZES).eval()
    plain.load_state_dict(tuner.merged_model().state_dict())  # strict: timm's own keys only
    with torch.no_grad():
        adapted = tuner.model(images())
        assert (adapted - base(images())).abs().max() > 0.01  # the adapters do change the output
        torch.testing.assert_close(plain(images()), adapted, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_every_added_tensor_trains_and_nothing_else_changes(method):
    base = plain_timm()
    tuner = adapt(method, base)
    start = {n: p.detach().clone() for n, p in tuner.model.named_parameters()}
    optimizer = torch.optim.AdamW(tuner.trainable_parameters().values(), lr=1e-2)
    tuner.model.train()
    x, y = images(8), torch.arange(8) % NUM_CLASSES
    for _ in range(3):  # V (FacT), up (Convpass) and conv_B (RepAdapter) start at zero: the rest moves from step 2
        torch.nn.functional.cross_entropy(tuner.model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    trainable = set(tuner.trainable_parameters())
    changed = {n for n, p in tuner.model.named_parameters() if not torch.equal(p, start[n])}
    assert changed == trainable and any(not is_head_param(n, tuner.head) for n in trainable)


def test_fact_layers_compute_the_authors_updates():
    """FacT's updates as JieShibo/PETL-ViT (fact_tt.py, fact_tk.py) write them, per q, k, v, proj, fc1 and fc2."""
    from peftlab.tuners.fact.layer import FacTLayer

    for method in ("fact_tt", "fact_tk"):
        tuner = adapt(method, plain_timm(), r=3, scale=0.7)
        with torch.no_grad():
            for param in tuner.trainable_parameters().values():
                param.normal_()
        fact, block = tuner.model.fact, tuner.model.blocks[1]
        u, v, s, r = fact.FacTu, fact.FacTv, 0.7, 3
        x, h = torch.randn(2, 5, 64), torch.randn(2, 5, 256)
        if method == "fact_tt":
            qkv = block.attn.qkv.FacTs.weight.chunk(3)
            q, k, w = (v(u(x) @ core.t()) for core in qkv)
            proj = v(u(x) @ block.attn.proj.FacTs.weight.t())
            fc1 = v((u(x) @ block.mlp.fc1.FacTs.weight.t()).reshape(2, 5, 4, r)).reshape(2, 5, 256)
            fc2 = v(u(h.reshape(2, 5, 4, 64)).reshape(2, 5, 4 * r) @ block.mlp.fc2.FacTs.weight.t())
        else:
            cores = fact.FacTc @ fact.FacTp[:, 12:16]  # block 1 of 12 slices each: q, k, v, proj
            q, k, w = (v(u(x) @ cores[:, :, i]) for i in range(3))
            proj = v(u(x) @ cores[:, :, 3])
            mlp = fact.FacTc @ fact.FacTp[:, 16:24]
            fc1_core, fc2_core = mlp[:, :, :4].reshape(r, 4 * r), mlp[:, :, 4:].reshape(r, 4 * r)
            fc1 = v((u(x) @ fc1_core).reshape(2, 5, 4, r)).reshape(2, 5, 256)
            fc2 = v(u(h.reshape(2, 5, 4, 64)).reshape(2, 5, 4 * r) @ fc2_core.t())
        expected = {"attn.qkv": (x, torch.cat([q, k, w], dim=2)), "attn.proj": (x, proj), "mlp.fc1": (x, fc1)}
        expected["mlp.fc2"] = (h, fc2)
        for name, (inputs, delta) in expected.items():
            layer = block.get_submodule(name).eval()
            assert isinstance(layer, FacTLayer)
            with torch.no_grad():
                torch.testing.assert_close(layer(inputs) - layer.base_layer(inputs), s * delta, rtol=1e-4, atol=1e-4)


def test_repadapter_and_convpass_compute_the_authors_convolutions():
    """RepAdapter's conv_B is the authors' grouped Conv1d; Convpass convolves a prefix token as a 1 x 1 image."""
    from peftlab.tuners.convpass.layer import Convpass
    from peftlab.tuners.repadapter.layer import RepAdapter

    torch.manual_seed(0)
    adapter = RepAdapter(64, 12, 4, 0.0)
    torch.nn.init.normal_(adapter.conv_B.weight)
    torch.nn.init.normal_(adapter.conv_A.bias)
    x = torch.randn(2, 5, 64)
    authors = adapter.conv_B(adapter.conv_A(x.transpose(1, 2))).transpose(1, 2)
    torch.testing.assert_close(adapter(x), authors, rtol=1e-5, atol=1e-5)
    bypass = Convpass(64, 6, (2, 3), 2, True, 0.0)
    torch.nn.init.normal_(bypass.adapter_up.weight)
    tokens = torch.randn(2, 2 + 6, 64)
    h = bypass.act(bypass.adapter_down(tokens))
    alone = bypass.adapter_conv(h[:, 1:2].reshape(2, 1, 1, 6).permute(0, 3, 1, 2)).reshape(2, 6)
    grid = bypass.adapter_conv(h[:, 2:].reshape(2, 2, 3, 6).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(2, 6, 6)
    with torch.no_grad():
        out = bypass(tokens)
        torch.testing.assert_close(out[:, 1], bypass.adapter_up(bypass.act(alone)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[:, 2:], bypass.adapter_up(bypass.act(grid)), rtol=1e-5, atol=1e-5)


def test_repadapter_on_a_linear_without_a_bias_trains_and_only_the_merge_refuses():
    """BEiT's qkv keeps its q and v biases outside the Linear: the adapter's shift has nowhere to go in plain timm."""
    base = timm.create_model("beit_base_patch16_224", pretrained=False, num_classes=3, **SIZES).eval()
    cfg = load_config(
        overrides={"model": {**TINY_MODEL, "name": "beit_base_patch16_224"}, "method": {"name": "repadapter"}}
    )
    tuner = apply_tuner(copy.deepcopy(base), cfg.method, TunerContext.for_checks(cfg))
    assert tuner.merged_model() is None
    refusal = tuner.merge_refusal()
    assert "blocks.0.attn.qkv" in refusal and "\n" not in refusal


@pytest.mark.e2e
@needs_fashion_mnist()
@pytest.mark.parametrize("method", METHODS)
def test_a_short_run_trains_checks_its_merge_and_exports(tmp_path, method):
    from peftlab.cli import main
    from peftlab.training.export import load_trained
    from peftlab.training.run import train

    cfg = load_config(
        overrides={
            "model": TINY_MODEL,
            "method": {"name": method},
            "data": {"name": "fashion_mnist", "train_subset": 32, "val_subset": 16, "test_subset": 16},
            "train": {"max_steps": 2, "batch_size": 16, "eval_batch_size": 16, "lr": 1e-3},
        }
    )
    run_dir, out = tmp_path / "run", tmp_path / "merged.safetensors"
    result = train(cfg, run_dir, progress=False)
    assert result["status"] == "completed", result.get("error")
    assert result["frozen_base"]["equal"]
    head = 64 * 10 + 10  # Fashion-MNIST's 10 classes
    assert result["params"]["trainable"] - head == body_formula(method, 2, 64, 4, {})
    assert main(["export", str(run_dir), "--merged", str(out)]) == 0
    if method == "convpass":
        assert result["merge"] is None  # no merge: the export holds the base with the bypasses
        return
    assert result["merge"]["max_abs_diff"] < 1e-4
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        header = f.metadata()
    plain = timm.create_model(header["timm_model"], **json.loads(header["timm_kwargs"]))
    plain.load_state_dict(load_file(str(out)))
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), load_trained(run_dir).model.eval()(x), rtol=1e-5, atol=1e-5)
