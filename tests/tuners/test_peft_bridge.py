"""The PEFT bridge (``method.name: peft``): every PEFT type is a ✓ that runs or a one-line ✗, and every ✓
runs on a tiny timm ViT and a tiny GPT-2 through the family cell check (``testkit.check_cell``); its
options are its PEFT config class's own fields; the table it reads is the installed PEFT's."""

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from testkit import PEFT_TINY_OPTIONS as TINY_OPTIONS
from testkit import TINY_MODEL, assert_peft_loads, check_cell, hf_text_model, needs_fashion_mnist

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.tuners.peft_bridge import types
from peftlab.tuners.peft_bridge.types import NO_IDENTITY, NO_MERGE, REFUSED, applicable
from peftlab.utils.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 3
# whole modules of timm's ViT, so PEFT's own from_pretrained loads the PEFT-format files on the plain model
WHOLE = [r"blocks\.\d+\.attn\.proj", r"blocks\.\d+\.mlp\.fc2"]


def test_the_type_table_is_the_installed_pefts_and_the_docs_are_current():
    from importlib.metadata import version

    table = types.read_installed()
    hint = "run PYTHONPATH=src python -m peftlab.tuners.peft_bridge.types --write"
    assert types.table_text(table) == types.TABLE.read_text(), hint
    assert types.docs_text(table, version("peft")) == (REPO / types.DOCS).read_text(), hint


def test_every_peft_type_runs_or_says_why_not():
    from peft.utils.peft_types import PeftType

    assert set(types.peft_types()) == {t.value for t in PeftType}
    assert set(REFUSED) < set(types.peft_types()) and applicable()
    assert set(NO_MERGE) | set(NO_IDENTITY) <= set(applicable())
    assert all("\n" not in reason for reason in REFUSED.values())


def vit_cell(peft_type: str):
    method = {"name": "peft", "peft_type": peft_type, "options": TINY_OPTIONS.get(peft_type, {})}
    cfg = load_config(overrides={"model": TINY_MODEL, "method": {**method, "target_modules": WHOLE}})
    torch.manual_seed(0)
    base = build_backbone(cfg.model, NUM_CLASSES).eval()
    return cfg, base, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    hf_text_model("gpt2", NUM_CLASSES).save_pretrained(path)
    cfg = load_config(overrides={"model": {"source": "hf-text", "path": str(path), "num_classes": NUM_CLASSES}})
    return path, build_backbone(cfg.model, NUM_CLASSES).eval()


@pytest.mark.parametrize("peft_type", applicable())
def test_each_type_on_a_tiny_vit_passes_the_cell_check_and_peft_loads_its_files(peft_type, tmp_path):
    cfg, base, images = vit_cell(peft_type)
    tuner = apply_tuner(copy.deepcopy(base), cfg.method, TunerContext.for_checks(cfg))
    check_cell(tuner, base, images, tmp_path, identity=peft_type not in NO_IDENTITY)
    assert (tmp_path / "adapter_config.json").is_file()  # PEFT's from_pretrained loaded it (check_cell)
    assert (tuner.merged_model() is None) == (peft_type in NO_MERGE)


@pytest.mark.parametrize("peft_type", applicable())
def test_each_type_on_the_q_and_v_slices_of_a_tiny_gpt2_passes_the_cell_check(peft_type, gpt2, tmp_path):
    path, base = gpt2
    cfg = load_config(
        overrides={
            "model": {"source": "hf-text", "path": str(path), "num_classes": NUM_CLASSES},
            "method": {"name": "peft", "peft_type": peft_type, "options": TINY_OPTIONS.get(peft_type, {})},
        }
    )
    torch.manual_seed(0)
    tuner = apply_tuner(copy.deepcopy(base), cfg.method, TunerContext.for_checks(cfg))
    assert {n.rpartition(".")[2] for n, m in tuner.model.named_modules() if hasattr(m, "base_layer")} == {"q", "v"}
    tokens = torch.randint(3, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    check_cell(tuner, base, tokens, tmp_path, identity=peft_type not in NO_IDENTITY)


@pytest.mark.parametrize("peft_type", ["RANDLORA", "LILY"])
def test_matrices_shared_by_every_layer_write_and_load_as_an_adapter_file(peft_type, tmp_path):
    """Their shared matrices appear under each layer's key; safetensors refuses shared memory."""
    cfg, base, images = vit_cell(peft_type)
    tuner = apply_tuner(copy.deepcopy(base), cfg.method, TunerContext.for_checks(cfg))
    with torch.no_grad():
        for param in tuner.trainable_parameters().values():
            param.add_(torch.randn_like(param), alpha=0.05)
    save_file(tuner.adapter_state_dict(), tmp_path / "adapter.safetensors")
    fresh = apply_tuner(copy.deepcopy(base), cfg.method, TunerContext.for_checks(cfg))
    fresh.load_adapter_state_dict(load_file(tmp_path / "adapter.safetensors"))
    tuner.model.eval(), fresh.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.model(images), tuner.model(images), rtol=0, atol=0)


