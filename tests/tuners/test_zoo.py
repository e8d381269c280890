"""The methods peftlab writes by hand (BitFit, LayerNorm tuning, SSF, DiffFit, adapters, VPT), table-driven:
parameter counts against hand formulas, what trains, what merges, what is refused."""

import copy

import pytest
import timm
import torch
from testkit import TINY_MODEL

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.tuners.params import count_parameters
from peftlab.utils.errors import ConfigError

NUM_CLASSES = 5
ZOO = ["bitfit", "ln", "ssf", "difffit", "houlsby", "pfeiffer", "adaptformer", "vpt"]
ADAPTERS = {"houlsby": 2, "pfeiffer": 1, "adaptformer": 1}  # adapters per block


def make(method: str, **options):
    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": method, **options}})
    torch.manual_seed(0)
    model = build_backbone(cfg.model, NUM_CLASSES)
    base = copy.deepcopy(model).eval()
    return base, apply_tuner(model, cfg.method, TunerContext.for_checks(cfg))


def images(n=4):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def train_steps(tuner, steps=3):
    opt = torch.optim.AdamW(tuner.trainable_parameters().values(), lr=1e-2, weight_decay=0.1)
    tuner.model.train()
    x, y = images(8), torch.arange(8) % NUM_CLASSES
    for _ in range(steps):
        torch.nn.functional.cross_entropy(tuner.model(x), y).backward()
        opt.step()
        opt.zero_grad()


def body_formula(method: str, depth: int, d: int, hidden: int, options: dict) -> int:
    """Trainable parameters outside the head, counted by hand for a timm ViT (cls token, qkv bias,
    final norm, no register tokens): per block qkv (3d), proj (d), fc1 (hidden), fc2 (d) and two
    LayerNorms (d each); once, the patch embedding's d outputs and the final LayerNorm."""
    if method == "bitfit":  # every bias: the block's Linears and LayerNorms, the patch embedding, the final norm
        return depth * (3 * d + d + hidden + d + 2 * d) + d + d
    if method == "ln":  # gamma and beta of norm1, norm2 and the final norm
        return depth * 2 * (2 * d) + 2 * d
    if method == "ssf":  # a scale and a shift per output channel of everything bitfit has a bias on
        return 2 * body_formula("bitfit", depth, d, hidden, options)
    if method == "difffit":  # bitfit's biases, the LayerNorms' gammas (2 per block, the final norm), 2 scales per block
        return body_formula("bitfit", depth, d, hidden, options) + depth * 2 * d + d + depth * 2 * d
    if method in ADAPTERS:  # down (d x m + m) and up (m x d + d) per adapter
        m = options.get("bottleneck", 64 if method == "adaptformer" else 8)
        return depth * ADAPTERS[method] * (2 * d * m + m + d)
    if method == "vpt":  # n prompt tokens of width d, once (shallow) or per block (deep, the default)
        return (depth if options.get("deep", True) else 1) * options.get("prompt_tokens", 10) * d
    raise KeyError(method)


# (method, options) rows; the formula takes the same options
COUNT_ROWS = [
    ("bitfit", {}),
    ("ln", {}),
    ("ssf", {}),
    ("difffit", {}),
    ("houlsby", {}),
    ("houlsby", {"bottleneck": 3}),
    ("pfeiffer", {}),
    ("pfeiffer", {"bottleneck": 16}),
    ("adaptformer", {}),
    ("adaptformer", {"bottleneck": 8}),
    ("vpt", {}),
    ("vpt", {"deep": False}),
    ("vpt", {"prompt_tokens": 3, "deep": True}),
]


@pytest.mark.parametrize("method, options", COUNT_ROWS)
@pytest.mark.parametrize(
    "model, depth, d, classes",
    [
        ("tiny", TINY_MODEL["depth"], TINY_MODEL["embed_dim"], NUM_CLASSES),
        ("deit_tiny_patch16_224", 12, 192, 10),
    ],
)
def test_trainable_parameters_match_the_hand_formula(method, options, model, depth, d, classes):
    model_cfg = dict(TINY_MODEL) if model == "tiny" else {"name": model}
    cfg = load_config(overrides={"model": {**model_cfg, "num_classes": classes}, "method": {"name": method, **options}})
    counts = count_parameters(cfg)
    head = d * classes + classes
    assert counts["head"] == head
    assert counts["trainable"] == body_formula(method, depth, d, 4 * d, options) + head
    plain = sum(p.numel() for p in build_backbone(cfg.model, classes).parameters()) if model == "tiny" else 5_526_346
    added = {"bitfit": 0, "ln": 0, "difffit": depth * 2 * d}.get(method, counts["trainable"] - head)  # selective
    assert counts["total"] == plain + added
    # the adapter is what the method adds (SSF's scales and shifts, DiffFit's gammas; none for BitFit and LN);
    # the base's own parameters it trains are counted in place (BitFit's biases, DiffFit's biases and LayerNorms)
    assert counts["adapter"] == (None if method in ("bitfit", "ln") else added)
    biases = body_formula("bitfit", depth, d, 4 * d, options)
    in_place = {
        "bitfit": biases,
        "ln": body_formula("ln", depth, d, 4 * d, options),
        "difffit": biases + depth * 2 * d + d,
    }.get(method, 0)  # difffit: and the LayerNorms' weights
    assert counts["in_place"] == in_place
    assert counts["trainable"] == (counts["adapter"] or 0) + counts["in_place"] + head


