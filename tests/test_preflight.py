"""The pre-flight memory estimate: its parts, its linearity in the batch, and the refusal."""

import pytest
import torch

from testkit import TINY_MODEL, run_cli
from peftlab.backbones import build_backbone
from peftlab.config import load_config
from peftlab.errors import UserError
from peftlab.training.preflight import check_fits, estimate, saved_activation_bytes
from peftlab.tuners import apply_tuner


def tuned(method: str, **options):
    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": method, **options}})
    torch.manual_seed(0)
    return apply_tuner(build_backbone(cfg.model, 10), cfg)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_estimate_adds_exact_parts_and_a_linear_activation_cost(method):
    tuner = tuned(method)
    trainable = list(tuner.trainable_parameters().values())
    est = estimate(tuner.model, trainable, (3, 32, 32), 8, "fp32", torch.device("cpu"))
    n = sum(p.numel() for p in trainable)
    assert est["gradients_bytes"] == 4 * n and est["optimizer_state_bytes"] == 8 * n
    assert est["activations_per_image_bytes"] > 0
    assert est["total_bytes"] == sum(est[k] for k in ("weights_bytes", "gradients_bytes", "optimizer_state_bytes",
                                                      "activations_bytes"))
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
    est = {"training_bytes": 10 * 2 ** 30, "gradients_bytes": 2 ** 20, "optimizer_state_bytes": 2 ** 21,
           "activations_fixed_bytes": 0, "activations_per_image_bytes": 2 ** 27, "activations_bytes": 64 * 2 ** 27}
    with pytest.raises(UserError) as err:
        check_fits(est, 2 * 2 ** 30, 64, 1, quantizable=True)
    text = str(err.value)
    assert "\n" not in text and "train.batch_size=8 with train.grad_accum=8" in text and "quant.mode=nf4" in text
    check_fits(est, 11 * 2 ** 30, 64, 1, quantizable=True)  # fits: nothing raised


def test_validate_show_prints_the_estimate(tmp_path):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": TINY_MODEL, "method": {"name": "lora", "r": 4},
                                    "train": {"batch_size": 16}}))
    proc = run_cli("validate", str(path), "--show")
    assert proc.returncode == 0, proc.stderr
    assert "# memory estimate for training at micro-batch 16" in proc.stdout and "per image" in proc.stdout
