"""PEFT's LoRA relatives (DoRA, VeRA, IA3, LoHa, LoKr, OFT, BOFT), table-driven: parameter counts against
hand formulas, q/k/v slices, merge into a plain timm model, PEFT-format export, quantized bases
and their own bad options. Identity at step 0 and foreign keys: tests/tuners/test_tuners.py."""

import copy

import pytest
import timm
import torch
from testkit import TINY_MODEL

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.training.export import write_peft_adapter
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.tuners.params import count_parameters
from peftlab.utils.errors import ConfigError

NUM_CLASSES = 5
RELATIVES = ["dora", "vera", "ia3", "loha", "lokr", "oft", "boft"]
# module -> (in_features, out_features) for embedding width d; the preset's modules per block
SHAPES = {"q": (1, 1), "k": (1, 1), "v": (1, 1), "proj": (1, 1), "fc1": (1, 4), "fc2": (4, 1)}
PRESETS = {
    "standard": ["q", "v"],
    "extended": ["q", "k", "v", "proj"],
    "all-linear": ["q", "k", "v", "proj", "fc1", "fc2"],
}


def closest_factors(n: int) -> tuple[int, int]:
    """The divisor pair (m, n/m) of n closest to its square root, smaller first (LoKr's default split)."""
    m = max(f for f in range(1, int(n**0.5) + 1) if n % f == 0)
    return m, n // m


def module_formula(method: str, fan_in: int, fan_out: int, options: dict, feedforward: bool = False) -> int:
    """Trainable numbers one adapted Linear (fan_in -> fan_out) gets, by hand."""
    r = options.get("r", {"vera": 256, "oft": 0}.get(method, 8))
    if method == "dora":  # LoRA's A (r x in) and B (out x r), and a magnitude per output row
        return r * (fan_in + fan_out) + fan_out
    if method == "vera":  # b (out) and d (r); the shared projections A, B are frozen buffers
        return fan_out + r
    if method == "ia3":  # one scale per output, or per input of a feed-forward module
        return fan_in if feedforward else fan_out
    if method == "loha":  # two rank-r products w1a w1b and w2a w2b
        return 2 * r * (fan_in + fan_out)
    if method == "lokr":  # w1 (out_l x in_m) full; w2 (out_k x in_n) full, or rank r below half its size
        (in_m, in_n), (out_l, out_k) = closest_factors(fan_in), closest_factors(fan_out)
        w2 = out_k * in_n if r >= max(out_k, in_n) / 2 else r * (out_k + in_n)
        return out_l * in_m + w2
    if method == "oft":  # in / b blocks, each a skew-symmetric b x b matrix: b(b-1)/2 numbers
        b = options.get("oft_block_size", 32) or fan_in // r
        return fan_in // b * b * (b - 1) // 2
    if method == "boft":  # per butterfly factor in / b blocks stored whole (b x b), and a scale per output
        b = options.get("boft_block_size", 4) or fan_in // options["boft_block_num"]
        return options.get("boft_n_butterfly_factor", 1) * fan_in // b * b * b + fan_out
    raise KeyError(method)


def body_formula(method: str, depth: int, d: int, options: dict) -> int:
    if method == "ia3" and options.get("target_modules", "standard") == "standard":  # the paper's k, v, fc2's input
        per_block = [("k", False), ("v", False), ("fc2", True)]
    else:
        ff = set(options.get("feedforward_modules", []))
        per_block = [(m, m in ff) for m in PRESETS[options.get("target_modules", "standard")]]
    return depth * sum(
        module_formula(method, SHAPES[m][0] * d, SHAPES[m][1] * d, options, feedforward) for m, feedforward in per_block
    )


COUNT_ROWS = [(m, {}) for m in RELATIVES] + [
    ("dora", {"r": 4, "target_modules": "all-linear"}),
    ("vera", {"r": 16, "target_modules": "extended"}),
    ("ia3", {"target_modules": "all-linear", "feedforward_modules": []}),
    ("loha", {"r": 2, "target_modules": "extended"}),
    ("lokr", {"r": 2, "target_modules": "all-linear"}),
    ("lokr", {"r": 16}),
    ("oft", {"oft_block_size": 16, "target_modules": "all-linear"}),
    ("oft", {"r": 4, "oft_block_size": 0}),
    ("boft", {"boft_block_size": 8, "target_modules": "all-linear"}),
    ("boft", {"boft_block_num": 4, "boft_block_size": 0}),
]