@pytest.mark.parametrize(
    "method, kept",
    [
        ("bitfit", lambda name: name.endswith(".bias")),
        ("ln", lambda name: ".norm" in "." + name and name.endswith((".weight", ".bias"))),
    ],
)
def test_selective_methods_change_only_their_parameters_and_the_head(method, kept):
    base, tuner = make(method)
    train_steps(tuner)
    after = tuner.model.state_dict()
    changed = {key for key, value in base.state_dict().items() if not torch.equal(value, after[key])}
    expected = {key for key in after if key.startswith("head.") or kept(key)}
    assert changed == expected
    assert tuner.merged_model() is None and not tuner.is_adapter  # the trained model is the merged model


@pytest.mark.parametrize("method", ZOO)
def test_a_quantized_base_is_one_line_naming_the_method(method):
    with pytest.raises(ConfigError, match=rf"quant.mode='nf4' is invalid: expected 'none' for method '{method}'"):
        load_config(overrides={"method": {"name": method}, "quant": {"mode": "nf4"}})


def perturb(tuner, pattern: str):
    """Give the method's own parameters values away from their start, so a merge is not trivially equal."""
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in tuner.model.named_parameters():
            if pattern in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.2)


@pytest.mark.parametrize("method, pattern", [("ssf", "ssf_"), ("difffit", "difffit_gamma")])
def test_merge_folds_into_a_plain_timm_model(method, pattern):
    base, tuner = make(method)
    perturb(tuner, pattern)
    tuner.model.eval()
    merged = tuner.merged_model().eval()
    assert type(merged) is timm.models.vision_transformer.VisionTransformer
    assert merged.state_dict().keys() == base.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(merged(images()), tuner.model(images()), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(merged(images()), base(images()), atol=1e-3)  # the perturbation counts


def test_ssf_wraps_the_layers_of_the_paper():
    _, tuner = make("ssf")
    wrapped = {n.removesuffix(".ssf_scale") for n, _ in tuner.model.named_parameters() if n.endswith(".ssf_scale")}
    per_block = {"norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"}
    assert wrapped == {"patch_embed.proj", "norm"} | {
        f"blocks.{i}.{m}" for i in range(TINY_MODEL["depth"]) for m in per_block
    }
    assert set(tuner.trainable_parameters()) == {f"{n}.ssf_{p}" for n in wrapped for p in ("scale", "shift")} | {
        "head.weight",
        "head.bias",
    }


def test_difffit_scales_each_residual_branch_and_trains_biases_norms_scales_and_head():
    base, tuner = make("difffit")
    depth = TINY_MODEL["depth"]
    gammas = {f"blocks.{i}.{b}.difffit_gamma" for i in range(depth) for b in ("attn", "mlp")}
    plain = {n.replace(".base_layer", "") for n in tuner.trainable_parameters()} - gammas
    assert gammas <= set(tuner.trainable_parameters())
    assert plain == {
        k
        for k in base.state_dict()
        if k.endswith(".bias") or k.startswith("head.") or (".norm" in "." + k and k.endswith(".weight"))
    }
    perturb(tuner, "difffit_gamma")
    block, z = tuner.model.blocks[1], torch.randn(2, 5, TINY_MODEL["embed_dim"])
    with torch.no_grad():  # the scale multiplies the branch's output, before the residual addition
        torch.testing.assert_close(block.mlp(z), block.mlp.base_layer(z) * block.mlp.difffit_gamma)
        torch.testing.assert_close(block.attn(z), block.attn.base_layer(z) * block.attn.difffit_gamma)
    train_steps(tuner)
    merged, before = tuner.merged_model().state_dict(), base.state_dict()
    changed = {k for k in before if not torch.equal(before[k], merged[k])}
    folded = {f"blocks.{i}.{m}.weight" for i in range(depth) for m in ("attn.proj", "mlp.fc2")}
    assert changed == plain | folded  # the trained parameters, and the Linears the scales fold into


def hf_tuner(hf_dir, method):
    cfg = load_config(overrides={"model": {"source": "hf", "path": str(hf_dir)}, "method": {"name": method}})
    return apply_tuner(build_backbone(cfg.model, NUM_CLASSES), cfg.method, TunerContext.for_checks(cfg))


@pytest.mark.parametrize(
    "method, kept", [("bitfit", (".bias",)), ("ln", ("layernorm_before.", "layernorm_after.", "layernorm."))]
)
def test_selective_methods_take_an_hf_vit(hf_dir, method, kept):
    names = set(hf_tuner(hf_dir, method).trainable_parameters())
    assert names and all(
        n.startswith("model.classifier.") or (n.endswith(kept) if method == "bitfit" else any(k in n for k in kept))
        for n in names
    )
    assert {"model.classifier.weight", "model.classifier.bias"} <= names


@pytest.mark.parametrize("method", ["ssf", "difffit", "houlsby", "pfeiffer", "adaptformer", "vpt"])
def test_hand_written_methods_refuse_an_hf_model_in_one_line(hf_dir, method):
    with pytest.raises(ConfigError, match=rf"method.name='{method}' supports timm ViT, EVA, BEiT and Swin models"):
        hf_tuner(hf_dir, method)


@pytest.mark.parametrize(
    "method, places", [("houlsby", {"attn", "mlp"}), ("pfeiffer", {"mlp"}), ("adaptformer", {"mlp"})]
)
def test_adapters_sit_where_their_paper_puts_them_and_only_they_train(method, places):
    base, tuner = make(method, bottleneck=4)
    assert {n.split(".")[2] for n in tuner.trainable_parameters() if n.startswith("blocks.")} == places
    assert all(".adapter." in n for n in tuner.trainable_parameters() if not n.startswith("head."))
    train_steps(tuner)
    after = tuner.model.state_dict()
    for key, value in base.state_dict().items():  # the base under the adapters is bit-identical
        wrapped = next(k for k in after if k.replace(".base_layer", "") == key)
        assert torch.equal(value, after[wrapped]) != key.startswith("head."), key
    tuner.model.eval()
    with torch.no_grad():  # the adapters are on the path: the features moved
        assert not torch.allclose(tuner.model.forward_features(images()), base.forward_features(images()), atol=1e-4)
    assert tuner.merged_model() is None  # adapters do not merge: the recipe skips the merge check


@pytest.mark.parametrize("scale", [0.1, 0.5])
def test_adaptformer_adds_its_scaled_adapter_in_parallel_to_the_mlp(scale):
    _, tuner = make("adaptformer", bottleneck=4, scale=scale)
    perturb(tuner, "adapter.up")
    mlp = tuner.model.blocks[0].mlp
    z = torch.randn(2, 5, TINY_MODEL["embed_dim"])
    with torch.no_grad():
        torch.testing.assert_close(mlp(z), mlp.base_layer(z) + scale * mlp.adapter(z))
        assert mlp.adapter(z).abs().max() > 0


def test_houlsby_adapts_the_sublayer_outputs_in_sequence():
    _, tuner = make("houlsby", bottleneck=4)
    perturb(tuner, "adapter.up")
    attn = tuner.model.blocks[1].attn
    z = torch.randn(2, 5, TINY_MODEL["embed_dim"])
    with torch.no_grad():
        h = attn.base_layer(z)
        torch.testing.assert_close(attn(z), h + attn.adapter(h))


def block_inputs(model) -> list[torch.Tensor]:
    """The tokens each timm block (inside its prompt wrapper) receives, for ``images()``."""
    seen = []
    hooks = [
        block.base_layer.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
        for block in model.blocks
    ]
    with torch.no_grad():
        out = model.forward_features(images())
    for hook in hooks:
        hook.remove()
    return seen, out


@pytest.mark.parametrize("deep", [False, True])
def test_vpt_inserts_its_prompts_after_the_cls_token_without_position_embedding(deep):
    base, tuner = make("vpt", prompt_tokens=3, deep=deep)
    model = tuner.model.eval()
    seen, out = block_inputs(model)
    tokens = base.patch_embed.num_patches + base.num_prefix_tokens
    assert [x.shape[1] for x in seen] == [tokens + 3] * TINY_MODEL["depth"]
    assert out.shape == base.forward_features(images()).shape  # the last block dropped the prompt positions
    prompts = [block.prompt for block in model.blocks]
    with torch.no_grad():
        base_tokens = base.norm_pre(base._pos_embed(base.patch_embed(images())))
    assert torch.equal(seen[0][:, :1], base_tokens[:, :1]) and torch.equal(seen[0][:, 4:], base_tokens[:, 1:])
    for i, x in enumerate(seen):  # each block sees its own prompts as they are (deep), or the first block's outputs
        if deep or i == 0:
            assert torch.equal(x[:, 1:4], prompts[i].expand(4, -1, -1)), i
        else:
            assert prompts[i] is None and not torch.equal(x[:, 1:4], prompts[0].expand(4, -1, -1))
    bound = (6 / (3 * TINY_MODEL["patch_size"] ** 2 + TINY_MODEL["embed_dim"])) ** 0.5
    assert all(p.abs().max() <= bound and p.std() > bound / 4 for p in prompts if p is not None)  # uniform(±bound)


@pytest.mark.parametrize("deep", [False, True])
def test_vpt_cls_output_depends_on_every_prompt_and_training_leaves_the_base_untouched(deep):
    # no identity at initialization: prompts change the output by design
    base, tuner = make("vpt", prompt_tokens=2, deep=deep)
    model = tuner.model.eval()
    with torch.no_grad():
        before = model(images())
        assert not torch.allclose(before, base(images()), atol=1e-4)
        for block in model.blocks:  # a random change (a constant one over the features LayerNorm would remove)
            if block.prompt is not None:
                kept = block.prompt.clone()
                block.prompt.add_(torch.randn(block.prompt.shape, generator=torch.Generator().manual_seed(3)))
                assert not torch.allclose(model(images()), before, atol=1e-5)  # even the last block's prompts
                block.prompt.copy_(kept)
    names = set(tuner.trainable_parameters())
    expected = {f"blocks.{i}.prompt" for i in range(TINY_MODEL["depth"] if deep else 1)} | {"head.weight", "head.bias"}
    assert names == expected
    train_steps(tuner)
    after = tuner.model.state_dict()
    for key, value in base.state_dict().items():
        wrapped = key.replace("blocks.0.", "blocks.0.base_layer.").replace("blocks.1.", "blocks.1.base_layer.")
        assert torch.equal(value, after[wrapped]) != key.startswith("head."), key
    assert tuner.merged_model() is None


def test_vpt_prompts_follow_register_tokens():
    from peftlab.tuners import TUNERS

    cfg = load_config(overrides={"method": {"name": "vpt", "prompt_tokens": 2}})
    torch.manual_seed(0)
    kwargs = {k: v for k, v in TINY_MODEL.items() if k != "name"}
    model = timm.create_model(TINY_MODEL["name"], num_classes=NUM_CLASSES, reg_tokens=2, **kwargs)
    base = copy.deepcopy(model).eval()
    tuner = TUNERS["vpt"].load("apply")(model, cfg.method, TunerContext.for_checks(cfg))
    seen, _ = block_inputs(tuner.model.eval())
    with torch.no_grad():
        base_tokens = base._pos_embed(base.patch_embed(images()))
    assert base.num_prefix_tokens == 3  # cls and two registers
    assert torch.equal(seen[0][:, :3], base_tokens[:, :3]) and torch.equal(seen[0][:, 5:], base_tokens[:, 3:])
    assert torch.equal(seen[0][:, 3:5], tuner.model.blocks[0].prompt.expand(4, -1, -1))


@pytest.mark.parametrize(
    "method",
    ZOO
    + ["dora", "vera", "ia3", "loha", "lokr", "oft", "boft", "prompt_tuning", "prefix_tuning"]
    + ["fact_tt", "fact_tk", "convpass", "repadapter"],
)
def test_the_paper_describes_each_method_with_a_citation_in_the_bibliography(method):
    import re
    from pathlib import Path

    from peftlab.analysis.paper import build as paper
    from peftlab.analysis.paper import method_words
    from peftlab.analysis.report.literature import bib_keys

    keys = bib_keys((Path(paper.__file__).parent / "references.bib").read_text())
    cited = [key for group in re.findall(r"\\citep\{([^}]*)\}", method_words.WHAT[method]) for key in group.split(",")]
    assert cited and set(cited) <= keys


def test_every_built_in_method_but_the_peft_bridge_has_a_sentence_in_the_paper():
    from peftlab.analysis.paper import method_words
    from peftlab.tuners import TUNERS

    assert set(TUNERS) - {"peft"} - set(method_words.WHAT) == set()
