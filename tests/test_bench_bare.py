"""The bench's ``bare`` figure on the tiny ViT, on the CPU (issue 74): every peftlab step beside a bare timm +
PEFT (+ bitsandbytes) loop's, each method ratio beside the bare loop's. The figures exist and are finite;
their values are the GPU's business (scripts/gpu-check.sh), never checked here."""

import math
import sys

import pytest
import torch
from testkit import TINY_MODEL

from peftlab.bench.common import make_cfg

pytest.importorskip("bitsandbytes")

IMAGES, LABELS = torch.randn(4, 3, 32, 32), torch.arange(4) % 10


def tiny_cfg(method, targets="standard", **options):
    return make_cfg(TINY_MODEL, 32, method, targets, **options)


def one_block_cfg(method, targets="standard", **options):
    """The tiny ViT with one block, for the compiled steps: inductor compiles each block's code anew."""
    return make_cfg({**TINY_MODEL, "depth": 1}, 32, method, targets, **options)


def finite_spread(value: dict) -> bool:
    return all(math.isfinite(value[k]) and value[k] > 0 for k in ("median", "min", "max"))


def check_figure(figure: dict, kinds: set[str], between: set[str]) -> None:
    assert set(figure["peftlab_vs_bare"]) == kinds
    assert all(finite_spread(r) and r["target"] == 1.05 for r in figure["peftlab_vs_bare"].values())
    assert set(figure["method_ratios"]) == between
    for row in figure["method_ratios"].values():
        assert finite_spread(row["peftlab"]) and finite_spread(row["bare"]) and math.isfinite(row["peftlab_vs_bare"])
        assert row["cost_is"] in ("peftlab's", "the libraries' own (the bare loop pays it too)")
    assert all(finite_spread(s) for s in figure["step_seconds"].values())


def test_the_bare_figure_gives_each_peftlab_step_and_ratio_beside_the_bare_loop_s():
    from peftlab.bench.bare import bare_figure
    from peftlab.bench.report import format_report

    figure = bare_figure(tiny_cfg, IMAGES, LABELS, "fp32", 2, torch.device("cpu"), compiled=False)
    check_figure(
        figure, {"lora", "full", "adalora", "qlora_nf4"}, {"qlora_nf4_vs_lora", "adalora_vs_lora", "lora_vs_full"}
    )
    header = {"model": "vit", "img_size": 32, "batch": 4, "dtype": "fp32", "repeats": 2, "threads": 1}
    text = format_report({**header, "hardware": {"cpu": "x"}, "only": "bare", "bare": figure})
    assert "peftlab / bare step, QLoRA nf4" in text and "adalora / lora" in text and "bare " in text


@pytest.mark.parametrize("kind", ["lora", "full", "adalora", "qlora_nf4"])
def test_a_bare_loop_step_runs_no_peftlab_code(kind):
    from peftlab.bench.bare import BareLoop

    loop = BareLoop(kind, tiny_cfg("full"), IMAGES, LABELS, "fp32", torch.device("cpu"))
    loop.step()
    called = set()

    def profile(frame, event, arg):
        if event == "call" and "/peftlab/" in frame.f_code.co_filename.replace("\\", "/"):
            called.add(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    sys.setprofile(profile)
    try:
        loop.step()
    finally:
        sys.setprofile(None)
    called.discard(f"{sys.modules['peftlab.bench.bare'].__file__}:step")
    assert not called, called
    assert all(torch.isfinite(p).all() for p in loop.params)


@pytest.mark.e2e
def test_the_bare_figure_times_compiled_steps_too():
    from peftlab.bench.bare import bare_figure

    figure = bare_figure(one_block_cfg, IMAGES, LABELS, "fp32", 2, torch.device("cpu"), compiled=True)
    check_figure(
        figure,
        {"lora", "full", "adalora", "qlora_nf4", "lora_compiled", "full_compiled"},
        {
            "qlora_nf4_vs_lora",
            "adalora_vs_lora",
            "lora_vs_full",
            "lora_vs_full_compiled",
            "compiled_vs_eager_lora",
            "compiled_vs_eager_full",
        },
    )