def count_options(options: dict) -> dict:
    """The options as config overrides (IA3's feedforward names as anchored patterns)."""
    if "feedforward_modules" in options:
        return {**options, "feedforward_modules": [rf"blocks\.\d+\.mlp\.{m}" for m in options["feedforward_modules"]]}
    return options


@pytest.mark.parametrize("method, options", COUNT_ROWS)
@pytest.mark.parametrize(
    "model, depth, d, classes",
    [
        ("tiny", TINY_MODEL["depth"], TINY_MODEL["embed_dim"], 10),
        ("deit_tiny_patch16_224", 12, 192, 10),
    ],
)
def test_trainable_parameters_match_the_hand_formula(method, options, model, depth, d, classes):
    model_cfg = dict(TINY_MODEL) if model == "tiny" else {"name": model}
    cfg = load_config(
        overrides={"model": {**model_cfg, "num_classes": classes}, "method": {"name": method, **count_options(options)}}
    )
    counts = count_parameters(cfg)
    head = d * classes + classes
    assert counts["head"] == head
    assert counts["adapter"] == body_formula(method, depth, d, options)
    plain = sum(p.numel() for p in build_backbone(cfg.model, classes).parameters()) if model == "tiny" else 5_526_346
    assert counts["total"] == plain + counts["adapter"]


def make(method: str, quant: dict | None = None, **options):
    cfg = load_config(
        overrides={"model": TINY_MODEL, "method": {"name": method, **options}, "quant": quant or {"mode": "none"}}
    )
    torch.manual_seed(0)
    model = build_backbone(cfg.model, NUM_CLASSES)
    base = copy.deepcopy(model).eval()
    return base, apply_tuner(model, cfg.method, TunerContext.for_checks(cfg))


