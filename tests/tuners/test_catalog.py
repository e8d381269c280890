"""``peftlab methods``: every method of the registry and every PEFT type the bridge runs, each with what
it adapts, whether it merges (checked against what its tuner does) and whether it takes a quantized base."""

import copy
import json
import subprocess
import sys

import pytest
import torch
from testkit import REPO, TEXT_ONLY, TINY_MODEL

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.tuners import TUNERS
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.tuners.catalog import BUILT_IN, method_rows
from peftlab.tuners.peft_bridge.types import applicable


def test_every_built_in_method_and_every_peft_type_the_bridge_runs_has_a_row():
    assert set(BUILT_IN) == set(TUNERS) - {"peft"}
    names = [row["name"] for row in method_rows()]
    assert names == [n for n in TUNERS if n != "peft"] + [f"peft:{t}" for t in applicable()]
    assert len(names) >= 40


_BASE = {}


@pytest.mark.parametrize("method", [m for m in BUILT_IN if m not in TEXT_ONLY])
def test_the_merges_column_says_what_the_tuner_does(method):
    if not _BASE:
        torch.manual_seed(0)
        _BASE["vit"] = build_backbone(load_config(overrides={"model": TINY_MODEL}).model, 3)
    options = {"group_size": 16} if method == "qalora" else {}
    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": method, **options}})
    tuner = apply_tuner(copy.deepcopy(_BASE["vit"]), cfg.method, TunerContext.for_checks(cfg))
    merges = BUILT_IN[method][1]
    if merges == "in place":
        assert not tuner.is_adapter
    else:
        assert tuner.is_adapter and (tuner.merged_model() is not None) == merges.startswith("yes")


def test_the_methods_command_lists_them_as_json_without_importing_torch():
    code = (
        "import sys; from peftlab import cli; status = cli.main(['methods', '--json']); "
        "print(sorted(m for m in ('torch', 'timm', 'peft') if m in sys.modules), file=sys.stderr); sys.exit(status)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0 and out.stderr.strip().endswith("[]"), out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["lora"] == {
        "name": "lora",
        "source": "built-in",
        "adapts": "Linear layers (method.target_modules)",
        "merges": "yes",
        "quantized": "bitsandbytes",
    }
    assert rows["peft:LILY"]["merges"] == "no" and rows["peft:FOURIERFT"]["source"] == "PEFT (FourierFTConfig)"
    assert rows["vpt"]["merges"] == "no" and rows["bitfit"]["merges"] == "in place"
    assert rows["qalora"]["quantized"] == "its own group-wise" and rows["ssf"]["quantized"] == "no"


def test_the_methods_table_has_a_line_per_method(capsys):
    from peftlab import cli

    assert cli.main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["method", "source", "merges", "quantized", "base", "adapts"]
    assert [line.split()[0] for line in lines[1:]] == [row["name"] for row in method_rows()]
