import os

import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file
from testkit import TINY_MODEL, cli_here, run_cli

from peftlab.config.sections import ModelConfig
from peftlab.models.backbones import build_backbone, input_spec_for
from peftlab.models.weights import convert_hf_state_dict, load_weights
from peftlab.utils.errors import ConfigError, WeightsError


def tiny_timm(**extra):
    return timm.create_model(
        TINY_MODEL["name"], num_classes=3, **{k: v for k, v in TINY_MODEL.items() if k != "name"}, **extra
    )


def test_deit_tiny_parameter_count_with_ten_classes():
    model = build_backbone(ModelConfig(name="deit_tiny_patch16_224"), num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 5_526_346


def test_overrides_reach_timm_and_the_input_spec(tiny_model_cfg):
    model = build_backbone(tiny_model_cfg, num_classes=7)
    assert len(model.blocks) == 2 and model.embed_dim == 64 and model.head.out_features == 7
    spec = input_spec_for(tiny_model_cfg)
    assert (spec.img_size, spec.in_chans) == (32, 3)


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="model.name='vit_nonexistent' is not a timm model"):
        build_backbone(ModelConfig(name="vit_nonexistent"), 10)


def test_local_timm_weights_load_except_the_head(tmp_path, tiny_model_cfg):
    source = tiny_timm()
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    model = build_backbone(ModelConfig(**{**TINY_MODEL, "pretrained": str(tmp_path / "w.safetensors")}), 5)
    for key, value in source.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(model.state_dict()[key], value), key
    assert model.head.out_features == 5


def test_hf_layout_gives_the_same_function_as_timm(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    hf_cfg = ViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        image_size=32,
        patch_size=8,
        num_labels=3,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )
    torch.manual_seed(0)
    hf = ViTForImageClassification(hf_cfg).eval()
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(tmp_path / "hf.safetensors"))
    model = tiny_timm().eval()
    load_weights(model, tmp_path / "hf.safetensors")
    converted = convert_hf_state_dict(hf.state_dict())
    model.head.load_state_dict({"weight": converted["head.weight"], "bias": converted["head.bias"]})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("drop key", "have a query weight but no k weight: expected q, k and v together"),
        ("drop value bias", "have a query bias but no v bias"),
        ("flat key", "the q, k and v weights have shapes (64, 64), (4096,), (64, 64); expected one 2-d shape"),
        ("2-d bias", "the q, k and v biases have shapes (64,), (64,), (1, 64); expected one 1-d shape"),
    ],
)
def test_hf_weights_with_a_broken_query_key_value_triple_are_one_line(tmp_path, damage, needle):
    from transformers import ViTConfig, ViTForImageClassification

    from peftlab.models.weights import check_weights_file

    hf_cfg = ViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    state = {k: v.contiguous() for k, v in ViTForImageClassification(hf_cfg).state_dict().items()}
    stem = "vit.layers.1.attention"  # transformers 5 names (4.x: encoder.layer.N.attention.attention.key)
    if damage == "drop key":
        del state[f"{stem}.k_proj.weight"]
    elif damage == "drop value bias":
        del state[f"{stem}.v_proj.bias"]
    elif damage == "flat key":
        state[f"{stem}.k_proj.weight"] = state[f"{stem}.k_proj.weight"].flatten()
    else:
        state[f"{stem}.v_proj.bias"] = state[f"{stem}.v_proj.bias"][None]
    save_file(state, str(tmp_path / "hf.safetensors"))
    for check in (load_weights, check_weights_file):
        with pytest.raises(WeightsError, match=r"^weights file .*hf.safetensors: weights of blocks.1") as err:
            check(tiny_timm(), tmp_path / "hf.safetensors")
        assert needle in str(err.value)


def test_hf_model_directory_builds_and_returns_logits(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    hf_cfg = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=16,
        patch_size=8,
        num_labels=4,
    )
    ViTForImageClassification(hf_cfg).save_pretrained(tmp_path / "hf")
    model = build_backbone(ModelConfig(source="hf", path=str(tmp_path / "hf")), num_classes=6)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 6)
    assert input_spec_for(ModelConfig(source="hf", path=str(tmp_path / "hf"))).img_size == 16


def test_mismatched_weights_name_file_and_first_key(tmp_path):
    other = timm.create_model(
        TINY_MODEL["name"], num_classes=3, img_size=32, patch_size=8, depth=2, embed_dim=96, num_heads=2
    )
    save_file(other.state_dict(), str(tmp_path / "wide.safetensors"))
    with pytest.raises(WeightsError, match=r"wide.safetensors does not match the model: key 'blocks.0.attn.proj.bias'"):
        load_weights(tiny_timm(), tmp_path / "wide.safetensors")
    deeper = timm.create_model(
        TINY_MODEL["name"], num_classes=3, img_size=32, patch_size=8, depth=3, embed_dim=64, num_heads=2
    )
    save_file(deeper.state_dict(), str(tmp_path / "deep.safetensors"))
    with pytest.raises(WeightsError, match=r"unexpected key 'blocks.2.attn.proj.bias'"):
        load_weights(tiny_timm(), tmp_path / "deep.safetensors")


