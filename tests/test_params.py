"""Every size a method config can set is counted on the meta device before anything is allocated:
each integer knob of each method at its maximum is a one-line refusal (exit 2), or a config that
validates, in seconds and without a memory blow-up; validate, train and a study's dry-run alike.
The counts of ViT-B/16, CLIP-B/16 and DINOv2-B/14 equal PETL_Vision's (docs/backbones.md)."""

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml
from testkit import TINY_MODEL, applied_counts, assert_one_line_refusal, cli_in_process, meta_of, needs_fashion_mnist

from peftlab.config.checks import MAX_INT
from peftlab.tuners import TUNERS

# a knob that counts only once another is set: oft's r (blocks) replaces oft_block_size, and so on
COMPANIONS = {
    ("oft", "r"): {"oft_block_size": 0},
    ("boft", "boft_block_num"): {"boft_block_size": 0},
    ("qalora", "schedule_steps"): {"schedule": "linear"},
}
CPU_SECONDS = 60  # in-process checks of the tiny model take well under a CPU second
RSS_GROWTH = 2**30


def integer_knobs():
    """(method, field, value at its maximum) for every field of every TUNERS config that holds integers."""
    for name, spec in TUNERS.items():
        hints = typing.get_type_hints(spec.config_cls)
        for field in dataclasses.fields(spec.config_cls):
            hint = hints[field.name]
            if hint is int or int in typing.get_args(hint):
                yield name, field.name, {"q": MAX_INT} if typing.get_origin(hint) is dict else MAX_INT


def write_config(path: Path, method: dict, **train) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "model": TINY_MODEL,
                "method": method,
                "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32},
                "train": {"max_steps": 2, "batch_size": 16, **train},
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("method", "knob", "value"),
    [(m, k, v) for m, k, v in integer_knobs()],
    ids=[f"{m}.{k}" for m, k, _ in integer_knobs()],
)
def test_every_integer_knob_at_its_maximum_is_refused_in_one_line_or_validates(tmp_path, method, knob, value):
    """VPT's prompt_tokens and the adapters' bottleneck were built on the CPU (550 GB, a traceback)
    while the pre-flight counted only the base and rank-r adapters."""
    config = {"name": method, knob: value, **COMPANIONS.get((method, knob), {})}
    status, stderr, seconds, growth = cli_in_process("validate", str(write_config(tmp_path / "c.yaml", config)))
    assert status == 0 or status == 2 and stderr.startswith("peftlab: error: ") and stderr.count("\n") == 1, (
        status,
        stderr[-2000:],
    )
    assert seconds < CPU_SECONDS and growth < RSS_GROWTH, (seconds, growth / 2**20)


@needs_fashion_mnist()
@pytest.mark.parametrize(
    "method",
    [
        {"name": "vpt", "prompt_tokens": MAX_INT},
        {"name": "vpt", "prompt_tokens": 10**8},
        {"name": "houlsby", "bottleneck": MAX_INT},
        {"name": "lora", "rank_budget": MAX_INT, "rank_strategy": "linear_decay"},
    ],
    ids=lambda m: f"{m['name']}-{list(m)[1]}",
)
def test_a_method_too_large_is_refused_by_validate_train_and_a_study_dry_run(tmp_path, method):
    """Each names the knob, and train refuses before it builds the model (no RuntimeError wrapped in
    a train.auto_batch hint)."""
    knob = next(k for k in method if k != "name")
    path = write_config(tmp_path / "run.yaml", method)
    # a budget of ranks no module can hold is refused by the rank bound before the size (issue 72)
    fits = "expected a rank <= 64" if knob == "rank_budget" else "expected a model that fits"
    needles = (f"method.{knob}={method[knob]}", fits)
    assert_one_line_refusal(*cli_in_process("validate", str(path))[:2], *needles)
    status, stderr, seconds, growth = cli_in_process("train", str(path), "--run-dir", str(tmp_path / "run"))
    assert_one_line_refusal(status, stderr, *needles)
    assert growth < RSS_GROWTH and "auto_batch" not in stderr
    (tmp_path / "study.yaml").write_text(
        yaml.safe_dump({"name": "s", "base": "run.yaml", "seeds": 1, "methods": {method["name"]: {}}})
    )
    assert_one_line_refusal(
        *cli_in_process("study", str(tmp_path / "study.yaml"), "--dry-run", "--study-dir", str(tmp_path / "out"))[:2],
        *needles,
    )


