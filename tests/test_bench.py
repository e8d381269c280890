"""The bench runs on a tiny model and writes well-formed JSON (no timing thresholds here).

``peftlab bench`` is called in the test's process (``testkit.cli_here``, the CLI's entry): what it measures and
writes is what these tests read; the processes it starts itself (the pin figure's, one a mode) are still its own."""

import json
import math
import re
from pathlib import Path

import pytest
from testkit import TEXT_ONLY, TEXT_ONLY_REFUSAL, TINY_MODEL, cli_here


@pytest.mark.e2e
def test_bench_writes_well_formed_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = cli_here(
        "bench",
        "--model",
        "vit_tiny_patch16_224",
        "--img-size",
        "32",
        "--depth",
        "2",
        "--embed-dim",
        "64",
        "--num-heads",
        "2",
        "--patch-size",
        "8",
        "--batch",
        "4",
        "--repeats",
        "2",
        *("--matmul-size", "128"),  # an AVX2-only CPU's bf16 matmul at 1024: about 2 s a call, six calls
        "--default-study",
        str(tmp_path / "no-study.yaml"),
        "--json",
        str(out),
        "--large-model",
        "vit_tiny_patch16_224",
        "--large-steps",
        "1",
        "--data-images",
        "24",
        "--no-compile",
        "--no-pin",
        *("--text-layers", "2", "--text-width", "64", "--text-heads", "2", "--text-batch", "2", "--text-length", "32"),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    peak = report["peak"]
    assert peak["gflops"] > 0 and peak["interleaved_gflops"]["n"] == 2  # measured again between the steps
    assert peak["best_gflops"] == max(peak["gflops"], peak["interleaved_gflops"]["max"]) and peak["valid"]
    assert len(report["load_average_start"]) == 3 and len(report["load_average_end"]) == 3
    assert report["architecture"] == {"depth": 2, "embed_dim": 64, "num_heads": 2, "patch_size": 8}
    assert "vit_tiny_patch16_224 (depth=2, embed_dim=64, num_heads=2, patch_size=8) at 32 px" in proc.stdout
    assert "load average" in proc.stdout and "best of 3 measurements" in proc.stdout
    # an MFU outside (0, 1] is flagged, never printed as a result
    from peftlab.bench.report import format_report

    mfu = report["P5_mfu"]["peftlab_full"]
    assert mfu["valid"] == (0 < mfu["mfu"] <= 1)
    report["P5_mfu"]["peftlab_full"] = {**mfu, "mfu": 1.532, "valid": False}
    # its own line only: another figure of a loaded machine may read 1.532 too (CI, 2026-12-03: a bare loop's ratio)
    (line,) = [row for row in format_report(report).splitlines() if "P5 MFU peftlab_full" in row]
    assert "INVALID: 1.53 is outside (0, 1]" in line and "1.532 (" not in line
    # so is a peak above the theoretical ceiling; an unknown ceiling says why
    from peftlab.bench.peak import peak_within_ceiling

    assert peak_within_ceiling({**peak, "ceiling": {"gflops": None, "why": "cpufreq is hidden"}})
    assert not peak_within_ceiling({**peak, "ceiling": {"gflops": peak["best_gflops"] / 2}})
    report["peak"] = {**peak, "ceiling": {"gflops": peak["best_gflops"] / 2}, "valid": False}
    assert "INVALID: above the ceiling" in format_report(report)
    report["peak"] = {**peak, "ceiling": {"gflops": None, "why": "cpufreq is hidden"}}
    assert "no ceiling: cpufreq is hidden" in format_report(report)
    for key in ("recipe_vs_hand_written", "qv_slices_vs_hand_written"):
        assert report["P1_overhead"][key]["n"] == 2 and report["P1_overhead"][key]["median"] > 0
    assert report["P2_lora_vs_full"]["median"] > 0
    assert 0 < report["P5_mfu"]["peftlab_full"]["mfu"]
    assert report["P5_mfu"]["peftlab_full"]["step_gflop"] > report["P5_mfu"]["peftlab_lora_qv"]["step_gflop"] > 0
    assert set(report["P4_merged_inference"]["ratios"]) == {"merged_vs_base", "adapter_vs_base"}
    assert report["text"]["layers"] == 2 and "text GPT-2 LoRA peftlab / bare step, wall time" in proc.stdout
    p4q = report["P4q_qalora_inference"]
    assert set(p4q["ratios"]) == {"merged_vs_quantized_base", "quantized_vs_fp32"} and p4q["format"] == "int4"
    assert all(v["median"] > 0 for v in p4q["ratios"].values()) and "P4q QA-LoRA int4" in proc.stdout
    assert "skipped" in report["P6_run_fixed_cost"]
    assert report["memory"]["full"]["peak_rss_bytes"] > 0
    assert report["memory"]["full"]["weights_bytes"] > 0
    assert "P2 LoRA r=8 / full step" in proc.stdout
    assert report["P3c_qlora_vs_lora_step"]["median"] > 0
    for name in ("adalora_vs_lora", "controller_vs_lora"):
        assert report["adaptive_rank_steps"][name]["n"] == 2 and report["adaptive_rank_steps"][name]["median"] > 0
    assert "controller / LoRA step" in proc.stdout
    ratios = {name: value["ratio"] for name, value in report["P3a_quantized_bytes"].items() if name != "target"}
    assert set(ratios) == {"nf4_double_quant", "nf4", "fp4", "int8"} and all(0 < r < 1 for r in ratios.values())
    p3b = report["P3b_large_model_memory"]
    assert p3b["qlora_nf4_dq"]["base_weights_bytes"] < p3b["lora_fp32"]["base_weights_bytes"]
    assert p3b["full"]["trainable"] > p3b["lora_fp32"]["trainable"]
    assert p3b["ratios"]["qlora_vs_lora"] > 0 and p3b["ratios"]["build_qlora_vs_full"] > 0
    # the bases are read from one weights file, as a pretrained base is: QLoRA's quantized while loading
    assert p3b["weights"] == "file" and p3b["weights_file_bytes"] > 0
    assert p3b["qlora_nf4_dq"]["quantized_while_loading"] and not p3b["lora_fp32"]["quantized_while_loading"]
    assert "QLoRA / full build peak RSS" in proc.stdout and "quantized while loading" in proc.stdout
    assert report["malloc"]["mode"] == p3b["malloc"] == "system"  # train.malloc's default, in every process
    assert "compile" not in report and report["device"] == "cpu"
    from peftlab.tuners import TUNERS

    assert (
        list(report["methods"]["rows"]) == list(TUNERS)
        and report["methods"]["rows"]["lora"]["ratio_to_lora"]["median"] == 1.0
    )
    assert all(f"{method} / LoRA step" in proc.stdout for method in TUNERS)
    data = report["data_path"]
    assert data["images"] == 24 and data["model"] == "deit_tiny_patch16_224" and data["img_size"] == 224
    assert (
        data["ratio"]["n"] == 2
        and data["ratio"]["median"] > 0
        and data["meets_target"] == (data["ratio"]["median"] >= 2)
    )
    assert "data path (imagefolder, 24 images) / deit_tiny_patch16_224 step" in proc.stdout
    # the precision figure: bf16 and the 4-bit kernel against fp32
    figure = report["precision"]
    for key in ("bf16_vs_fp32_step", "bf16_vs_fp32_matmul", "nf4_bnb_kernel_vs_reference_eval"):
        assert figure[key]["n"] == 2 and figure[key]["median"] > 0, key
    assert figure["auto_resolves_to"] == "fp32"  # a CPU: auto changes only on a measurement
    assert "bf16 / fp32 LoRA step" in proc.stdout and "nf4 eval, bnb CPU kernel / reference" in proc.stdout
    assert "pin" not in report  # --no-pin: its processes are timed by the --only pin test alone


def test_quantized_bytes_order_the_formats_as_their_bits_do():
    """Stored bytes of the block Linears: double quantization saves what nf4 spends on absmax. At
    width 64 (the e2e bench's model) each layer's 256-entry code books outweigh the saving, so the
    order is checked at ViT-Ti's width, 192, on two blocks."""
    from peftlab.bench.common import make_cfg
    from peftlab.bench.weights import quantized_bytes

    ratios = {
        name: value["ratio"]
        for name, value in quantized_bytes(make_cfg({"name": "vit_tiny_patch16_224", "depth": 2}, 32, "lora")).items()
    }
    assert ratios["nf4_double_quant"] < ratios["nf4"] == ratios["fp4"] < ratios["int8"] < 1


@pytest.mark.e2e
def test_bench_compile_figures_time_compiled_against_eager_steps():
    import torch

    from peftlab.bench.steps import compile_figures

    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4) % 10
    one_block = {**TINY_MODEL, "depth": 1}  # inductor compiles each block's code anew: one is the fastest
    comp = compile_figures(one_block, 32, images, labels, "fp32", 2, torch.device("cpu"))
    assert set(comp["compiled_vs_eager"]) == {"lora", "full"} and comp["P2_compiled"]["n"] == 2
    assert all(v["median"] > 0 for v in comp["compiled_vs_eager"].values())
    # a number, not a positive one: with inductor's cache warm (another test compiled the same graph)
    # the first compiled step costs what an eager one does, give or take the machine's load
    assert all(math.isfinite(seconds) for seconds in comp["compile_seconds"].values())
    # `peftlab bench --only compile` prints its rows alone (it printed none and failed, on an H100)
    from peftlab.bench.report import format_report

    header = {"model": "vit", "img_size": 32, "batch": 4, "dtype": "fp32", "repeats": 2, "threads": 1}
    text = format_report({**header, "hardware": {"cpu": "x"}, "only": "compile", "compile": comp})
    assert "compiled / eager step lora" in text and "P2 compiled LoRA / compiled full" in text