def test_validate_reads_the_weights_header_and_refuses_what_train_would(tmp_path):
    """`peftlab validate` compares the weights file's shapes (its header only) with the model, as
    loading does: a deeper file is refused in one line naming the first extra key, a missing one too;
    the right one is valid, and a pos_embed of another size is resampled at load, not refused. The deeper file's
    refusal is the command's own process (its exit status and its one line on stderr); the rest is what validate
    computes, in this process."""
    import yaml

    deeper = timm.create_model(
        TINY_MODEL["name"], num_classes=3, img_size=32, patch_size=8, depth=3, embed_dim=64, num_heads=2
    )
    save_file(deeper.state_dict(), str(tmp_path / "deep.safetensors"))
    save_file(tiny_timm().state_dict(), str(tmp_path / "right.safetensors"))
    for name, expected in (
        ("deep", "unexpected key 'blocks.2.attn.proj.bias'"),
        ("right", None),
        ("gone", "does not exist"),
    ):
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            yaml.safe_dump({"model": {**TINY_MODEL, "pretrained": str(tmp_path / f"{name}.safetensors")}})
        )
        proc = (run_cli if name == "deep" else cli_here)("validate", str(config))
        if expected is None:
            assert proc.returncode == 0, proc.stderr
        else:
            assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
    bigger = yaml.safe_dump(
        {"model": {**TINY_MODEL, "img_size": 48, "pretrained": str(tmp_path / "right.safetensors")}}
    )
    (tmp_path / "bigger.yaml").write_text(bigger)
    assert cli_here("validate", str(tmp_path / "bigger.yaml")).returncode == 0


@pytest.mark.parametrize("dtype", [torch.bool, torch.int8, torch.uint8, torch.int64, torch.complex64])
def test_weights_of_a_non_floating_dtype_are_refused_by_load_and_validate(tmp_path, dtype):
    """Loading would cast them silently (booleans to 0/1 weights) and train on garbage."""
    from peftlab.models.weights import check_weights_file

    state = {k: (v != 0 if dtype == torch.bool else v.round()).to(dtype) for k, v in tiny_timm().state_dict().items()}
    save_file(state, str(tmp_path / "ints.safetensors"))
    name = str(dtype).removeprefix("torch.")
    for check in (load_weights, check_weights_file):
        with pytest.raises(
            WeightsError,
            match=rf"ints.safetensors does not match the model: key '.*' is {name} in "
            r"the file, expected a floating-point tensor",
        ):
            check(tiny_timm(), tmp_path / "ints.safetensors")


def test_float8_weights_are_judged_alike_by_load_and_validate(tmp_path):
    """validate read an F8_E4M3 header as int8 and refused a file that loading accepts (an exact upcast)."""
    from peftlab.models.weights import check_weights_file

    state = tiny_timm().state_dict()
    state["blocks.0.attn.qkv.weight"] = state["blocks.0.attn.qkv.weight"].to(torch.float8_e4m3fn)
    save_file(state, str(tmp_path / "f8.safetensors"))
    check_weights_file(tiny_timm(), tmp_path / "f8.safetensors")
    load_weights(tiny_timm(), tmp_path / "f8.safetensors")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_base_weights_are_refused_naming_the_file_and_key(tmp_path, bad):
    state = tiny_timm().state_dict()
    state["blocks.1.mlp.fc1.weight"][3, 4] = bad
    save_file(state, str(tmp_path / "nan.safetensors"))
    from peftlab.models.weights import check_weights_file

    for check in (load_weights, check_weights_file):  # validate refuses what loading refuses
        with pytest.raises(
            WeightsError,
            match=r"nan.safetensors holds non-finite values \(NaN or inf\) in "
            r"'blocks.1.mlp.fc1.weight'",
        ):
            check(tiny_timm(), tmp_path / "nan.safetensors")


@pytest.mark.parametrize("shape", [(1, 20, 64), (20, 64), (1, 17, 32), (2, 17, 64)])
def test_a_position_embedding_timm_cannot_resample_is_refused_by_load_and_validate(tmp_path, shape):
    """Another grid is resampled (square grids only); any other shape crashed inside timm."""
    from peftlab.models.weights import check_weights_file

    state = tiny_timm().state_dict()
    state["pos_embed"] = torch.zeros(shape)
    save_file(state, str(tmp_path / "pe.safetensors"))
    for check in (load_weights, check_weights_file):
        with pytest.raises(
            WeightsError,
            match=rf"does not match the model: key 'pos_embed' has shape "
            rf"\({', '.join(map(str, shape))},?\) in the file, \(1, 17, 64\) in the model",
        ):
            check(tiny_timm(), tmp_path / "pe.safetensors")
    state["pos_embed"] = torch.zeros(1, 1 + 9, 64)  # a 3 x 3 grid resamples to the model's 4 x 4
    save_file(state, str(tmp_path / "pe.safetensors"))
    load_weights(tiny_timm(), tmp_path / "pe.safetensors")


