"""The bench's report as text (one row per figure: name, value, target) and as JSON. ``ROWS`` lists the row
functions in print order; each reads its figure from the report and returns its rows, or none where not measured.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from peftlab.bench.common import machine
from peftlab.bench.memory import LARGE_METHODS

Row = tuple[str, str, str]


def med(d: dict) -> float:
    return d["median"]


def spread_text(value: dict, digits: int = 3) -> str:
    """ "median [min-max]"."""
    return f"{value['median']:.{digits}f} [{value['min']:.{digits}f}-{value['max']:.{digits}f}]"


def peak_rows(report: dict) -> list[Row]:
    peak = report["peak"]
    ceiling = peak.get("ceiling") or {}
    shown_ceiling = (
        f"; ceiling {ceiling['gflops']:.0f}"
        if ceiling.get("gflops")
        else f"; no ceiling: {ceiling['why']}"
        if ceiling.get("why")
        else ""
    )
    return [
        (
            "peak matmul",
            f"{peak.get('best_gflops', peak['gflops']):.1f} GFLOP/s (n={peak['size']}, best of "
            f"{1 + peak.get('interleaved_gflops', {}).get('n', 0)} measurements){shown_ceiling}"
            + ("" if peak.get("valid", True) else " INVALID: above the ceiling"),
            "",
        )
    ]


def step_rows(report: dict) -> list[Row]:
    """P1, P2, P3c and the rank controllers."""
    p1 = report["P1_overhead"]
    rows = [
        ("P1 recipe / hand-written step", spread_text(p1["recipe_vs_hand_written"]), "<= 1.03"),
        ("   q,v slices / hand-written", f"{med(p1['qv_slices_vs_hand_written']):.3f}", ""),
        ("P2 LoRA r=8 / full step", spread_text(report["P2_lora_vs_full"]), "<= 0.75"),
        ("P3c QLoRA nf4 / LoRA step", spread_text(report["P3c_qlora_vs_lora_step"]), "<= 1.15"),
    ]
    adaptive = report.get("adaptive_rank_steps")
    if adaptive:
        for name, label in (
            ("adalora_vs_lora", "AdaLoRA / LoRA step"),
            ("controller_vs_lora", "controller / LoRA step"),
        ):
            rows.append((label, f"{spread_text(adaptive[name])} (reallocating every step)", "<= 1.10"))
    return rows


def methods_rows(report: dict) -> list[Row]:
    """Every method's step / LoRA's (r=8, q, v), its step seconds and trainable parameters, or why it did not run."""
    figure = report.get("methods")
    if not figure:
        return []
    rows = []
    for method, row in figure["rows"].items():
        shown = (
            f"{spread_text(row['ratio_to_lora'])} ({med(row['step_seconds']):.3f} s, {row['trainable']:,} trainable)"
            if "ratio_to_lora" in row
            else f"not run: {row['reason']}"
        )
        rows.append((f"{method} / LoRA step", shown, ""))
    return rows


def memory_figure_rows(report: dict) -> list[Row]:
    """P3a (stored bytes of a quantized base) and P3b (peak RSS training a large model)."""
    rows = [
        (f"P3a stored bytes {name} / fp32", f"{value['ratio']:.3f}", "<= 0.15" if name == "nf4_double_quant" else "")
        for name, value in report["P3a_quantized_bytes"].items()
        if name != "target"
    ]
    return rows + p3b_rows(report)


def p3b_rows(report: dict) -> list[Row]:
    """P3b: peak RSS building and training a large model, QLoRA against LoRA and full."""
    rows = []
    p3b = report.get("P3b_large_model_memory")
    if p3b:
        weights = {"file": "from a weights file", "hf": "HF ViT via transformers"}.get(
            p3b.get("weights"), "random init"
        )
        if p3b.get("malloc"):
            weights += f", malloc {p3b['malloc']}"
        for name in LARGE_METHODS:
            value = p3b[name]
            loading = ", quantized while loading" if value.get("quantized_while_loading") else ""
            rows.append(
                (
                    f"P3b {p3b['model']} {name}",
                    f"train peak {value['peak_rss_above_baseline_bytes'] / 2**20:.0f}"
                    f" MiB, build peak {value['build_peak_rss_bytes'] / 2**20:.0f} MiB ({weights}{loading})",
                    "",
                )
            )
        ratios = p3b["ratios"]
        rows.append(("P3b QLoRA / LoRA train peak RSS", f"{ratios['qlora_vs_lora']:.3f}", "<= 0.35"))
        rows.append(("P3b QLoRA / full train peak RSS", f"{ratios['qlora_vs_full']:.3f}", "<= 0.10"))
        if p3b.get("weights") == "hf":  # transformers maps the file: an fp32 base is read by its first step
            rows.append(("P3b build peak RSS", "not compared: fp32 HF bases are mapped, read in training", ""))
        elif "build_qlora_vs_lora" in ratios:  # reports written before the build peak's ratios
            rows.append(("P3b QLoRA / LoRA build peak RSS", f"{ratios['build_qlora_vs_lora']:.3f}", "<= 0.35"))
            rows.append(("P3b QLoRA / full build peak RSS", f"{ratios['build_qlora_vs_full']:.3f}", "<= 0.10"))
    return rows


def inference_rows(report: dict) -> list[Row]:
    """P4 (merged and unmerged adapter latency) and P4q (QA-LoRA kept quantized)."""
    p4 = report["P4_merged_inference"]["ratios"]
    rows = [
        ("P4 merged / base latency", f"{med(p4['merged_vs_base']):.3f}", "<= 1.01"),
        ("   adapter / base latency", f"{med(p4['adapter_vs_base']):.3f}", ""),
    ]
    p4q = report.get("P4q_qalora_inference")
    if p4q:
        rows.append(
            (
                f"P4q QA-LoRA {p4q['format']} merged / quantized base",
                f"{med(p4q['ratios']['merged_vs_quantized_base']):.3f}",
                "<= 1.01",
            )
        )
        rows.append(("    quantized / fp32 merged latency", f"{med(p4q['ratios']['quantized_vs_fp32']):.3f}", ""))
    return rows


def mfu_rows(report: dict) -> list[Row]:
    rows = []
    for name, value in report["P5_mfu"].items():
        if isinstance(value, dict):
            shown = (
                f"{value['mfu']:.3f} ({value['achieved_gflops']:.1f} GFLOP/s)"
                if value.get("valid", True)
                else f"INVALID: {value['mfu']:.2f} is outside (0, 1]; the machine was loaded, run it again quietly"
            )
            rows.append((f"P5 MFU {name}", shown, ">= 0.5"))
    return rows


def precision_rows(report: dict) -> list[Row]:
    figure = report.get("precision")
    if not figure:
        return []
    flags = " ".join(figure["cpu_flags"]) or "flags unknown"
    if figure.get("ran_on", "cpu") != "cpu":
        flags = figure["ran_on"]  # a GPU's figure: the host's flags say nothing of it
    rows = []
    for key, label in (
        ("bf16_vs_fp32_step", "bf16 / fp32 LoRA step"),
        ("bf16_vs_fp32_matmul", "bf16 / fp32 matmul"),
        ("nf4_bnb_kernel_vs_reference_eval", "nf4 eval, bnb CPU kernel / reference"),
    ):
        if key in figure:
            rows.append((label, f"{spread_text(figure[key])} ({flags})", ""))
    rows.append(("   train.precision auto on this device", figure["auto_resolves_to"], ""))
    return rows


def compile_rows(report: dict) -> list[Row]:
    comp = report.get("compile")
    if not comp:
        return []
    rows = [
        (
            f"compiled / eager step {method}",
            f"{spread_text(comp['compiled_vs_eager'][method])} (compile {comp['compile_seconds'][method]:.0f} s)",
            "",
        )
        for method in ("lora", "full")
    ]
    rows.append(("P2 compiled LoRA / compiled full", spread_text(comp["P2_compiled"]), "<= 0.75"))
    return rows


BARE_LABELS = {
    "lora": "LoRA r=8",
    "full": "full",
    "adalora": "AdaLoRA",
    "qlora_nf4": "QLoRA nf4",
    "lora_compiled": "LoRA r=8 compiled",
    "full_compiled": "full compiled",
}


def bare_rows(report: dict) -> list[Row]:
    """Each peftlab step / the bare loop's, then each ratio between methods, peftlab's beside the bare loop's."""
    bare = report.get("bare")
    if not bare:
        return []
    rows = [
        (f"peftlab / bare step, {BARE_LABELS[kind]}", spread_text(ratio), f"<= {ratio['target']}")
        for kind, ratio in bare["peftlab_vs_bare"].items()
    ]
    for name, figure in bare["method_ratios"].items():
        rows.append(
            (
                f"   {name.replace('_vs_', ' / ').replace('_', ' ')}",
                f"peftlab {med(figure['peftlab']):.3f}, bare {med(figure['bare']):.3f} "
                f"(x{figure['peftlab_vs_bare']:.3f}: the cost is {figure['cost_is']})",
                f"<= x{figure['target']}",
            )
        )
    return rows