def test_a_bench_names_its_cpu_with_the_generation_the_name_hides():
    from peftlab.bench.common import machine

    hardware = {"cpu": "AMD EPYC", "cpu_generation": "family 23 model 1 stepping 2"}
    assert machine({"hardware": hardware}) == "AMD EPYC, family 23 model 1 stepping 2"
    assert machine({"hardware": {"cpu": "AMD EPYC"}}) == "AMD EPYC"  # a bench recorded before it was
    assert machine({"hardware": {**hardware, "cpu_generation": None}}) == "AMD EPYC"  # macOS, an ARM Linux


def test_gpu_ceiling_comes_from_the_spec_sheet_by_name():
    from peftlab.bench.peak import gpu_ceiling_gflops

    assert gpu_ceiling_gflops("bf16", "NVIDIA H100 80GB HBM3")["gflops"] == 989_400
    assert gpu_ceiling_gflops("fp32", "NVIDIA H100 PCIe")["gflops"] == 378_000
    assert gpu_ceiling_gflops("bf16", "NVIDIA GeForce GTX 1080")["gflops"] is None


def test_bench_on_cuda_without_a_gpu_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = cli_here("bench", "--device", "cuda", "--model", "vit_tiny_patch16_224", "--img-size", "32")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no CUDA device" in proc.stderr