def test_missing_or_corrupt_weights_file(tmp_path):
    with pytest.raises(WeightsError, match=r"weights file .*nope.safetensors \(model.pretrained\) does not exist"):
        load_weights(tiny_timm(), tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(WeightsError, match="is not a readable safetensors file"):
        load_weights(tiny_timm(), tmp_path / "bad.safetensors")


def test_params_command_reports_documented_counts():
    proc = cli_here(
        "params",
        "deit_tiny_patch16_224",
        "--num-classes",
        "10",
        "--method",
        "lora",
        "--r",
        "8",
        "--targets",
        "standard",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    import json

    counts = json.loads(proc.stdout)
    assert counts["total"] == 5_526_346 + 73_728
    assert (counts["adapter"], counts["head"], counts["trainable"]) == (73_728, 1_930, 75_658)


def test_the_architecture_of_a_hub_model_is_built_without_its_weights(tmp_path):
    """weights=False (the pre-flight's random model, validate) downloads nothing, and validate of a
    hub config says valid offline, with nothing else on stderr (it tried the download, with the
    hub's five retries on stderr for 50 s, and then refused it)."""
    model = build_backbone(ModelConfig(**{**TINY_MODEL, "pretrained": "hub"}), 10, weights=False)
    assert sum(p.numel() for p in model.parameters()) > 0
    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({"model": {**TINY_MODEL, "pretrained": "hub"}, "data": {"name": "fashion_mnist"}}))
    proc = run_cli("validate", str(config))
    assert proc.returncode == 0 and proc.stdout.strip() == f"{config}: valid", proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr


@pytest.mark.parametrize("content", ["{broken", '{"model_type": "no-such-model"}', "[]"])
def test_a_broken_hf_model_directory_is_one_line(tmp_path, content):
    from peftlab.models.backbones import input_spec_for
    from peftlab.utils.errors import WeightsError

    (tmp_path / "config.json").write_text(content)
    cfg = ModelConfig(source="hf", path=str(tmp_path))
    for call in (lambda: build_backbone(cfg, 10), lambda: input_spec_for(cfg)):
        with pytest.raises(WeightsError, match="not a loadable HF model directory") as err:
            call()
        assert "\n" not in str(err.value)


def test_validate_checks_an_hf_model_like_a_timm_one_without_transformers_chatter(tmp_path, hf_dir):
    """`peftlab validate` builds an HF ViT's architecture on the meta device (from_config: HF's
    from_pretrained refuses meta), so it validates, shows its ranks and prints no load report."""
    config = tmp_path / "hf.yaml"
    config.write_text(
        f"name: hf\nmodel: {{source: hf, path: '{hf_dir}', num_classes: 10}}\nmethod: {{name: lora, r: 4}}\n"
    )
    proc = run_cli("validate", str(config), "--show")
    assert proc.returncode == 0, proc.stderr
    assert "model.vit.layers.1.attention.v_proj: 4" in proc.stdout and "[transformers]" not in proc.stderr
    assert run_cli("validate", str(config)).stdout.strip() == f"{config}: valid"


def test_base_provenance_is_the_sha256_of_the_local_weights_file(tmp_path):
    """(Hub weights: tests/test_hub.py.)"""
    import hashlib

    from peftlab.models.backbones import base_provenance

    path = tmp_path / "w.safetensors"
    path.write_bytes(b"weights" * 1000)
    assert base_provenance(ModelConfig(**{**TINY_MODEL, "pretrained": str(path)}), None) == {
        "base_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "base_hub_repo": None,
        "base_hub_revision": None,
    }
    assert base_provenance(ModelConfig(**TINY_MODEL), None)["base_sha256"] is None  # random init


def swap_when_opened(monkeypatch, module, name, path, replacement):
    """Replace ``path`` by ``replacement`` the moment safetensors' ``module.name`` is first called: a swap after
    peftlab's checks, before the library opens the file."""
    original = getattr(module, name)
    swapped = []

    def opening(*args, **kwargs):
        if not swapped:
            swapped.append(os.replace(replacement, path))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, opening)
    return swapped


def test_a_weights_file_swapped_after_its_checks_is_not_what_is_read(tmp_path, monkeypatch):
    import safetensors
    import safetensors.torch

    from peftlab.models.weights import read_safetensors

    source = tiny_timm().state_dict()
    for module, name in ((safetensors.torch, "load_file"), (safetensors, "safe_open")):
        path, later = tmp_path / f"{name}.safetensors", tmp_path / f"{name}-later.safetensors"
        save_file(source, str(path))
        save_file({k: torch.zeros_like(v) for k, v in source.items()}, str(later))
        swapped = swap_when_opened(monkeypatch, module, name, path, later)
        if name == "load_file":
            loaded = read_safetensors(path)
        else:
            model = tiny_timm()
            load_weights(model, path)
            loaded = model.state_dict()
        assert swapped and torch.equal(loaded["pos_embed"], source["pos_embed"]), name