def test_the_size_check_leaves_the_meta_model_a_study_shares_as_found():
    from peftlab.config.schema import load_config
    from peftlab.tuners.params import check_against_model, meta_model

    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": "houlsby"}})
    model = meta_model(cfg)
    before = [(n, type(m)) for n, m in model.named_modules()]
    check_against_model(cfg, model=model)
    assert [(n, type(m)) for n, m in model.named_modules()] == before


def test_a_quantized_base_counts_as_many_parameters_as_its_float_base():
    """``peftlab params`` of a QLoRA config was a traceback: bitsandbytes cannot quantize a meta tensor."""
    from peftlab.config.schema import load_config
    from peftlab.tuners.params import count_parameters

    lora = load_config(overrides={"model": TINY_MODEL, "method": {"name": "lora"}})
    for mode in ("nf4", "int8"):
        assert count_parameters(
            dataclasses.replace(lora, quant=dataclasses.replace(lora.quant, mode=mode))
        ) == count_parameters(lora)


NASTY_SIZES = [
    None,
    True,
    -1,
    0,
    1,
    3,
    64,
    MAX_INT,
    MAX_INT + 1,
    10**30,
    1e309,
    0.5,
    "8",
    [],
    {},
    {"q": MAX_INT},
    {"q": -1},
]


def test_fuzzed_method_knobs_are_one_line_errors_or_valid(tmp_path):
    """Random methods with one to three of their fields set to hostile values (a fixed seed, a bounded
    count): each validate is a one-line refusal or valid, in seconds and bounded memory."""
    import random

    rng = random.Random(37)
    fields = {
        name: [f.name for f in dataclasses.fields(spec.config_cls) if f.name != "name"]
        for name, spec in sorted(TUNERS.items())
    }
    outcomes = {"valid": 0, "refused": 0}
    for i in range(40):
        name = rng.choice([name for name, own in fields.items() if own])
        method = {"name": name, **{rng.choice(fields[name]): rng.choice(NASTY_SIZES) for _ in range(rng.randint(1, 3))}}
        status, stderr, seconds, growth = cli_in_process("validate", str(write_config(tmp_path / f"{i}.yaml", method)))
        assert status == 0 or status == 2 and stderr.startswith("peftlab: error: ") and stderr.count("\n") == 1, (
            method,
            status,
            stderr[-2000:],
        )
        assert seconds < CPU_SECONDS and growth < RSS_GROWTH, (method, seconds, growth / 2**20)
        outcomes["valid" if status == 0 else "refused"] += 1
    assert outcomes["refused"] > 20 and outcomes["valid"] > 0, outcomes


# ViT-B: 12 blocks of width 768, MLP 3,072. PETL_Vision's counts are its "Gradient Parameters No Head"
# (utils/log_utils.py), which its tune_output/*/final_result.json record as inserted_parameters; the
# sizes below are those of its runs (lora_8, vpt_deep 50, vpt_shallow 5, rand_h_adapter_8, adaptformer 32).
L, D, H = 12, 768, 3072
VIT_B_NO_HEAD = 85_798_656
BIASES = L * (3 * D + D + H + D + 2 * D) + D + D  # qkv, proj, fc1, fc2, norm1, norm2; patch embedding, final norm
SELECTIVE = {
    "bitfit": BIASES,
    "ln": L * 2 * 2 * D + 2 * D,  # gamma and beta of norm1, norm2 and the final norm
    "ssf": 2 * BIASES,  # a scale and a shift per output channel of everything with a bias
    "difffit": BIASES + L * 2 * D + D + L * 2 * D,
}  # biases, LayerNorm gammas, a scale per branch


def lora_qv(r: int) -> int:
    """A (r x d) and B (d x r) on the q and on the v slice of each block's qkv."""
    return L * 2 * (D * r + r * D)


def vpt(p: int, deep: bool = True) -> int:
    return (L if deep else 1) * p * D