def pin_rows(report: dict) -> list[Row]:
    """train.reproducible's cost: each method's CPU time a step per mode, and the two ratios (bench.pin)."""
    figure = report.get("pin")
    if not figure:
        return []
    branch = figure["mkl_branch"]
    rows = []
    for method in ("full", "lora"):
        f = figure[method]
        times = f"{f['unpinned_cpu_ms']:.1f}, {f['pinned_cpu_ms']:.1f}, {f['compatible_cpu_ms']:.1f} ms"
        rows.append((f"{method} step CPU unpinned, pinned, former pin", f"{times} (1 thread)", ""))
        ratios = [
            ("pinned (oneDNN products) / unpinned", "pinned_vs_unpinned"),
            (f"former pin (MKL {branch['compatible']}) / unpinned", "compatible_vs_unpinned"),
            ("pinned / former pin", "pinned_vs_compatible"),
            # the CPU's own arithmetic held to AVX2: an AVX2-only CPU's unpinned step
            (f"unpinned at AVX2 ({f['unpinned_avx2_cpu_ms']:.1f} ms): pinned / it", "pinned_vs_unpinned_avx2"),
            ("former pin / unpinned at AVX2", "compatible_vs_unpinned_avx2"),
            # candidates, not the pin (older records lack them): oneDNN at AVX512_CORE; the rest of MKL at AVX2
            (f"AVX512_CORE pin ({f.get('pinned_avx512_cpu_ms', 0):.1f} ms) / unpinned", "pinned_avx512_vs_unpinned"),
            (f"MKL AVX2 rest ({f.get('pinned_mkl_avx2_cpu_ms', 0):.1f} ms) / unpinned", "pinned_mkl_avx2_vs_unpinned"),
            ("MKL AVX2 rest / pinned", "pinned_mkl_avx2_vs_pinned"),
        ]
        rows += [(f"   {label}", spread_text(f[key]), "") for label, key in ratios if key in f]
    return rows


