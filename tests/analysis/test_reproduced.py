"""make study's last line: the study file's header rows against the report's results.csv (fabricated here)."""

import json

import pandas as pd
import pytest
from testkit import REPO

from peftlab.analysis.results.reproduced import header_class, header_means, main, reproduced_line
from peftlab.utils.errors import UserError

HEADER = """# Expected result, measured somewhere:
#   full              74.73% [73.10, 75.85]  100%
#   lora (r=8)        70.19% [69.60, 71.05]  2.12%
#   lora quant=nf4    70.55% [69.35, 71.60]  2.12%  (merged, re-quantized: 70.54%)
# Against LoRA: +1.43 points
name: s
#   full              10.00% [10.00, 10.00]  not the header: after the first key
"""


def study(tmp_path, scores: dict[str, list[float]], status: str = "completed"):
    (tmp_path / "study.yaml").write_text(HEADER)
    rows = [
        {"variant": variant, "seed": seed, "status": status, "metrics.test_top1": top1}
        for variant, values in scores.items()
        for seed, top1 in enumerate(values)
    ]
    (tmp_path / "out" / "report").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(tmp_path / "out" / "report" / "results.csv", index=False)
    return tmp_path / "study.yaml", tmp_path / "out"


def test_the_header_rows_are_read_with_their_notes_left_off():
    assert header_means(REPO / "configs" / "studies" / "default.yaml").keys() == {
        "full", "linear", "lora", "adalora", "adaptive", "qalora", "lora quant=int8", "lora quant=nf4"
    }  # fmt: skip


def test_equal_means_to_two_decimals_are_reproduced(tmp_path):
    # 5 seeds of 2,000 test images: means are whole hundredths of a point
    scores = {"full": [0.731, 0.7585, 0.75, 0.74, 0.757], "lora": [0.7019], "lora quant=nf4": [0.7055]}
    line = reproduced_line(*study(tmp_path, scores))
    assert line.startswith("Reproduced: the mean test top-1 of all 3 rows") and "\n" not in line


def test_rows_that_moved_are_named_with_how_far(tmp_path):
    files = study(tmp_path, {"full": [0.7476], "lora": [0.7172, 0.7172], "lora quant=nf4": [0.7055]})
    line = reproduced_line(*files)
    assert line == (
        f"Not reproduced: {files[0]}'s header against this machine: 2 of 3 rows moved (header -> here, points): "
        "full 74.73 -> 74.76 (+0.03); lora 70.19 -> 71.72 (+1.53); "
        "outside the header's range over its seeds: lora."
    )


def test_a_configuration_that_did_not_complete_is_named(tmp_path, capsys):
    files = study(tmp_path, {"full": [0.7473], "lora": [0.7019]})
    main([str(f) for f in files])
    assert capsys.readouterr().out.strip().endswith("not completed here: lora quant=nf4.")


def test_a_study_without_a_report_is_one_line(tmp_path):
    files = study(tmp_path, {"full": [0.7473]})
    with pytest.raises(UserError, match="results.csv is missing: expected the study's report"):
        reproduced_line(files[0], tmp_path / "elsewhere")


def with_runs(tmp_path, vendor: str, threads: int = 1, branch: str = "AVX2", products: str | None = None):
    """A run directory whose result.json records its machine class (the fields machine_class reads)."""
    run = tmp_path / "out" / "runs" / "full-s0"
    run.mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps({"variant": "full", "seed": 0, "groups": []}))
    provenance = {
        "arithmetic": {"pinned": True, "cpu_vendor": vendor, "mkl_branch": branch, "products": products},
        "threads": threads,
        "hardware": {"device": "cpu"},
        "versions": {"torch": "2.14.1"},
    }
    (run / "result.json").write_text(json.dumps({"status": "completed", "provenance": provenance}))


def test_the_line_names_this_machines_class_and_the_header_class_is_read(tmp_path):
    files = study(tmp_path, {"full": [0.7473], "lora": [0.7019], "lora quant=nf4": [0.7055]})
    files[0].write_text(
        "# Machine class: AMD CPU, arithmetic pinned (MKL AVX2), 1 thread a run, torch 2.14.1\n" + HEADER
    )
    with_runs(tmp_path, "AMD")
    assert header_class(files[0]) == "AMD CPU, arithmetic pinned (MKL AVX2), 1 thread a run, torch 2.14.1"
    line = reproduced_line(*files)
    assert line.endswith(
        "came out the same on this machine (AMD CPU, arithmetic pinned (MKL AVX2), 1 thread a run, torch 2.14.1)."
    )


def test_on_another_class_moved_rows_within_the_seeds_range_agree_but_do_not_reproduce(tmp_path):
    files = study(tmp_path, {"full": [0.7476], "lora": [0.7050], "lora quant=nf4": [0.7055]})
    files[0].write_text(
        "# Machine class: AMD CPU, arithmetic pinned (MKL AVX2), 1 thread a run, torch 2.14.1\n" + HEADER
    )
    with_runs(tmp_path, "Intel")
    line = reproduced_line(*files)
    assert line.startswith("Agrees by the seeds' range, not bit for bit: ")
    assert (
        "Intel CPU, arithmetic pinned (MKL AVX2), 1 thread a run, torch 2.14.1, not the header's class: AMD CPU" in line
    )
    assert line.endswith("every moved mean lies within the header's range over its seeds.")


def test_on_the_headers_own_class_a_moved_row_is_not_reproduced_even_within_the_range(tmp_path):
    files = study(tmp_path, {"full": [0.7476], "lora": [0.7019], "lora quant=nf4": [0.7055]})
    files[0].write_text(
        "# Machine class: AMD CPU, arithmetic pinned (MKL AVX2), 1 thread a run, torch 2.14.1\n" + HEADER
    )
    with_runs(tmp_path, "AMD")
    assert reproduced_line(*files).startswith("Not reproduced: ")


@pytest.mark.parametrize("products", [None, "oneDNN AVX2", "oneDNN AVX2, quantized bases' backward too"])
def test_under_a_vendor_free_pin_an_intel_machine_is_in_an_amd_headers_class(tmp_path, products):
    """The default study's header names no vendor (MKL COMPATIBLE: record.VENDOR_FREE_BRANCHES, and the pin's
    oneDNN products: VENDOR_FREE_PRODUCTS): an Intel CPU's runs are judged bit for bit against it, and a moved
    row is not reproduced even within its range."""
    files = study(tmp_path, {"full": [0.7473], "lora": [0.7019], "lora quant=nf4": [0.7055]})
    pin = "MKL COMPATIBLE,STRICT" + (f", products through {products}" if products else "")
    header = f"# Machine class: Intel or AMD CPU, arithmetic pinned ({pin}), 1 thread a run, torch 2.14.1\n"
    files[0].write_text(header + HEADER)
    with_runs(tmp_path, "GenuineIntel", branch="COMPATIBLE,STRICT", products=products)
    assert reproduced_line(*files).endswith(
        f"came out the same on this machine (Intel or AMD CPU, arithmetic pinned ({pin}), 1 thread a run, torch "
        "2.14.1)."
    )
