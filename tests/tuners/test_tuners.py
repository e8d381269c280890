"""Invariants of every tuner, table-driven over the TUNERS registry and LoRA presets."""

import copy

import pytest
import timm
import torch
from testkit import TEXT_ONLY, TINY_MODEL

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.tuners import TUNERS
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.tuners.params import count_parameters
from peftlab.utils.errors import ConfigError

NUM_CLASSES = 5


def make(method: str, **options):
    overrides = {"model": TINY_MODEL, "method": {"name": method, **options}}
    cfg = load_config(overrides=overrides)
    torch.manual_seed(0)
    model = build_backbone(cfg.model, NUM_CLASSES)
    base = copy.deepcopy(model).eval()
    return cfg, base, apply_tuner(model, cfg.method, TunerContext.for_checks(cfg))


def images(n=4):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def perturb_adapters(tuner):
    """Give lora_B non-zero values so merge tests are not trivially equal."""
    with torch.no_grad():
        for name, param in tuner.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)


def train_steps(tuner, steps=3):
    opt = torch.optim.AdamW(tuner.trainable_parameters().values(), lr=1e-2, weight_decay=0.1)
    tuner.model.train()
    x, y = images(8), torch.arange(8) % NUM_CLASSES
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(tuner.model(x), y) + tuner.regularization()
        loss.backward()
        opt.step()
        opt.zero_grad()


# QA-LoRA starts as its quantized base (tests/tuners/test_qalora.py); with a schedule, λ = 0 at step 0: the fp32 base
START_OPTIONS = {"qalora": {"schedule": "linear", "schedule_steps": 1}}


# VPT's prompt tokens change every token's attention by design: it defines no identity at initialization
# (tests/tuners/test_zoo.py checks instead that its frozen parts stay untouched and the output depends on the prompts)
NO_IDENTITY = {"vpt"}


# prompt and prefix tuning refuse the timm model (their cells of tests/tuners/test_families.py), and their
# virtual tokens change the output by design (tests/tuners/test_prompt_learning.py)
@pytest.mark.parametrize("method", sorted(set(TUNERS) - NO_IDENTITY - TEXT_ONLY))
def test_tuner_starts_as_the_base_model(method):
    _, base, tuner = make(method, **START_OPTIONS.get(method, {}))
    tuner.model.eval()
    with torch.no_grad():
        assert torch.equal(tuner.model(images()), base(images()))


@pytest.mark.parametrize("targets", ["standard", "extended", "all-linear"])
def test_lora_merge_equals_adapter_outputs(targets):
    _, _, tuner = make("lora", r=4, target_modules=targets)
    perturb_adapters(tuner)
    tuner.model.eval()
    merged = tuner.merged_model().eval()
    assert type(merged) is timm.models.vision_transformer.VisionTransformer
    with torch.no_grad():
        torch.testing.assert_close(merged(images()), tuner.model(images()), rtol=1e-5, atol=1e-5)


def test_qv_lora_trains_only_q_and_v_slices_and_the_head():
    _, base, tuner = make("lora", r=4, target_modules="standard")
    train_steps(tuner)
    merged = tuner.merged_model()
    d = TINY_MODEL["embed_dim"]
    before, after = base.state_dict(), merged.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        if key.startswith("head."):
            assert not torch.equal(before[key], after[key])
        elif key.endswith("attn.qkv.weight"):
            assert torch.equal(before[key][d : 2 * d], after[key][d : 2 * d]), f"k rows of {key} changed"
            assert not torch.equal(before[key][:d], after[key][:d]), f"q rows of {key} unchanged"
            assert not torch.equal(before[key][2 * d :], after[key][2 * d :]), f"v rows of {key} unchanged"
        else:
            assert torch.equal(before[key], after[key]), f"frozen {key} changed"
    # the frozen base inside the PEFT model is bit-identical too
    for name, param in tuner.model.named_parameters():
        if not param.requires_grad and "base_layer" in name:
            assert name.endswith(("weight", "bias"))


def test_linear_probe_changes_only_the_head():
    _, base, tuner = make("linear")
    train_steps(tuner)
    for key, value in base.state_dict().items():
        assert torch.equal(value, tuner.model.state_dict()[key]) != key.startswith("head."), key


