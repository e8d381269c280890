"""The bench's report drawn as a PNG (``peftlab bench --png``): the text figure's tokens per second of each
step, in wall and CPU time (median, min-max bars), and peftlab's time per step / the bare loop's against
its target. Reads the report only: matplotlib, never torch."""

from __future__ import annotations

from pathlib import Path

from peftlab.utils.errors import UserError

LABELS = {
    "peftlab_lora_c_attn": "peftlab\nLoRA c_attn",
    "bare_peft_c_attn": "transformers + PEFT\nLoRA c_attn",
    "peftlab_lora_qv": "peftlab\nLoRA q,v slices",
}
CLOCKS = {"wall": "wall time (tokens/s)", "cpu": "CPU time (tokens per CPU-s)"}


def plot_text(report: dict, path: Path) -> None:
    """The text figure of ``report`` as a PNG at ``path``; a UserError where the report has none."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    text = report.get("text")
    if not text:
        raise UserError("peftlab bench --png draws the text figure: measure it (--only text, or the full bench)")
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    axes = figure.subplots(1, 3, width_ratios=[3, 3, 2])
    for ax, (clock, title) in zip(axes, CLOCKS.items()):
        values = text["tokens_per_second"][clock]
        names = [name for name in LABELS if name in values]
        medians = [values[n]["median"] for n in names]
        errors = [
            [m - values[n]["min"] for n, m in zip(names, medians)],
            [values[n]["max"] - m for n, m in zip(names, medians)],
        ]
        ax.bar(range(len(names)), medians, yerr=errors, capsize=4, color=["#0072B2", "#D55E00", "#56B4E9"])
        ax.set_xticks(range(len(names)), [LABELS[n] for n in names], fontsize=8)
        ax.set_title(title, fontsize=10)
    ratios = [text["peftlab_vs_bare"][clock] for clock in CLOCKS]
    ax = axes[2]
    ax.errorbar(
        range(len(ratios)),
        [r["median"] for r in ratios],
        yerr=[[r["median"] - r["min"] for r in ratios], [r["max"] - r["median"] for r in ratios]],
        fmt="o",
        capsize=4,
        color="#0072B2",
        label="median, min-max",
    )
    ax.plot(range(len(ratios)), [r["fastest"] for r in ratios], "x", color="0.2", label="fastest / fastest")
    ax.axhline(1.0, color="0.6", linewidth=0.8)
    ax.axhline(text["target"], color="#D55E00", linestyle="--", linewidth=0.8, label=f"target {text['target']}")
    ax.set_xticks(range(len(ratios)), ["wall", "CPU"])
    ax.set_xlim(-0.5, len(ratios) - 0.5)
    ax.set_title("peftlab / bare, time per step", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    start, end = text["load_average"]["start"][0], text["load_average"]["end"][0]
    figure.suptitle(
        f"GPT-2 shaped ({text['layers']} layers, width {text['width']}), LoRA r={text['r']}, batch {text['batch']} x "
        f"{text['length']} tokens, {text['dtype']}, {text['threads']} threads on {text['device']}\n"
        f"median and min-max of {ratios[0]['n']} interleaved steps each; load average {start:.1f} to {end:.1f}",
        fontsize=9,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))
