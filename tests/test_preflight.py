"""The pre-flight memory estimate: its parts, its linearity in the batch, and the refusal."""

import pytest
import torch
from testkit import TINY_MODEL, cli_here, cpu_seconds, run_cli

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.training.preflight import check_fits, estimate, saved_activation_bytes
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.utils.errors import UserError


def tuned(method: str, **options):
    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": method, **options}})
    torch.manual_seed(0)
    return apply_tuner(build_backbone(cfg.model, 10), cfg.method, TunerContext.for_checks(cfg))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_estimate_adds_exact_parts_and_a_linear_activation_cost(method):
    tuner = tuned(method)
    trainable = list(tuner.trainable_parameters().values())
    est = estimate(tuner.model, trainable, (3, 32, 32), 8, "fp32", torch.device("cpu"))
    n = sum(p.numel() for p in trainable)
    assert est["gradients_bytes"] == 4 * n and est["optimizer_state_bytes"] == 8 * n
    assert est["activations_per_image_bytes"] > 0
    assert est["total_bytes"] == sum(
        est[k] for k in ("weights_bytes", "gradients_bytes", "optimizer_state_bytes", "activations_bytes")
    )
    # the saved activations grow linearly with the batch: 4 images cost what the two probes predict
    measured = saved_activation_bytes(tuner.model, torch.randn(4, 3, 32, 32), "fp32")
    predicted = est["activations_fixed_bytes"] + 4 * est["activations_per_image_bytes"]
    assert abs(measured - predicted) <= 0.02 * measured


def test_lora_saves_less_than_full_fine_tuning_and_leaves_the_model_as_found():
    lora, full = tuned("lora"), tuned("full")
    lora.model.eval()
    before = {k: v.clone() for k, v in lora.model.state_dict().items()}
    rng = torch.get_rng_state()
    shape = (3, 32, 32)
    lora_est = estimate(lora.model, list(lora.trainable_parameters().values()), shape, 8, "fp32", torch.device("cpu"))
    full_est = estimate(full.model, list(full.trainable_parameters().values()), shape, 8, "fp32", torch.device("cpu"))
    assert lora_est["training_bytes"] < full_est["training_bytes"]
    assert not lora.model.training and torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in lora.model.state_dict().items())


def test_a_run_that_cannot_fit_is_refused_with_a_batch_that_fits():
    est = {
        "training_bytes": 10 * 2**30,
        "gradients_bytes": 2**20,
        "optimizer_state_bytes": 2**21,
        "activations_fixed_bytes": 0,
        "activations_per_image_bytes": 2**27,
        "activations_bytes": 64 * 2**27,
    }
    with pytest.raises(UserError) as err:
        check_fits(est, 2 * 2**30, 64, 1, quantizable=True)
    text = str(err.value)
    assert "\n" not in text and "train.batch_size=8 with train.grad_accum=8" in text and "quant.mode=nf4" in text
    check_fits(est, 11 * 2**30, 64, 1, quantizable=True)  # fits: nothing raised


def test_validate_show_prints_the_estimate(tmp_path):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump({"model": TINY_MODEL, "method": {"name": "lora", "r": 4}, "train": {"batch_size": 16}})
    )
    proc = cli_here("validate", str(path), "--show")
    assert proc.returncode == 0, proc.stderr
    assert "# memory estimate for training at micro-batch 16" in proc.stdout and "per image" in proc.stdout


@pytest.mark.parametrize("method", ["lora", "full", "vpt"])
def test_a_model_of_many_patches_is_probed_small_and_exactly(monkeypatch, method):
    """What the model saves grows with its tokens as a polynomial of degree 2: three small grids give
    the full-size probe's bytes exactly (here a 10 x 10 grid, probed both ways)."""
    from peftlab.training import preflight

    cfg = load_config(overrides={"model": {**TINY_MODEL, "img_size": 40, "patch_size": 4}, "method": {"name": method}})
    assert (
        preflight.probed_for_config(cfg.model, cfg.method, cfg.quant, 10, "fp32") is None
    )  # 100 patches: probed at full size
    monkeypatch.setattr(preflight, "PROBED_PATCHES", 64)
    tuner = preflight.adapted(cfg.model, cfg.method, cfg.quant, 10)
    assert preflight.probed_for_config(cfg.model, cfg.method, cfg.quant, 10, "fp32") == preflight.probe(
        tuner.model, (3, 40, 40), "fp32", torch.device("cpu")
    )