@pytest.mark.e2e
def test_bench_only_data_measures_the_data_path_alone(tmp_path):
    out = tmp_path / "bench.json"
    proc = cli_here(
        "bench",
        "--only",
        "data",
        "--batch",
        "4",
        "--repeats",
        "1",
        "--data-images",
        "16",
        "--num-workers",
        "2",
        "--data-cache",
        "--data-layout",
        "vtab1k",
        "--json",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert "peak" not in report and "P1_overhead" not in report
    data = report["data_path"]
    assert data["num_workers"] == 2 and data["device"] == "cpu" and data["images"] == 16 and data["cache"]
    assert data["layout"] == "vtab1k" and data["augment"] is False  # read through VTAB-1k's lists, as a task is
    assert data["data_images_per_second"]["median"] > 0 and data["step_images_per_second"]["median"] > 0
    assert len(report["load_average_start"]) == 3 and "load average" in proc.stdout
    assert "data path (vtab1k, 16 images) / deit_tiny_patch16_224 step" in proc.stdout
    assert "deit_tiny_patch16_224 at 224 px" in proc.stdout
    assert "2 workers, cached, cpu" in proc.stdout


@pytest.mark.e2e
def test_bench_only_pin_times_each_mode_in_a_process_of_its_own_and_says_mkl_s_branch(tmp_path):
    from peftlab.utils import cpu

    out = tmp_path / "bench.json"
    proc = cli_here(
        *("bench", "--only", "pin", "--model", "vit_tiny_patch16_224", "--img-size", "32", "--depth", "1"),
        *("--embed-dim", "32", "--num-heads", "2", "--patch-size", "8", "--batch", "4", "--repeats", "1"),
        *("--json", str(out)),
    )
    assert proc.returncode == 0, proc.stderr
    figure = json.loads(out.read_text())["pin"]
    if cpu.applies():  # each process computed in the branch its switches ask for, as MKL itself reports
        assert figure["mkl_branch"]["unpinned"] == "OFF" and figure["mkl_branch"]["pinned"] == "COMPATIBLE,STRICT"
        assert figure["mkl_branch"]["unpinned_avx2"] in ("AVX2", "AUTO")  # the CPU's own, held to AVX2; AUTO: AMD
    assert figure["mkl_branch"]["compatible"] == figure["mkl_branch"]["pinned"]  # one process: the pin's switches
    for method in ("full", "lora"):
        assert figure[method]["pinned_vs_unpinned"]["n"] == 1 and figure[method]["compatible_vs_unpinned"]["median"] > 0
        assert figure[method]["pinned_vs_compatible"]["median"] > 0  # oneDNN's products against MKL's, one process
        assert figure[method]["pinned_vs_unpinned_avx2"]["n"] == 1 and figure[method]["unpinned_avx2_cpu_ms"] > 0
        assert figure[method]["pinned_avx512_vs_unpinned"]["n"] == 1 and figure[method]["pinned_avx512_cpu_ms"] > 0
        assert figure[method]["pinned_mkl_avx2_vs_pinned"]["n"] == 1 and figure[method]["pinned_mkl_avx2_cpu_ms"] > 0
    assert "lora step CPU unpinned, pinned, former pin" in proc.stdout and "pinned (oneDNN products)" in proc.stdout
    assert "former pin / unpinned at AVX2" in proc.stdout and "AVX512_CORE pin (" in proc.stdout
    assert figure["mkl_branch"]["pinned_avx512"] == figure["mkl_branch"]["pinned"]  # only oneDNN's cap differs
    assert "MKL AVX2 rest (" in proc.stdout
    if cpu.applies():  # the candidate's rest of MKL in its AVX2 branch (AUTO: MKL's own word for it on AMD)
        assert figure["mkl_branch"]["pinned_mkl_avx2"] in ("AVX2,STRICT", "AUTO,STRICT")


def tiny_cfg(method, targets="standard", **options):
    """The bench's config for ``method`` on the tests' tiny ViT."""
    from testkit import TINY_MODEL

    from peftlab.bench.common import make_cfg

    return make_cfg(TINY_MODEL, None, method, targets, **options)


def test_bench_methods_gives_every_tuner_a_ratio_to_lora_and_its_parameter_count():
    import math

    import torch

    from peftlab.bench.methods import method_cfg, methods_figure
    from peftlab.bench.report import methods_rows
    from peftlab.tuners import TUNERS
    from peftlab.tuners.params import count_parameters

    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4) % 10
    figure = methods_figure(tiny_cfg, images, labels, "fp32", 1, torch.device("cpu"))
    rows = figure["rows"]
    assert list(rows) == list(TUNERS)  # one row per registered method, in the registry's order
    assert rows["lora"]["ratio_to_lora"] == {"median": 1.0, "min": 1.0, "max": 1.0, "n": 1}
    for method, row in rows.items():
        if "reason" in row:
            assert row["reason"] and "ratio_to_lora" not in row, method
            continue
        ratio = row["ratio_to_lora"]["median"]
        assert math.isfinite(ratio) and ratio > 0 and row["step_seconds"]["n"] == 1, method
        assert row["trainable"] == count_parameters(method_cfg(tiny_cfg, method))["trainable"], (
            method
        )  # `peftlab params`
    # every method runs on the tiny ViT on a CPU, but those of text models, whose row says why not
    assert all(("reason" in row) == (method in TEXT_ONLY) for method, row in rows.items())
    assert all(re.search(TEXT_ONLY_REFUSAL, rows[method]["reason"]) for method in TEXT_ONLY)
    shown = dict((name, value) for name, value, _ in methods_rows({"methods": figure}))
    assert len(shown) == len(TUNERS) and shown["lora / LoRA step"].startswith("1.000 [1.000-1.000]")
    assert f"{rows['full']['trainable']:,} trainable" in shown["full / LoRA step"]


