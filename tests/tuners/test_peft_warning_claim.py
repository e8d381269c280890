"""A warning is a claim (STYLE.md rule 19, issue 72): a run says "PEFT cannot load" its adapter exactly when
``peftlab export --peft`` refuses it. Every built-in method that applies to a timm ViT, with its defaults
(LoRA's and DoRA's on timm's q and v slices, which PEFT loads once rewritten onto the fused qkv), and a sample
of PEFT types through the bridge, each on q/k/v slices and on whole modules."""

import pytest
import torch
from testkit import PEFT_TINY_OPTIONS, TEXT_ONLY, TINY_MODEL

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.training.export import write_peft_adapter
from peftlab.tuners.base import TunerContext, apply_tuner
from peftlab.tuners.catalog import method_rows
from peftlab.tuners.peft_injection import PeftTuner, peft_export
from peftlab.utils.errors import UserError

BUILT_IN = [row["name"] for row in method_rows() if row["source"] == "built-in" and row["name"] not in TEXT_ONLY]
PEFT_SAMPLE = [
    (peft_type, targets)
    for peft_type in ("LORA", "VERA", "LOHA", "LOKR", "IA3", "OFT")
    for targets in ("standard", "all-linear", "qkv")
]
CASES = [(name, {}) for name in BUILT_IN] + [
    (
        "peft",
        {
            "peft_type": t,
            "target_modules": [r"blocks\.\d+\.attn\.qkv"] if m == "qkv" else m,
            "options": PEFT_TINY_OPTIONS.get(t, {}),
        },
    )
    for t, m in PEFT_SAMPLE
]


def build(method: str, options: dict):
    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": method, **options}})
    torch.manual_seed(0)
    return apply_tuner(build_backbone(cfg.model, 5), cfg.method, TunerContext(20, torch.device("cpu"), cfg.quant))


@pytest.mark.parametrize(
    "method, options", CASES, ids=[f"{m}-{o.get('peft_type', '')}-{o.get('target_modules', '')}" for m, o in CASES]
)
def test_peft_cannot_load_is_warned_exactly_when_the_export_refuses(tmp_path, method, options):
    try:
        tuner = build(method, options)
    except UserError as err:  # a configuration the tiny model cannot take is refused in one line, no claim made
        pytest.skip(f"refused: {err}")
    warned = [w for w in tuner.warnings() if "PEFT cannot load" in w]
    written = write_peft_adapter(tuner, tmp_path / "peft")
    assert written == (not isinstance(peft_export(tuner), str))
    if isinstance(tuner, PeftTuner):  # a PEFT-backed method: the export is expected, so its refusal is warned
        assert bool(warned) == (not written), (warned, written)
    else:  # peftlab's own methods (full, BitFit, adapters, ...) never claim a PEFT format
        assert not warned and not written
    if written:
        from peft import PeftModel

        torch.manual_seed(0)
        plain = build_backbone(load_config(overrides={"model": TINY_MODEL}).model, 5)
        PeftModel.from_pretrained(plain, tmp_path / "peft")  # loads on the plain base, as not warning claims


def test_default_lora_and_dora_runs_do_not_warn():
    for method in ("lora", "dora"):
        tuner = build(method, {})
        assert tuner.adapts_slices() and not tuner.warnings()
