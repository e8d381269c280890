"""A rank above what a module can hold is refused in one line (issue 72): ``B A`` of a d_out x d_in weight has rank
at most min(d_in, d_out), so method.r=512 on a width-128 model (or 100000 in validate) trained with no word, its
extra ranks dead weight. The check is the plan's, so validate, params, a dry-run and train refuse alike."""

import pytest
from testkit import TINY_MODEL, command_in_process

from peftlab.config.schema import load_config
from peftlab.records.answers import check_against_model
from peftlab.utils.errors import ConfigError


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_a_rank_above_the_modules_width_is_refused(method):
    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": method, "r": 65}})  # width 64
    with pytest.raises(ConfigError, match=r"method.r=65 gives blocks.0.attn.qkv.q rank 65, above the 64 its 64 x 64"):
        check_against_model(cfg)
    check_against_model(load_config(overrides={"model": TINY_MODEL, "method": {"name": method, "r": 64}}))


def test_params_says_so_in_one_line():
    status, stderr = command_in_process(
        "params", "vit_tiny_patch16_224", "--img-size", "32", "--patch-size", "8", "--depth", "2", "--embed-dim", "64",
        "--num-heads", "2", "--num-classes", "5", "--method", "lora", "--r", "100000",
    )  # fmt: skip
    assert status == 2 and stderr.count("\n") == 1 and "rank 100000, above the 64" in stderr, stderr