def images(n=4):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def perturb(tuner):
    """Move the method's own weights (not the head) away from their start, so a merge is not trivially equal."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in tuner.trainable_parameters().items():
            if tuner.adapter_prefix in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)


# q and v slices only (IA3's standard is its paper's k, v and fc2); IA3 with no feed-forward module among them
QV = {"ia3": {"target_modules": [r"blocks\.\d+\.attn\.qkv\.[qv]"], "feedforward_modules": []}}


@pytest.mark.parametrize("method", RELATIVES)
def test_q_and_v_slices_merge_into_a_plain_timm_model_changing_only_their_rows(method):
    base, tuner = make(method, **QV.get(method, {}))
    perturb(tuner)
    tuner.model.eval()
    merged = tuner.merged_model().eval()
    assert type(merged) is timm.models.vision_transformer.VisionTransformer
    with torch.no_grad():
        torch.testing.assert_close(merged(images()), tuner.model(images()), rtol=1e-4, atol=1e-5)
    d = TINY_MODEL["embed_dim"]
    before, after = base.state_dict(), merged.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        if key.endswith("attn.qkv.weight"):
            assert torch.equal(before[key][d : 2 * d], after[key][d : 2 * d]), f"k rows of {key} changed"
            assert not torch.equal(before[key][:d], after[key][:d]) and not torch.equal(
                before[key][2 * d :], after[key][2 * d :]
            )
        elif not key.endswith("attn.qkv.bias"):
            assert torch.equal(before[key], after[key]), f"{key} changed"


# whole modules of timm's model: PEFT's own config and weights load on the plain base
WHOLE = {
    "dora": {"r": 4},
    "vera": {"r": 16},
    "loha": {"r": 4},
    "lokr": {"r": 4},
    "oft": {"oft_block_size": 16},
    "boft": {"boft_block_size": 8},
    "ia3": {"feedforward_modules": [r"blocks\.\d+\.mlp\.fc2"]},
}
WHOLE_TARGETS = [r"blocks\.\d+\.attn\.qkv", r"blocks\.\d+\.attn\.proj", r"blocks\.\d+\.mlp\.fc2"]


@pytest.mark.parametrize(
    "method, options",
    [(m, {**o, "target_modules": WHOLE_TARGETS}) for m, o in WHOLE.items()]
    + [("dora", {"r": 4}), ("dora", {"r": 4, "target_modules": "extended"}), ("ia3", {})],
)
def test_peft_from_pretrained_on_plain_timm_gives_peftlabs_outputs(tmp_path, method, options):
    from peft import PeftModel

    base, tuner = make(method, **options)
    perturb(tuner)
    assert write_peft_adapter(tuner, tmp_path)
    tuner.model.eval()
    with torch.no_grad():
        expected, plain = tuner.model(images()), base(images())
    assert not torch.allclose(expected, plain, atol=1e-4)  # the adapter changed something
    loaded = PeftModel.from_pretrained(base, tmp_path).eval()  # (wraps base in place)
    assert not any(n.endswith("qkv.q") for n, _ in loaded.named_modules())  # timm's own fused qkv
    with torch.no_grad():
        torch.testing.assert_close(loaded(images()), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["vera", "loha", "lokr", "oft", "boft"])
def test_slices_without_an_exact_fused_form_have_no_peft_format(tmp_path, method):
    _, tuner = make(method)
    assert not write_peft_adapter(tuner, tmp_path) and not any(tmp_path.iterdir())


@pytest.mark.parametrize("method", RELATIVES)
def test_adapter_file_round_trip(method):
    _, tuner = make(method, **QV.get(method, {}))
    perturb(tuner)
    state = tuner.adapter_state_dict()
    _, fresh = make(method, **QV.get(method, {}))
    fresh.load_adapter_state_dict(state)
    tuner.model.eval(), fresh.model.eval()
    with torch.no_grad():
        assert torch.equal(fresh.model(images()), tuner.model(images()))


@pytest.mark.parametrize("method", sorted(set(RELATIVES) - {"dora"}))
def test_a_quantized_base_is_one_line_naming_the_method(method):
    with pytest.raises(ConfigError, match=rf"quant.mode='nf4' is invalid: expected 'none' for method '{method}'"):
        load_config(overrides={"method": {"name": method}, "quant": {"mode": "nf4"}})


def test_dora_on_an_nf4_base_starts_as_it_and_merges():
    pytest.importorskip("bitsandbytes")
    from peft.tuners.lora import bnb as lora_bnb

    _, tuner = make("dora", {"mode": "nf4"}, r=4)
    adapted = [m for m in tuner.model.modules() if hasattr(m, "lora_magnitude_vector") and m.lora_A]
    assert adapted and all(type(m) is lora_bnb.Linear4bit and m.use_dora["default"] for m in adapted)
    tuner.model.eval()
    with torch.no_grad():
        start = tuner.model(images())
        torch.testing.assert_close(tuner.merged_model(quantized=True).eval()(images()), start, rtol=1e-4, atol=1e-4)
    perturb(tuner)
    with torch.no_grad():
        expected = tuner.model(images())
        assert not torch.allclose(expected, start, atol=1e-3)
        torch.testing.assert_close(tuner.merged_model().eval()(images()), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "method, options, message",
    [
        (
            "oft",
            {"oft_block_size": 24},
            r"method.oft_block_size=24 is invalid: expected a divisor of the input width 64",
        ),
        ("oft", {"r": 4}, r"method.oft_block_size=32 is invalid: expected 0 when method.r is set \(4\)"),
        (
            "boft",
            {"boft_block_size": 24},
            r"method.boft_block_size=24 is invalid: expected a divisor of the input "
            r"width 64",
        ),
        (
            "boft",
            {"boft_block_num": 4},
            r"method.boft_block_size=4 is invalid: expected 0 when "
            r"method.boft_block_num is set",
        ),
        ("boft", {"boft_dropout": 1.0}, r"method.boft_dropout=1.0 is invalid: expected a value in \[0, 1\)"),
        ("ia3", {"feedforward_modules": [r"blocks\.\d+\.mlp\.fc1"]}, r"method.feedforward_modules entry .* matches no"),
        (
            "ia3",
            {"target_modules": "extended"},
            r"method.target_modules='extended' is invalid: expected one of standard "
            r"\(k, v and fc2, the paper's places\), all-linear or a list",
        ),
        ("vera", {"r": 0}, r"method.r=0 is invalid: expected an integer > 0"),
        ("loha", {"alpha": -1}, r"method.alpha=-1.0 is invalid: expected a number > 0"),
        ("lokr", {"decompose_factor": 0}, r"method.decompose_factor=0 is invalid"),
        ("dora", {"target_modules": [r"blocks\.\d+\.attn\.nothing"]}, r"matches no Linear module"),
    ],
)
def test_bad_options_are_one_line_config_errors(method, options, message):
    with pytest.raises(ConfigError, match=message) as err:
        make(method, **options)
    assert "\n" not in str(err.value)


def test_boft_refuses_a_butterfly_peft_would_silently_drop(monkeypatch):
    import peftlab.tuners.boft.model as boft

    monkeypatch.setattr(boft, "butterfly_available", lambda: False)
    with pytest.raises(
        ConfigError,
        match=r"method.boft_n_butterfly_factor=2 is invalid: expected 1 on this machine: "
        r"PEFT builds more butterfly factors only with its CUDA extension fbd_cuda",
    ):
        make("boft", boft_n_butterfly_factor=2)


def test_without_its_cuda_extension_peft_builds_one_butterfly_factor_whatever_the_config_says():
    """Why peftlab refuses more than one factor where PEFT's fbd_cuda does not load (these CPU machines)."""
    from peft import BOFTConfig, get_peft_model

    from peftlab.tuners.boft.model import butterfly_available

    if butterfly_available():
        pytest.skip("PEFT's fbd_cuda extension loads here: it builds the factors asked for")
    model = torch.nn.Sequential(torch.nn.Linear(64, 8))
    config = BOFTConfig(boft_block_size=8, boft_n_butterfly_factor=3, target_modules=["0"], bias="none")
    layer = get_peft_model(model, config).base_model.model[0]
    assert layer.boft_R["default"].shape == (1, 8, 8, 8)  # one factor of 8 blocks, not 3