def monitor_rows(report: dict) -> list[Row]:
    if "monitor_cost" not in report:
        return []
    mc = report["monitor_cost"]
    return [
        ("monitors at log points / none", f"{spread_text(mc['ratio'], 4)} (log_every {mc['log_every']})", "<= 1.03")
    ]


def host_rows(report: dict) -> list[Row]:
    """P6 (a run's fixed cost) and peak RSS per method: CPU figures."""
    rows = p6_rows(report)
    for name, mem in (report.get("memory") or {}).items():
        rows.append(
            (
                f"peak RSS {name}",
                f"{mem['peak_rss_bytes'] / 2**20:.0f} MiB (weights {mem['weights_bytes'] / 2**20:.1f} MiB)",
                "",
            )
        )
    return rows


def p6_header(report: dict, load: str) -> str:
    p6 = report.get("P6_run_fixed_cost", {})
    run = p6.get("run")
    what = f"config {run['config']!r}, {run['method']}, seed {run['seed']}" if run else p6.get("skipped", "")
    quantized = (report.get("P6_quantized_run_fixed_cost") or {}).get("run")
    if quantized:
        what += f"; and its QLoRA run {quantized.get('variant', quantized['config'])!r}"
    return (
        f"peftlab bench P6: the default study's run ({what}), each of {p6.get('repeats', 0)} in a fresh worker "
        f"forked as a study forks them ({machine(report)}{load})"
    )