def test_bench_methods_row_says_why_a_method_did_not_run(monkeypatch):
    import torch

    from peftlab.bench import methods
    from peftlab.bench.report import methods_rows
    from peftlab.utils.errors import UserError

    # a group size that divides none of the tiny ViT's widths (64, 256): QA-LoRA's check refuses it
    monkeypatch.setattr(methods, "TUNERS", {name: methods.TUNERS[name] for name in ("lora", "qalora")})
    monkeypatch.setitem(methods.METHOD_OPTIONS, "qalora", {"group_size": 48})
    images, labels = torch.randn(2, 3, 32, 32), torch.arange(2) % 10
    rows = methods.methods_figure(tiny_cfg, images, labels, "fp32", 1, torch.device("cpu"))["rows"]
    assert "ratio_to_lora" not in rows["qalora"] and "step_seconds" not in rows["qalora"]
    assert rows["qalora"]["reason"].startswith("ConfigError: ") and "group_size" in rows["qalora"]["reason"]
    shown = {name: value for name, value, _ in methods_rows({"methods": {"rows": rows}})}
    assert shown["qalora / LoRA step"] == f"not run: {rows['qalora']['reason']}"
    # the reference cannot be left out: without LoRA's step there is no ratio to give
    monkeypatch.setitem(methods.METHOD_OPTIONS, "lora", {"target_modules": [r"blocks\.\d+\.attn\.nothing"]})
    with pytest.raises(UserError, match="the reference, lora, did not run: ConfigError: "):
        methods.methods_figure(tiny_cfg, images, labels, "fp32", 1, torch.device("cpu"))