def adapters(per_block: int, b: int) -> int:
    """Bottleneck adapters of width b, down (d b + b) and up (b d + d): Houlsby 2 per block, AdaptFormer 1."""
    return L * per_block * (D * b + b + b * D + D)


VIT_B_COUNTS = [  # (method, options, trainable without the head)
    ("full", {}, VIT_B_NO_HEAD),
    ("lora", {"r": 1}, lora_qv(1)),
    ("lora", {"r": 8}, lora_qv(8)),
    ("vpt", {"prompt_tokens": 50}, vpt(50)),
    ("vpt", {"prompt_tokens": 5, "deep": False}, vpt(5, deep=False)),
    ("houlsby", {"bottleneck": 8}, adapters(2, 8)),
    ("adaptformer", {"bottleneck": 32}, adapters(1, 32)),
    *((method, {}, count) for method, count in SELECTIVE.items()),
]


def ids(rows):
    return [f"{method}-{'-'.join(f'{k}={v}' for k, v in options.items())}" for method, options, _ in rows]


def trainable_without_head(model: dict, method: str, options: dict) -> int:
    from peftlab.config.schema import load_config
    from peftlab.tuners.params import count_parameters

    counts = count_parameters(
        load_config(overrides={"model": {**model, "num_classes": 1000}, "method": {"name": method, **options}})
    )
    return counts["trainable"] - counts["head"]


def test_the_formulas_give_petl_visions_figures():
    """As PETL_Vision states them: LoRA q,v 36,864 r; VPT-deep 9,216 p; Houlsby 24 (1,537 b + 768); AdaptFormer
    12 (1,537 b + 768); BitFit 102,912; LN 38,400; SSF 205,824; DiffFit 140,544."""
    assert (lora_qv(1), vpt(1), adapters(2, 8), adapters(1, 32)) == (
        36_864,
        9_216,
        24 * (1_537 * 8 + 768),
        12 * (1_537 * 32 + 768),
    )
    assert SELECTIVE == {"bitfit": 102_912, "ln": 38_400, "ssf": 205_824, "difffit": 140_544}


@pytest.mark.parametrize("method, options, expected", VIT_B_COUNTS, ids=ids(VIT_B_COUNTS))
def test_vit_b16_counts_equal_petl_visions(method, options, expected):
    assert trainable_without_head({"name": "vit_base_patch16_224"}, method, options) == expected


# CLIP-B/16 (timm's vit_base_patch16_clip_224): a LayerNorm before the blocks (norm_pre) and no bias on the
# patch embedding. PETL_Vision's tune_output/clip_fs_imagenet records these figures (no SSF run there).
CLIP_COUNTS = [
    ("full", {}, VIT_B_NO_HEAD + 2 * D - D),  # 85,799,424
    ("lora", {"r": 32}, lora_qv(32)),
    ("vpt", {"prompt_tokens": 50}, vpt(50)),
    ("houlsby", {"bottleneck": 32}, adapters(2, 32)),
    ("adaptformer", {"bottleneck": 32}, adapters(1, 32)),
    ("bitfit", {}, SELECTIVE["bitfit"]),  # norm_pre's bias in place of the patch embedding's
    ("ln", {}, SELECTIVE["ln"] + 2 * D),  # 39,936
    ("difffit", {}, SELECTIVE["difffit"] + D),  # norm_pre's gamma: 141,312
]


@pytest.mark.parametrize("method, options, expected", CLIP_COUNTS, ids=ids(CLIP_COUNTS))
def test_clip_b16_counts_equal_petl_visions(method, options, expected):
    assert trainable_without_head({"name": "vit_base_patch16_clip_224"}, method, options) == expected


def test_dinov2_b14_at_224_px_differs_from_vit_b16_only_by_its_embeddings_and_layerscale():
    """PETL_Vision builds DINOv2 at 224 px (vit_base_patch14_dinov2_petl): 16 x 16 patches of 14 px, and
    LayerScale's two gammas per block, which only full fine-tuning trains."""
    full = VIT_B_NO_HEAD + (257 - 197) * D - (16 * 16 - 14 * 14) * 3 * D + L * 2 * D
    dinov2 = {"name": "vit_base_patch14_dinov2", "img_size": 224}
    assert trainable_without_head(dinov2, "full", {}) == full == 85_724_928
    assert {method: trainable_without_head(dinov2, method, {}) for method in SELECTIVE} == SELECTIVE