def lora_formula(depth, d, hidden, r, targets, num_classes):
    per_module = {
        "q": 2 * d * r,
        "k": 2 * d * r,
        "v": 2 * d * r,
        "proj": 2 * d * r,
        "fc1": r * (d + hidden),
        "fc2": r * (hidden + d),
    }
    names = {
        "standard": ["q", "v"],
        "extended": ["q", "k", "v", "proj"],
        "all-linear": ["q", "k", "v", "proj", "fc1", "fc2"],
    }[targets]
    return depth * sum(per_module[n] for n in names), d * num_classes + num_classes


@pytest.mark.parametrize(
    "model, depth, d, classes",
    [
        ("deit_tiny_patch16_224", 12, 192, 10),
        ("deit_small_patch16_224", 12, 384, 100),
        ("vit_small_patch16_224", 12, 384, 10),
    ],
)
@pytest.mark.parametrize("r", [2, 8, 32])
@pytest.mark.parametrize("targets", ["standard", "extended", "all-linear"])
def test_lora_parameter_counts_match_the_formula(model, depth, d, classes, r, targets):
    cfg = load_config(
        overrides={
            "model": {"name": model, "num_classes": classes},
            "method": {"name": "lora", "r": r, "target_modules": targets},
        }
    )
    counts = count_parameters(cfg)
    adapter, head = lora_formula(depth, d, 4 * d, r, targets, classes)
    base_total = (
        sum(p.numel() for p in timm.create_model(model, num_classes=classes, pretrained=False).parameters())
        if model == "deit_tiny_patch16_224" and r == 2 and targets == "standard"
        else None
    )
    assert counts["adapter"] == adapter
    assert counts["head"] == head
    assert counts["trainable"] == adapter + head
    if base_total is not None:
        assert counts["total"] == base_total + adapter


def test_documented_counts():
    tiny = load_config(
        overrides={"model": {"name": "deit_tiny_patch16_224", "num_classes": 10}, "method": {"name": "full"}}
    )
    assert count_parameters(tiny)["total"] == 5_526_346
    lora = load_config(
        overrides={
            "model": {"name": "deit_tiny_patch16_224", "num_classes": 10},
            "method": {"name": "lora", "r": 8, "target_modules": "standard"},
        }
    )
    counts = count_parameters(lora)
    assert (counts["adapter"], counts["head"]) == (73_728, 1_930)


def test_rank_and_alpha_patterns_apply_per_layer():
    _, _, tuner = make(
        "lora", r=4, rank_pattern={r"blocks\.1\.attn\.qkv\.v": 8}, alpha_pattern={r"blocks\.1\.attn\.qkv\.v": 32.0}
    )
    shapes = {n: tuple(p.shape) for n, p in tuner.model.named_parameters() if "lora_A" in n}
    assert shapes["base_model.model.blocks.1.attn.qkv.v.lora_A.default.weight"] == (8, 64)
    assert shapes["base_model.model.blocks.0.attn.qkv.v.lora_A.default.weight"] == (4, 64)
    layer = tuner.model.get_submodule("base_model.model.blocks.1.attn.qkv.v")
    assert layer.scaling["default"] == 32.0 / 8


@pytest.mark.parametrize(
    "options, message",
    [
        ({"rank_pattern": {r"blocks\.9\.attn": 4}}, "method.rank_pattern key"),
        ({"alpha_pattern": {"fc3": 4.0}}, "method.alpha_pattern key 'fc3' matches no adapted module"),
        ({"target_modules": [r"blocks\.\d+\.attn\.qkv\.z"]}, "method.target_modules entry"),
    ],
)
def test_patterns_that_match_nothing_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        make("lora", **options)


def test_presets_never_touch_patch_embed_or_head():
    _, _, tuner = make("lora", target_modules="all-linear")
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in tuner.model.named_parameters() if ".lora_A." in n}
    assert adapted and not any("patch_embed" in n or ".head" in n for n in adapted)
    assert len(adapted) == TINY_MODEL["depth"] * 6


def test_adapter_file_round_trip(tmp_path):
    from safetensors.torch import load_file, save_file

    cfg, _, tuner = make("lora", r=4)
    perturb_adapters(tuner)
    save_file(tuner.adapter_state_dict(), str(tmp_path / "adapter.safetensors"))
    keys = sorted(load_file(str(tmp_path / "adapter.safetensors")))
    assert "base_model.model.blocks.0.attn.qkv.q.lora_A.weight" in keys
    assert "base_model.model.head.weight" in keys
    _, _, fresh = make("lora", r=4)
    fresh.load_adapter_state_dict(load_file(str(tmp_path / "adapter.safetensors")))
    tuner.model.eval(), fresh.model.eval()
    with torch.no_grad():
        assert torch.equal(fresh.model(images()), tuner.model(images()))