@pytest.mark.parametrize(
    "method, message",
    [
        ({"peft_type": "LoRA"}, r"method.peft_type='LoRA' is invalid: expected a PEFT type name: LORA, BOFT"),
        ({"peft_type": "PROMPT_TUNING"}, r"cannot run through method.name: peft: prompt learning"),
        ({"peft_type": "LN_TUNING"}, r"it tunes LayerNorms, not nn.Linear layers: use method.name: ln"),
        ({"peft_type": "HRA", "options": {"rank": 4}}, r"method.options='rank' is invalid: .* HRAConfig: r, apply_GS"),
        ({"peft_type": "HRA", "options": {"target_modules": "qkv"}}, r"options.target_modules is set by peftlab"),
        ({"peft_type": "HRA", "options": {"r": [1, {}]}}, r"method.options\['r'\]=.* is invalid"),
        # checked against PEFT's own types (types.json) before PEFT reads them: each was a traceback
        (
            {"options": {"rank_pattern": 3}},
            r"^method.options.rank_pattern=3 is invalid: expected a mapping or null \(PEFT's LoraConfig.rank_patt",
        ),
        ({"options": {"rank_pattern": {".*": "big"}}}, r"^method.options.rank_pattern\['.\*'\]='big' is invalid"),
        ({"options": {"r": 1e8}}, r"^method.options.r=100000000.0 is invalid: expected an integer \(PEFT's Lora"),
        ({"options": {"init_lora_weights": "pisa"}}, r"expected true or false or one of 'gaussian', 'eva', 'olora'"),
        ({"peft_type": "HRA", "options": {"apply_GS": "yes"}}, r"expected true or false \(PEFT's HRAConfig.apply_GS\)"),
        (
            {"options": {"init_lora_weights": "loftq", "loftq_config": {"loftq_bits": 4}}},
            r"^method.options.init_lora_weights='loftq' cannot run through method.name: peft: LoftQ .* on a CUDA dev",
        ),
        ({"options": {"init_lora_weights": "eva"}}, r"cannot run through method.name: peft: EVA's init needs"),
    ],
)
def test_bad_types_and_options_are_one_line_config_errors(method, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(overrides={"method": {"name": "peft", **method}})
    assert "\n" not in str(caught.value)


def test_values_of_pefts_types_pass():
    options = {"init_lora_weights": "pissa_niter_4", "lora_dropout": 0, "rank_pattern": {"q": 4}, "use_rslora": True}
    assert load_config(overrides={"method": {"name": "peft", "options": options}}).method.options == options


@pytest.mark.parametrize(
    "peft_type, options, message",
    [
        (
            "C3A",
            {"block_size": 24},
            r"PEFT's C3AConfig does not apply to this model's targets: ValueError: The block size",
        ),
        ("HRA", {"r": 0}, r"method.options: PEFT's HRAConfig refuses them|does not apply"),
    ],
)
def test_values_peft_refuses_are_one_line_config_errors(peft_type, options, message):
    cfg, base, _ = vit_cell(peft_type)
    cfg = load_config(
        overrides={"model": TINY_MODEL, "method": {"name": "peft", "peft_type": peft_type, "options": options}}
    )
    with pytest.raises(ConfigError, match=message) as caught:
        apply_tuner(copy.deepcopy(base), cfg.method, TunerContext.for_checks(cfg))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("peft_type", applicable())
def test_each_type_counts_on_the_meta_device_as_the_size_check_before_every_run_does(peft_type):
    from peftlab.tuners.params import count_parameters, meta_model, meta_tuner

    method = {"name": "peft", "peft_type": peft_type, "options": TINY_OPTIONS.get(peft_type, {})}
    cfg = load_config(overrides={"model": {**TINY_MODEL, "num_classes": 3}, "method": method})
    counts = count_parameters(cfg)
    assert 0 < counts["adapter"] < counts["total"]
    devices = {p.device.type for p in meta_tuner(cfg.method, meta_model(cfg)).model.parameters()}
    assert devices == {"meta"}  # those counted on the CPU (CPU_COUNTED) too: PEFT moves them to the base's device


# Each size in a subprocess limited to 6 GiB of address space, so that a check that allocates cannot take the
# machine's memory (before, r=1e8 allocated 12.8 GB), on a machine said to have 16 GiB available whatever it
# has; it prints each refusal's line
SIZES = """
import resource, types, psutil
resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))
psutil.virtual_memory = lambda: types.SimpleNamespace(available=16 * 2**30)
from peftlab.config.schema import load_config
from peftlab.tuners.params import check_model_size
from peftlab.utils.errors import ConfigError
model = {"name": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}
for peft_type, options in %r:
    method = {"name": "peft", "peft_type": peft_type, "options": options}
    cfg = load_config(overrides={"model": model, "method": method})
    try:
        check_model_size(cfg.model, cfg.method, 3)
        print("accepted")
    except ConfigError as err:
        print(err)
"""


def test_sizes_beyond_memory_are_refused_in_one_line_before_anything_is_built():
    """The bridge's ranks (r, and rank_pattern's values as the built-in LoRA's) and UniLoRA's vector bank are
    bounded before the method is applied, and the types apply on the meta device: the refusal is the
    built-in methods' line, and nothing is allocated for it."""
    from testkit import run_python

    cases = [
        ("LORA", {"r": 10**8}),
        ("LOHA", {"r": 10**8}),
        ("VERA", {"r": 10**8}),
        ("HRA", {"r": 10**8}),
        ("LORA", {"rank_pattern": {"q": 4, ".*": 10**8}}),
        ("UNILORA", {"theta_d_length": 2 * 10**9}),
    ]
    proc = run_python(SIZES % cases, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == len(cases), proc.stdout
    for line in lines:
        assert line.startswith("model 'vit_tiny_patch16_224' with these settings (model.*, method.options="), line
        assert line.endswith("GiB in fp32: expected a model that fits the 16.0 GiB of memory available"), line


def test_a_quantized_base_is_one_line():
    with pytest.raises(ConfigError, match=r"quant.mode='nf4' is invalid: expected 'none' for method 'peft'"):
        load_config(overrides={"method": {"name": "peft", "peft_type": "HRA"}, "quant": {"mode": "nf4"}})


@pytest.mark.e2e
@needs_fashion_mnist()
@pytest.mark.parametrize("peft_type", ["HRA", "LILY"])
def test_a_run_by_name_merges_or_exports_unmerged_and_writes_files_peft_loads(tmp_path, peft_type):
    from peftlab.training.export import export_merged, load_unmerged
    from peftlab.training.run import train

    cfg = load_config(
        overrides={
            "model": TINY_MODEL,
            "method": {"name": "peft", "peft_type": peft_type, "target_modules": WHOLE},
            "data": {"name": "fashion_mnist", "train_subset": 32, "val_subset": 16, "test_subset": 16},
            "train": {"max_steps": 2, "batch_size": 16},
        }
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result.get("error")
    assert result["params"]["trainable"] < result["params"]["total"]
    assert_peft_loads(tmp_path / "run")
    exported = export_merged(tmp_path / "run", tmp_path / "model.safetensors")
    if peft_type in NO_MERGE:  # the base with the method's modules, as for adapters and VPT
        assert result["merge"] is None
        assert load_unmerged(exported) is not None
    else:
        assert result["merge"]["ok"]
