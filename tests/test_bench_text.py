"""The bench's text figure on a tiny GPT-2: its report, text rows and PNG, and a fair comparison (the same
trainable parameters, base weights, batch and first loss on both sides). No timing thresholds here."""

import json

import pytest
from testkit import assert_one_line_refusal, cli_in_process

TINY = ("--text-layers", "2", "--text-width", "64", "--text-heads", "2", "--text-batch", "2", "--text-length", "32")
STEPS = {"peftlab_lora_c_attn", "bare_peft_c_attn", "peftlab_lora_qv"}


@pytest.fixture(scope="module")
def text_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("text-bench")
    files = ("--json", str(out / "text.json"), "--png", str(out / "t.png"))
    status, stderr, _, _ = cli_in_process("bench", "--only", "text", *TINY, "--repeats", "2", *files)
    assert status == 0, stderr
    return json.loads((out / "text.json").read_text()), out


def test_the_text_figure_reports_tokens_per_second_and_the_ratio_in_wall_and_cpu_time(text_bench):
    report, _ = text_bench
    text = report["text"]
    assert report["only"] == "text" and "peak" not in report and "P1_overhead" not in report
    assert (text["layers"], text["width"], text["heads"], text["length"], text["batch"]) == (2, 64, 2, 32, 2)
    assert text["tokens_per_step"] == 2 * 32 and text["dtype"] == "fp32" and text["threads"] == report["threads"]
    assert set(text["steps"]) == STEPS and text["target"] == 1.05 and "omp_wait_policy" in text
    for clock in ("wall", "cpu"):
        assert set(text["step_seconds"][clock]) == STEPS and set(text["tokens_per_second"][clock]) == STEPS
        for name in STEPS:
            seconds, tokens = text["step_seconds"][clock][name], text["tokens_per_second"][clock][name]
            assert seconds["n"] == 2 and seconds["median"] > 0, (clock, name)
            assert tokens["median"] > 0 and tokens["min"] <= tokens["median"] <= tokens["max"], (clock, name)
        for ratio in ("peftlab_vs_bare", "qv_vs_bare"):
            assert text[ratio][clock]["n"] == 2 and text[ratio][clock]["median"] > 0, (ratio, clock)
            assert text[ratio][clock]["fastest"] > 0, (ratio, clock)
    assert all(len(text["load_average"][end]) == 3 for end in ("start", "end"))


def test_the_comparison_is_fair_same_trainable_parameters_and_first_loss(text_bench):
    """LoRA r=8 on 2 blocks' c_attn (64 -> 192): 2 x 8 x (64 + 192) on both sides, and on peftlab's q, v slices
    2 x 2 x 8 x (64 + 64), the same count; B = 0 at the start, so the first steps' losses are the base's on the
    same batch (the same weights file read by peftlab's build and by transformers), equal within float error."""
    text = text_bench[0]["text"]
    assert text["trainable"] == {name: 2 * 8 * (64 + 192) for name in STEPS}
    losses = text["first_step_loss"]
    assert set(losses) == STEPS
    assert losses["peftlab_lora_c_attn"] == pytest.approx(losses["bare_peft_c_attn"], rel=1e-5)
    assert losses["peftlab_lora_qv"] == pytest.approx(losses["bare_peft_c_attn"], rel=1e-5)
    assert 9 < losses["bare_peft_c_attn"] < 12  # a random GPT-2 on random tokens: about ln(50257) = 10.8


def test_the_text_report_prints_its_rows_and_draws_its_png(text_bench):
    from peftlab.bench.report import format_report

    report, out = text_bench
    shown = format_report(report)
    header = shown.splitlines()[0]
    assert header.startswith("peftlab bench: text, GPT-2 shaped causal LM (2 layers, width 64, 2 heads")
    assert "batch 2 x 32 tokens" in header and "load average" in header and "2 interleaved repeats" in header
    assert "text GPT-2 LoRA peftlab / bare step, wall time" in shown and "<= 1.05" in shown
    assert "tokens/CPU-s" in shown and "first-step loss peftlab / bare" in shown
    assert (out / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_without_the_text_figure_is_refused_before_measuring(tmp_path):
    status, stderr, _, _ = cli_in_process("bench", "--only", "data", "--png", str(tmp_path / "x.png"))
    assert_one_line_refusal(status, stderr, "--png draws the text figure")
    assert not (tmp_path / "x.png").exists()