def p6_rows(report: dict) -> list[Row]:
    """P6: a run's fixed cost in CPU seconds, and its parts; the same of the QLoRA run where measured."""
    rows = p6_run_rows(report.get("P6_run_fixed_cost", {"skipped": "CPU only"}), "P6")
    if "P6_quantized_run_fixed_cost" in report:
        rows += p6_run_rows(report["P6_quantized_run_fixed_cost"], "P6 nf4")
    return rows


def p6_run_rows(p6: dict, label: str) -> list[Row]:
    rows = [
        (
            f"{label} run fixed cost, CPU s",
            f"{spread_text(p6['fixed_cpu_seconds'], 2)} of {p6['process_cpu_seconds']['median']:.1f} "
            f"(steps {p6['training_steps_cpu_seconds']['median']:.1f}, evaluation "
            f"{p6['evaluation_cpu_seconds']['median']:.1f})"
            if "fixed_cpu_seconds" in p6
            else p6["skipped"],
            f"<= {p6.get('target_cpu_seconds', 2.0):g}",
        )
    ]
    for name, part in p6.get("parts_cpu_seconds", {}).items():
        rows.append((f"  {label} {name}", spread_text(part, 3), ""))
    if "worker_start_wall_seconds" in p6:
        start, end = p6["worker_start_wall_seconds"], p6["worker_end_wall_seconds"]
        rows.append((f"  {label} worker start, end (wall s)", f"{spread_text(start, 3)}, {spread_text(end, 3)}", ""))
    return rows


def data_rows(report: dict) -> list[Row]:
    data = report.get("data_path")
    if not data:
        return []
    name = f"data path ({data.get('layout', 'imagefolder')}, {data['images']} images) / {data['model']} step"
    return [
        (
            name,
            f"{med(data['ratio']):.2f} [{data['ratio']['min']:.2f}-"
            f"{data['ratio']['max']:.2f}] ({med(data['data_images_per_second']):.0f} / "
            f"{med(data['step_images_per_second']):.1f} images/s, {data['num_workers']} workers, "
            f"{'cached, ' if data.get('cache') else ''}{data['device']})",
            ">= 2",
        )
    ]


def text_rows(report: dict) -> list[Row]:
    """The text figure: peftlab's GPT-2 LoRA step / the bare transformers + PEFT loop's, in wall and CPU
    time, with each one's tokens per second (per CPU second), and the first steps' losses."""
    text = report.get("text")
    if not text:
        return []
    tokens = text["tokens_per_second"]
    rows = []
    for clock, label, unit in (("wall", "wall time", "tokens/s"), ("cpu", "CPU time", "tokens/CPU-s")):
        ratio = text["peftlab_vs_bare"][clock]
        shown = (
            f"{spread_text(ratio)}, fastest {ratio['fastest']:.3f} ({med(tokens[clock]['peftlab_lora_c_attn']):.0f}"
            f" / {med(tokens[clock]['bare_peft_c_attn']):.0f} {unit})"
        )
        rows.append((f"text GPT-2 LoRA peftlab / bare step, {label}", shown, f"<= {text['target']}"))
    for clock, label in (("wall", "wall"), ("cpu", "CPU")):
        shown = f"{spread_text(text['qv_vs_bare'][clock])} ({med(tokens[clock]['peftlab_lora_qv']):.0f})"
        rows.append((f"   q,v slices / bare step, {label}", shown, ""))
    loss = text["first_step_loss"]
    rows.append(
        (
            "   first-step loss peftlab / bare",
            f"{loss['peftlab_lora_c_attn']:.6f} / {loss['bare_peft_c_attn']:.6f} "
            f"({text['trainable']['peftlab_lora_c_attn']:,} / {text['trainable']['bare_peft_c_attn']:,} trainable)",
            "",
        )
    )
    return rows