def test_ssf_on_clip_shifts_the_bias_less_patch_embedding_and_scales_norm_pre():
    """SSF scales and shifts the patch embedding's output, which has no bias, as PETL_Vision's code does
    (205,824 there); peftlab's also wraps norm_pre, as LN tunes it: 2 x 768 more. Only the merge refuses."""
    assert trainable_without_head({"name": "vit_base_patch16_clip_224"}, "ssf", {}) == 205_824 + 2 * 768


SIZED = [
    ("lora", {}),
    ("lora", {"r": 4, "target_modules": "extended"}),
    ("lora", {"target_modules": "all-linear", "rank_pattern": {"fc1": 2}}),
    ("lora", {"rank_strategy": "linear_decay", "rank_budget": 40}),
    ("lora", {"target_modules": ["blocks\\.0\\.attn\\.qkv"]}),  # the whole fused qkv
    ("dora", {}),
    ("dora", {"target_modules": "extended"}),
]
SIZED_MODELS = [
    TINY_MODEL,
    {"name": "beit_base_patch16_224", "depth": 2, "img_size": 32, "patch_size": 8},
    {"name": "swin_tiny_patch4_window7_224"},
]


@pytest.mark.parametrize("model", SIZED_MODELS, ids=[m["name"] for m in SIZED_MODELS])
@pytest.mark.parametrize("method, options", SIZED, ids=[f"{m}-{i}" for i, (m, _) in enumerate(SIZED)])
def test_a_method_counted_without_applying_it_counts_what_applying_it_holds(model, method, options):
    """LoRA's and DoRA's ``size`` hook (counted from the plan, no PEFT) gives the counts of PEFT's layers."""
    from peftlab.config.schema import load_config
    from peftlab.tuners.params import count_parameters, sized_without_applying

    try:
        cfg = load_config(overrides={"model": {**model, "num_classes": 7}, "method": {"name": method, **options}})
        expected = applied_counts(cfg)
    except Exception as err:  # a model this preset matches nothing in: refused alike without applying
        with pytest.raises(type(err)):
            count_parameters(cfg)
        return
    counts = count_parameters(cfg)
    assert {k: counts[k] for k in expected} == expected
    assert counts["adapter"] == counts["trainable"] - counts["head"] > 0
    model_params = sum(p.numel() for p in meta_of(cfg).parameters())
    assert model_params + sum(sized_without_applying(cfg.method, meta_of(cfg))) == expected["total"] + expected["head"]


def test_a_count_is_kept_but_the_memory_is_read_at_each_check(monkeypatch):
    """A run's size is counted once per process (``params.COUNTED``); its refusal still reads the memory available
    at each check, and a Hugging Face directory's model is counted each time."""
    import types

    from peftlab.config.schema import load_config
    from peftlab.tuners import params, size_check
    from peftlab.utils.errors import ConfigError

    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": "lora", "r": 4}})
    monkeypatch.setattr(params, "COUNTED", {})
    monkeypatch.setattr(size_check.psutil, "virtual_memory", lambda: types.SimpleNamespace(available=2**40))
    params.check_model_size(cfg.model, cfg.method, 10)
    (totals,) = params.COUNTED.values()
    model = params.meta_backbone(cfg.model, 10)
    assert totals == (params.bound_total(model, cfg.method), params.applied_total(model, cfg.method))
    monkeypatch.setattr(params, "meta_backbone", lambda *args: pytest.fail("counted again"))
    params.check_model_size(cfg.model, cfg.method, 10)  # from the count kept
    monkeypatch.setattr(size_check.psutil, "virtual_memory", lambda: types.SimpleNamespace(available=1000))
    with pytest.raises(ConfigError, match="expected a model that fits"):
        params.check_model_size(cfg.model, cfg.method, 10)
    assert params.size_key(types.SimpleNamespace(source="hf"), cfg.method, 10) is None