@pytest.mark.parametrize("deep", [True, False])
@pytest.mark.parametrize(("img_size", "patch_size"), [(32, 8), (40, 4)], ids=["prompts", "prompts-and-patches"])
def test_a_model_of_many_prompt_tokens_is_probed_small_and_exactly(monkeypatch, deep, img_size, patch_size):
    """VPT's prompts are tokens too: a model of many is probed at three small prompt counts (and, of
    many patches, at three small grids each), which give the full-size probe's bytes exactly."""
    from peftlab.training import preflight

    cfg = load_config(
        overrides={
            "model": {**TINY_MODEL, "img_size": img_size, "patch_size": patch_size},
            "method": {"name": "vpt", "prompt_tokens": 20, "deep": deep},
        }
    )
    assert (
        preflight.probed_for_config(cfg.model, cfg.method, cfg.quant, 10, "fp32") is None
    )  # 20 prompts: probed at full size
    monkeypatch.setattr(preflight, "PROBED_PROMPTS", 8)
    monkeypatch.setattr(preflight, "PROBED_PATCHES", 64)
    tuner = preflight.adapted(cfg.model, cfg.method, cfg.quant, 10)
    assert preflight.probed_for_config(cfg.model, cfg.method, cfg.quant, 10, "fp32") == preflight.probe(
        tuner.model, (3, img_size, img_size), "fp32", torch.device("cpu")
    )


@pytest.mark.parametrize(
    "change",
    [{"model": {**TINY_MODEL, "img_size": 1024, "patch_size": 2}}, {"method": {"name": "vpt", "prompt_tokens": 10**6}}],
    ids=["patches", "prompts"],
)
def test_validate_of_a_legal_large_token_config_never_runs_it_at_full_size(tmp_path, change):
    """A 1024 px image of 2 px patches (262,144 tokens), or a million VPT prompts (whose weights fit):
    validate --show hung in a full-size forward pass."""
    import yaml

    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump({"model": TINY_MODEL, "train": {"batch_size": 1}, **change}))
    start = cpu_seconds()
    proc = run_cli("validate", str(path), "--show", timeout=600)
    assert cpu_seconds() - start < 120  # the child's CPU seconds; the full-size forward took many minutes
    assert (
        proc.returncode == 0
        and "# memory estimate" in proc.stdout
        or proc.returncode == 2
        and "GiB are available" in proc.stderr
    ), proc.stderr


def test_a_tested_causal_lm_s_estimate_holds_its_base_row_s_pass_and_refuses_it_where_it_cannot_fit(tmp_path):
    """A tested causal-LM run measures its base alone after training (metrics.base_test_perplexity): the base's float
    weights, built beside the adapted model and its AdamW state. The estimate counts them (a trial's, untested, and a
    classifier's do not), says so, and a base pass that cannot fit is refused where training alone would fit."""
    from testkit import hf_text_dir

    from peftlab.training.metrics import weights_bytes
    from peftlab.training.preflight import base_pass_bytes, estimate_for_config, format_estimate

    torch.manual_seed(0)
    model = {"source": "hf-text", "path": str(hf_text_dir(tmp_path / "gpt2", "gpt2", causal=True)), "task": "causal-lm"}
    data = {"name": "instructions", "root": str(tmp_path), "max_length": 16}
    overrides = {"model": model, "data": data, "method": {"name": "lora", "r": 2}}
    cfg = load_config(overrides=overrides)
    base = weights_bytes(build_backbone(cfg.model, 3))  # the float base as outcome.base_perplexity builds it
    assert base_pass_bytes(cfg.model, 3, tested=True) == base > 0
    assert base_pass_bytes(cfg.model, 3, tested=False) == 0  # a tuning trial: no test split, no base row
    assert base_pass_bytes(load_config(overrides={"model": TINY_MODEL}).model, 10, tested=True) == 0  # a classifier
    est = estimate_for_config(cfg)
    assert est["base_pass_bytes"] == base
    assert est["base_pass_beyond_weights_bytes"] == base + est["optimizer_state_bytes"]
    assert est["total_bytes"] == sum(  # the training peak as before
        est[k] for k in ("weights_bytes", "gradients_bytes", "optimizer_state_bytes", "activations_bytes")
    )
    assert format_estimate(est)[-1].startswith("# then the base alone on the test split (metrics.base_test_perplexity)")
    trial = estimate_for_config(load_config(overrides={**overrides, "train": {"test": False}}))
    assert trial["base_pass_bytes"] == trial["base_pass_beyond_weights_bytes"] == 0
    assert not format_estimate(trial)[-1].startswith("# then")
    big = {**est, "base_pass_bytes": 2**30, "base_pass_beyond_weights_bytes": 2**30 + est["optimizer_state_bytes"]}
    with pytest.raises(UserError) as err:  # training fits, a base of 1 GiB beside the AdamW state does not
        check_fits(big, est["training_bytes"] + 1, 8, 1, quantizable=True)
    text = str(err.value)
    assert "\n" not in text and "its test of the base alone (metrics.base_test_perplexity)" in text
    assert "train.test=false" in text and "train.batch_size=" not in text  # no smaller batch makes it fit
    check_fits(big, big["base_pass_beyond_weights_bytes"] + est["training_bytes"], 8, 1, quantizable=True)  # fits