@pytest.mark.parametrize("n", range(1, 9))
def test_interleaved_order_puts_every_step_after_every_other_equally_often(n):
    from collections import Counter

    from peftlab.training.metrics import balanced_orders

    orders = balanced_orders(n)
    assert all(sorted(order) == list(range(n)) for order in orders)
    firsts = Counter(order[0] for order in orders)
    assert set(firsts) == set(range(n)) and len(set(firsts.values())) == 1
    pairs = Counter((a, b) for order in orders for a, b in zip(order, order[1:]))
    assert len(pairs) == n * (n - 1) and len(set(pairs.values())) <= 1  # no step always follows the same one


def test_time_interleaved_runs_each_function_once_per_repeat_in_the_balanced_order():
    import torch

    from peftlab.training.metrics import balanced_orders, time_interleaved

    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    times = time_interleaved(fns, repeats=5, device=torch.device("cpu"), warmup=1)
    assert all(len(v) == 5 for v in times.values())
    orders = balanced_orders(4)
    expected = list("abcd") + ["abcd"[i] for k in range(5) for i in orders[k % 4]]
    assert calls == expected


def test_bench_only_steps_measures_p1_p2_and_mfu_on_a_swin(tmp_path):
    """The step figures alone, on a family whose fused qkv sits in stages (layers.S.blocks.M.attn.qkv):
    the hand-written PEFT loop adapts it as peftlab's whole-qkv LoRA does."""
    out = tmp_path / "bench.json"
    proc = cli_here(
        *("bench", "--only", "steps", "--model", "swin_tiny_patch4_window7_224", "--embed-dim", "24"),
        *("--img-size", "32", "--batch", "2", "--repeats", "1", "--json", str(out)),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["only"] == "steps" and "methods" not in report and "precision" not in report
    assert report["P1_overhead"]["recipe_vs_hand_written"]["median"] > 0 and report["P2_lora_vs_full"]["median"] > 0
    assert "P1 recipe / hand-written step" in proc.stdout and "P5 MFU peftlab_lora_qv" in proc.stdout


def test_p3b_reads_an_hf_vit_of_the_model_s_sizes_through_transformers():
    """``--large-weights hf``: each method's process builds transformers' ViT from a saved directory
    (``model.source: hf``), sized as the timm model; QLoRA's base is quantized after it is built."""
    from peftlab.bench.memory import large_model_memory

    p3b = large_model_memory("vit_tiny_patch16_224", steps=1, weights="hf")
    assert p3b["weights"] == "hf" and p3b["img_size"] == 224 and p3b["weights_file_bytes"] > 20 * 2**20
    qlora, lora, full = (p3b[name] for name in ("qlora_nf4_dq", "lora_fp32", "full"))
    assert not qlora["quantized_while_loading"]  # the timm path only, so far
    assert qlora["base_weights_bytes"] < lora["base_weights_bytes"] == qlora["base_weights_fp32_bytes"]
    assert full["trainable"] > lora["trainable"] > 0 and all(v["step_seconds"] > 0 for v in (qlora, lora, full))


def test_a_p3b_report_of_an_hf_base_compares_no_build_peaks_and_counts_no_repeats():
    """The committed HF ViT-B figure: its fp32 bases are mapped, so a build ratio would mislead."""
    from peftlab.bench.report import format_report

    path = Path(__file__).parent.parent / "benchmarks" / "p3b_hf_vit_base_lean.json"
    text = format_report(json.loads(path.read_text()))
    assert "not compared: fp32 HF bases are mapped" in text and "QLoRA / LoRA build peak" not in text
    assert "HF ViT via transformers, malloc lean" in text and "interleaved repeats" not in text.splitlines()[0]


def test_a_p6_report_shows_the_fixed_cost_and_its_parts():
    """P6 alone (``--only P6``): its header names the run, its rows the fixed cost and each part."""
    from peftlab.bench.report import format_report

    figure = {"median": 0.5, "min": 0.4, "max": 0.6, "n": 3}
    p6 = {
        "run": {"method": "lora", "config": "default", "seed": 0},
        "repeats": 3,
        "fixed_cpu_seconds": figure,
        "process_cpu_seconds": figure,
        "training_steps_cpu_seconds": figure,
        "evaluation_cpu_seconds": figure,
        "parts_cpu_seconds": {"data set-up": figure, "merge check": figure},
        "worker_start_wall_seconds": figure,
        "worker_end_wall_seconds": figure,
        "target_cpu_seconds": 2.0,
    }
    bench = {"model": "m", "img_size": 32, "batch": 4, "dtype": "fp32", "threads": 2, "repeats": 3}
    nf4 = {**p6, "run": {**p6["run"], "quant": "nf4", "variant": "lora quant=nf4"}}
    report = {**bench, "only": "P6", "hardware": {"cpu": "a CPU"}, "P6_run_fixed_cost": p6}
    text = format_report(report)
    assert "the default study's run (config 'default', lora, seed 0), each of 3 in a fresh worker" in text
    assert "P6 run fixed cost, CPU s" in text and "0.50 [0.40-0.60]" in text and "<= 2" in text
    assert "P6 data set-up" in text and "P6 merge check" in text and "P6 worker start, end" in text
    text = format_report({**report, "P6_quantized_run_fixed_cost": nf4})  # the QLoRA run beside it
    assert "and its QLoRA run 'lora quant=nf4'" in text
    assert "P6 nf4 run fixed cost, CPU s" in text and "P6 nf4 data set-up" in text


def test_the_precision_rows_name_the_device_that_ran_them():
    """On an H100 the bf16 / fp32 row named the host CPU's flags: a GPU's figure names the GPU."""
    from peftlab.bench.report import precision_rows

    ratio = {"median": 0.5, "min": 0.4, "max": 0.6, "n": 3}
    figure = {"bf16_vs_fp32_step": ratio, "cpu_flags": ["avx2"], "auto_resolves_to": "fp32"}
    assert "(avx2)" in precision_rows({"precision": {**figure, "ran_on": "cpu"}})[0][1]
    on_gpu = precision_rows({"precision": {**figure, "ran_on": "NVIDIA H100 80GB HBM3", "auto_resolves_to": "bf16"}})
    assert "(NVIDIA H100 80GB HBM3)" in on_gpu[0][1] and "avx2" not in on_gpu[0][1]