def text_header(report: dict) -> str:
    """The first line of a bench of the text figure alone: the model, batch, threads and load."""
    text = report["text"]
    start, end = text["load_average"]["start"][0], text["load_average"]["end"][0]
    where = f"{text['threads']} threads" if text["device"] == "cpu" else report["hardware"].get("gpu") or text["device"]
    if text.get("omp_wait_policy"):
        where += f" (OMP_WAIT_POLICY={text['omp_wait_policy']})"
    return (
        f"peftlab bench: text, GPT-2 shaped causal LM ({text['layers']} layers, width {text['width']}, "
        f"{text['heads']} heads, random weights), batch {text['batch']} x {text['length']} tokens, LoRA r={text['r']}, "
        f"{text['dtype']}, {where}, {report['repeats']} interleaved repeats after {text['warmup']} warm-up "
        f"({machine(report)}; load average {start:.1f} at the start, {end:.1f} at the end)"
    )


# the full bench's rows in print order; a bench of one figure (--only) prints its rows alone
ROWS = [
    peak_rows,
    step_rows,
    methods_rows,
    memory_figure_rows,
    inference_rows,
    mfu_rows,
    precision_rows,
    pin_rows,
    compile_rows,
    bare_rows,
    monitor_rows,
    text_rows,
    host_rows,
]


def figure_rows(report: dict) -> list[Row]:
    """(name, value, target) rows of the full bench's figures."""
    return [row for rows in ROWS for row in rows(report)]


def format_report(report: dict) -> str:
    load = ""
    if report.get("load_average_start") and report.get("load_average_end"):
        load = (
            f"; load average {report['load_average_start'][0]:.1f} at the start, "
            f"{report['load_average_end'][0]:.1f} at the end"
        )
    where = (
        f"{report['threads']} threads"
        if report.get("device", "cpu") == "cpu"
        else f"{report['hardware'].get('gpu') or report['device']}"
    )
    sizes = ", ".join(f"{k}={v}" for k, v in report.get("architecture", {}).items())
    # P3b alone times nothing in alternation: its processes each train once; P6 trains a run per worker
    repeats = "" if report.get("only") in ("P3b", "P6") else f", {report['repeats']} interleaved repeats"
    lines = [
        f"peftlab bench: {report['model']}{f' ({sizes})' if sizes else ''} at {report['img_size']} px, "
        f"batch {report['batch']}, "
        f"{report['dtype']}, {where}{repeats} "
        f"({machine(report)}{load})",
        "",
    ]
    # a bench of one figure (--only) shows its rows alone
    if report.get("only") == "P6":
        lines, rows = [p6_header(report, load), ""], p6_rows(report)
    elif report.get("only") == "text":
        lines, rows = [text_header(report), ""], text_rows(report)
    elif report.get("only") == "steps":
        rows = peak_rows(report) + step_rows(report) + mfu_rows(report)
    elif report.get("only") == "compile":
        rows = compile_rows(report)
    elif report.get("only") == "bare":
        rows = bare_rows(report)
    elif report.get("only") == "P3b":
        rows = p3b_rows(report)
    elif report.get("only") == "pin":
        rows = pin_rows(report)
    else:
        only = precision_rows(report) + methods_rows(report) + text_rows(report)
        rows = (figure_rows(report) if "peak" in report else only) + data_rows(report)
    width = max(len(r[0]) for r in rows)
    lines += [f"{name:<{width}}  {value:<40} {target}" for name, value, target in rows]
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(report, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v))
        + "\n"
    )