def test_whole_fused_qkv_can_be_targeted_and_merges():
    _, _, tuner = make("lora", r=4, target_modules=[r"blocks\.\d+\.attn\.qkv"])
    names = {n for n, _ in tuner.model.named_parameters() if "lora_A" in n}
    assert names == {f"base_model.model.blocks.{i}.attn.qkv.lora_A.default.weight" for i in range(2)}
    perturb_adapters(tuner)
    tuner.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(tuner.merged_model().eval()(images()), tuner.model(images()), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="both the whole fused"):
        make("lora", target_modules=[r"blocks\.\d+\.attn\.qkv.*"])


@pytest.mark.parametrize("method", sorted(TUNERS))
def test_each_method_takes_its_own_keys_and_names_them_for_a_foreign_one(method):
    import dataclasses

    own = {f.name for f in dataclasses.fields(TUNERS[method].config_cls)}
    cfg = load_config(overrides={"method": {"name": method}})
    assert type(cfg.method) is TUNERS[method].config_cls and set(vars(cfg.method)) == own
    foreign = sorted({f.name for spec in TUNERS.values() for f in dataclasses.fields(spec.config_cls)} - own)
    for key in foreign:
        with pytest.raises(
            ConfigError,
            match=rf"'method.{key}' is not an option of method '{method}' "
            rf"\(it belongs to .*\); method '{method}' allows: name",
        ):
            load_config(overrides={"method": {"name": method, key: 1}})


def test_the_registry_is_the_only_list_of_methods():
    from peftlab.config.methods import METHODS, method_names

    assert method_names() == tuple(TUNERS) and METHODS == {n: spec.config_cls for n, spec in TUNERS.items()}
    with pytest.raises(ConfigError, match=r"method.name='lorra' is invalid: expected one of " + ", ".join(TUNERS)):
        load_config(overrides={"method": {"name": "lorra"}})


def test_each_method_config_declares_its_registry_name():
    for name, spec in TUNERS.items():
        assert spec.config_cls().name == name == spec.config_cls.__dict__["name"]
    with pytest.raises(ConfigError, match=r"method.name='lora' is invalid: expected 'full', the name of FullConfig"):
        TUNERS["full"].config_cls(name="lora")


@pytest.mark.parametrize(
    "method, options, error",
    [
        ("adalora", {"target_modules": [r"blocks\.\d+\.attn\.nothing"]}, "matches no Linear module"),
        ("adaptive", {"budget": 1000}, "exceeds max_rank x adapted modules"),
    ],
)
def test_the_peft_injection_path_builds_the_config_before_it_changes_the_model(method, options, error):

    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": method, **options}, "train": {"max_steps": 8}})
    model = build_backbone(cfg.model, NUM_CLASSES)
    before = [name for name, _ in model.named_modules()]
    with pytest.raises(ConfigError, match=error):
        TUNERS[method].load("apply")(model, cfg.method, TunerContext.for_checks(cfg))
    assert [name for name, _ in model.named_modules()] == before  # no qkv split, no adapter


@pytest.mark.parametrize("method", sorted(TUNERS))
def test_each_method_module_defines_its_hooks_by_name(method):
    import inspect

    spec = TUNERS[method]
    assert list(inspect.signature(spec.check).parameters) == ["model", "cfg", "ctx"]
    assert list(inspect.signature(spec.apply).parameters) == ["model", "cfg", "ctx"]
    assert spec.ranks is None or list(inspect.signature(spec.ranks).parameters) == ["model", "cfg"]


def test_a_module_without_a_required_hook_is_named():
    from peftlab.tuners import TunerSpec
    from peftlab.tuners.full.config import FullConfig

    spec = TunerSpec(FullConfig, "peftlab.tuners.timm_blocks")
    assert spec.ranks is None  # optional
    with pytest.raises(AttributeError, match=r"^peftlab.tuners.timm_blocks has no function 'apply'"):
        _ = spec.apply