@pytest.mark.parametrize(
    "options, message",
    [
        ({"boft_block_size": 8, "boft_n_butterfly_factor": 4}, None),  # 8 x 2^3 = 64, the input width
        (
            {"boft_block_size": 16, "boft_n_butterfly_factor": 4},
            r"expected an even block size \(16\) that times 2\^3 "
            r"divides the input width 64",
        ),
        ({"boft_block_num": 16, "boft_block_size": 0, "boft_n_butterfly_factor": 2}, None),  # blocks of 4
        ({"boft_block_num": 64, "boft_block_size": 0, "boft_n_butterfly_factor": 2}, r"an even block size \(1\)"),
    ],
)
def test_boft_checks_peft_butterfly_rule_where_the_extension_loads(monkeypatch, options, message):
    import peftlab.tuners.boft.model as boft
    from peftlab.tuners.base import check_config

    monkeypatch.setattr(boft, "butterfly_available", lambda: True)
    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": "boft", **options}})
    model = build_backbone(cfg.model, NUM_CLASSES)
    if message is None:
        check_config(cfg.method, model, TunerContext.for_checks(cfg))
    else:
        with pytest.raises(ConfigError, match=message):
            check_config(cfg.method, model, TunerContext.for_checks(cfg))


def test_boft_on_a_machine_without_cuda_never_compiles_pefts_extension(tmp_path, monkeypatch):
    """PEFT cached a failed build of fbd_cuda as "not tried": each layer compiled again, leaving a
    build directory and torch's "No CUDA runtime is found" on stderr."""
    import peft.tuners.boft.layer as boft_layer

    if torch.cuda.is_available():
        pytest.skip("with CUDA PEFT builds fbd_cuda, as it should")
    monkeypatch.setattr(boft_layer, "_FBD_CUDA", None)  # as a fresh process has it
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    _, tuner = make("boft")
    assert not (tmp_path / "extensions").exists()
    layers = [m for m in tuner.model.modules() if isinstance(m, boft_layer.BOFTLayer)]
    assert layers and not any(layer.fbd_cuda_available for layer in layers)


def test_ia3_presets_mean_the_papers_places_on_an_hf_model_too(hf_dir):
    """k, v and the MLP's second Linear (rescaled on its input) of every layer, by the names the
    presets know them by (peftlab.models.families: an HF layer's k_proj is blocks.N.attn.qkv.k)."""
    cfg = load_config(overrides={"model": {"source": "hf", "path": str(hf_dir)}, "method": {"name": "ia3"}})
    tuner = apply_tuner(build_backbone(cfg.model, NUM_CLASSES), cfg.method, TunerContext.for_checks(cfg))
    from peft.tuners.ia3 import IA3Layer

    layers = {n.rpartition("layers.")[2]: m for n, m in tuner.model.named_modules() if isinstance(m, IA3Layer)}
    assert set(layers) == {
        f"{i}.{part}" for i in range(2) for part in ("attention.k_proj", "attention.v_proj", "mlp.fc2")
    }
    assert {name for name, layer in layers.items() if layer.is_feedforward} == {"0.mlp.fc2", "1.mlp.fc2"}
