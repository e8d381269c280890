import matplotlib.colors
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from PIL import Image

from peftlab.analysis.figures import ablation as ablation_figure
from peftlab.analysis.figures import quantization as quantization_figure
from peftlab.analysis.figures import study as figures
from peftlab.analysis.figures.style import MARKERS, study_palette
from peftlab.analysis.stats.intervals import pareto_front


def assert_png_and_pdf(paths, out_dir, name):
    assert paths == [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    png, pdf = paths
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        assert image.width > 900  # at least 3 inches at 300 dpi
    assert pdf.read_bytes().startswith(b"%PDF")


def test_accuracy_vs_params(synthetic_study, tmp_path):
    paths = figures.plot_accuracy_vs_params(synthetic_study, tmp_path)
    assert_png_and_pdf(paths, tmp_path, "accuracy_vs_params")


def test_quantization_tradeoff(synthetic_study, tmp_path):
    paths = quantization_figure.plot_quantization_tradeoff(synthetic_study, tmp_path)
    assert_png_and_pdf(paths, tmp_path, "quantization_tradeoff")


def test_convergence(synthetic_curves, tmp_path):
    assert_png_and_pdf(figures.plot_convergence(synthetic_curves, tmp_path), tmp_path, "convergence")


def test_cost(synthetic_study, tmp_path):
    assert_png_and_pdf(figures.plot_cost(synthetic_study, tmp_path), tmp_path, "cost")


@pytest.mark.parametrize(
    "axis, name",
    [("config.method.r", "ablation_method_r"), ("config.method.target_modules", "ablation_method_target_modules")],
)
def test_ablation(synthetic_study, tmp_path, axis, name):
    study = synthetic_study.copy()
    study["config.method.target_modules"] = [["q", "v"] if i % 2 else ["qkv"] for i in range(len(study))]
    assert_png_and_pdf(ablation_figure.plot_ablation(study, axis, tmp_path), tmp_path, name)


def test_seed_boxplots(synthetic_study, tmp_path):
    assert_png_and_pdf(figures.plot_seed_boxplots(synthetic_study, tmp_path), tmp_path, "seed_boxplots")


def test_seed_boxplots_mark_every_run_at_its_seed_s_place(synthetic_study, drawn, tmp_path):
    figures.plot_seed_boxplots(synthetic_study, tmp_path)
    ax = drawn["seed_boxplots"].axes[0]
    palette = study_palette(synthetic_study)
    done = synthetic_study[synthetic_study["status"] == "completed"]
    assert len(ax.collections) == len(palette["variants"])  # one strip of dots per configuration
    for i, (variant, dots) in enumerate(zip(palette["variants"], ax.collections)):
        runs = done[done["variant"] == variant].sort_values("seed")
        points = dots.get_offsets()
        assert len(points) == len(runs) == 3  # one marker per seed; the diverged run of lora r=16 has none
        order = np.argsort(points[:, 0])
        np.testing.assert_allclose(points[order, 0], i + np.array([-0.15, 0.0, 0.15]))  # seeds 0, 1, 2 left to right
        np.testing.assert_allclose(points[order, 1], 100 * runs["metrics.test_top1"].to_numpy())
    assert ax.get_title() == "one dot per run;\nseeds 0, 1, 2 from left to right in each box"


def test_seed_boxplots_of_many_configurations_draw_one_per_row(drawn, tmp_path):
    """Beyond MANY_BOXES configurations (the methods study's 48), one box per row, the first on top: side by
    side they were a strip too wide to read on a page; each seed's dot keeps its place within its box."""
    from peftlab.analysis.figures.study import MANY_BOXES

    variants = [f"lora r={r}" for r in range(1, MANY_BOXES + 3)]
    table = pd.DataFrame(
        {
            "variant": [v for v in variants for _ in range(3)],
            "method": "lora",
            "seed": [0, 1, 2] * len(variants),
            "status": "completed",
            "metrics.test_top1": [0.70 + 0.001 * i for i in range(3 * len(variants))],
        }
    )
    figures.plot_seed_boxplots(table, tmp_path)
    fig = drawn["seed_boxplots"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == variants  # names on the rows
    assert ax.yaxis_inverted() and ax.get_xlabel() == "Test top-1 (%)"
    first = ax.collections[0].get_offsets()
    np.testing.assert_allclose(first[:, 1], [-0.15, 0.0, 0.15])  # seeds 0, 1, 2 from the top down
    np.testing.assert_allclose(first[:, 0], [70.0, 70.1, 70.2])
    assert ax.get_title() == "one dot per run;\nseeds 0, 1, 2 from top to bottom in each box"


def one_evaluation_per_run():
    # each run evaluated once, at its last step: no curve (the empty frame, x from 15.25 to 16.75)
    return pd.DataFrame(
        {
            "run_id": ["a", "b", "c"],
            "variant": ["full", "lora r=4", "lora r=4"],
            "method": ["full", "lora", "lora"],
            "seed": [0, 0, 1],
            "step": [16, 16, 16],
            "val_top1": [0.7, 0.6, 0.62],
        }
    )


def only_unquantized(study):
    return study[study["config.quant.mode"] == "none"]


def only_failures(study):
    return study.assign(status="failed")


@pytest.mark.parametrize(
    "draw",
    [
        lambda study, out: figures.plot_accuracy_vs_params(only_failures(study), out),
        lambda study, out: quantization_figure.plot_quantization_tradeoff(only_unquantized(study), out),
        lambda study, out: quantization_figure.plot_quantization_tradeoff(
            study[study["config.quant.mode"] != "none"], out
        ),
        lambda study, out: figures.plot_convergence(None, out),
        lambda study, out: figures.plot_convergence(
            pd.DataFrame(columns=["run_id", "variant", "step", "val_top1"]), out
        ),
        lambda study, out: figures.plot_convergence(one_evaluation_per_run(), out),
        lambda study, out: figures.plot_cost(
            study.drop(columns=[c for c in study if c.startswith(("timing.", "memory."))]), out
        ),
        lambda study, out: ablation_figure.plot_ablation(study, "config.train.lr", out),  # one value only
        lambda study, out: ablation_figure.plot_ablation(study, "config.method.dropout", out),  # no such column
        lambda study, out: figures.plot_seed_boxplots(only_failures(study), out),
    ],
    ids=[
        "accuracy_no_completed_run",
        "quantization_only_none",
        "quantization_no_reference",
        "convergence_none",
        "convergence_empty",
        "convergence_one_step_per_run",
        "cost_no_columns",
        "ablation_one_value",
        "ablation_no_column",
        "boxplots_no_completed_run",
    ],
)
def test_absent_data_draws_nothing(synthetic_study, tmp_path, draw):
    out_dir = tmp_path / "figures"
    assert draw(synthetic_study, out_dir) is None
    assert not out_dir.exists() or not any(out_dir.iterdir())


def legend_texts(fig):
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


def test_no_two_of_many_methods_share_hue_and_marker():
    table = pd.DataFrame({"variant": [f"m{i:02d}" for i in range(40)], "method": [f"m{i:02d}" for i in range(40)]})
    palette = study_palette(table)
    pairs = {(palette["method"][m], palette["marker"][m]) for m in palette["methods"]}
    assert len(pairs) == 40
    assert [palette["marker"][m] for m in palette["methods"][:8]] == MARKERS  # the first eight as before


def test_one_palette_hue_by_method_shade_by_configuration(synthetic_study):
    palette = study_palette(synthetic_study)
    assert palette["methods"] == ["full", "linear", "lora"]
    assert palette["variants"] == [
        "full",
        "linear",
        "lora r=4",
        "lora r=8",
        "lora r=8 int8",
        "lora r=8 nf4",
        "lora r=16",
    ]
    lora = [palette["variant"][v] for v in palette["variants"][2:]]
    assert len(set(lora)) == 5
    # shades of one hue: light to dark in sorted order
    lightness = [sum(matplotlib.colors.to_rgb(c)) for c in lora]
    assert lightness == sorted(lightness, reverse=True)
    assert palette["variant"]["full"] == palette["method"]["full"]  # a method with one configuration: its hue


def test_each_configuration_of_a_method_gets_a_marker_of_its_own(drawn, tmp_path):
    """Shades of one hue do not tell a method's configurations apart in print (issue 82: three ablation LoRAs in
    near-identical pinks; the methods study's 22 PEFT types in 22 blues): each configuration of a method with
    several gets its own marker too, the first its method's, in every figure that draws a point per
    configuration; a method with one configuration keeps its method's marker."""
    types = [f"peft peft_type=T{i}" for i in range(7)]
    variants = ["full", "lora", "lora r=2", *types]
    table = pd.DataFrame(
        {
            "variant": [v for v in variants for _ in range(2)],
            "method": [v.split(" ")[0] for v in variants for _ in range(2)],
            "seed": [0, 1] * len(variants),
            "status": "completed",
            "metrics.test_top1": [0.7, 0.72] * len(variants),
            "params.trainable": [1000 + 10 * i for i in range(len(variants)) for _ in range(2)],
        }
    )
    palette = study_palette(table)
    own = palette["variant_marker"]
    assert set(own) == {"lora", "lora r=2", *types} and "full" not in own
    assert len({own[t] for t in types}) == len(types) and own[types[0]] == palette["marker"]["peft"]
    assert own["lora"] == palette["marker"]["lora"] and own["lora"] != own["lora r=2"]  # the first: its method's
    figures.plot_accuracy_vs_params(table, tmp_path, palette=palette)
    drawn_markers = {
        c.get_label(): c.lines[0].get_marker() for c in drawn["accuracy_vs_params"].axes[0].containers if c.lines[0]
    }
    assert {drawn_markers[t] for t in types} == {own[t] for t in types}
    assert drawn_markers["lora"] != drawn_markers["lora r=2"]


def test_a_configuration_has_the_same_colour_in_every_figure(synthetic_study, synthetic_curves, drawn, tmp_path):
    palette = study_palette(synthetic_study)
    curves = synthetic_curves.assign(method="lora")
    figures.plot_accuracy_vs_params(synthetic_study, tmp_path, palette=palette)
    figures.plot_convergence(curves, tmp_path, palette=palette)
    figures.plot_seed_boxplots(synthetic_study, tmp_path, palette=palette)
    accuracy = {t.get_label(): t.lines[0].get_color() for t in drawn["accuracy_vs_params"].axes[0].containers}
    convergence = {line.get_label(): line.get_color() for line in drawn["convergence"].axes[0].lines}
    assert accuracy["lora r=8"] == convergence["lora r=8"] == palette["variant"]["lora r=8"]
    assert convergence["lora r=4"] == palette["variant"]["lora r=4"]
    box_colors = [tuple(c.get_facecolor()[0]) for c in drawn["seed_boxplots"].axes[0].collections]
    assert box_colors[3] == matplotlib.colors.to_rgba(palette["variant"]["lora r=8"])
    # legends in the palette's sorted order
    assert legend_texts(drawn["convergence"])[:3] == ["lora r=4", "lora r=8", "lora r=16"]
    assert legend_texts(drawn["accuracy_vs_params"])[:7] == palette["variants"]


def test_rank_ablation_draws_methods_without_a_rank_as_reference_lines(drawn, tmp_path):
    # full and linear carry the base config's r = 8 they never use (the complaint)
    rows = []
    for variant, method, r, scores in [
        ("full", "full", 8, [0.74, 0.75, 0.76]),
        ("linear", "linear", 8, [0.59, 0.60, 0.58]),
        ("lora r=4", "lora", 4, [0.67, 0.68, 0.66]),
        ("lora r=8", "lora", 8, [0.68, 0.69, 0.70]),
    ]:
        for seed, score in enumerate(scores):
            rows.append(
                {
                    "variant": variant,
                    "method": method,
                    "seed": seed,
                    "status": "completed",
                    "config.method.r": r,
                    "metrics.test_top1": score,
                }
            )
    table = pd.DataFrame(rows)
    assert ablation_figure.axis_methods(table, "config.method.r") == ["lora"]
    ablation_figure.plot_ablation(table, "config.method.r", tmp_path)
    ax = drawn["ablation_method_r"].axes[0]
    references = {line.get_label(): line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == "--"}
    assert references == {"full (no rank r)": pytest.approx(75.0), "linear (no rank r)": pytest.approx(59.0)}
    points = [container.lines[0].get_xydata()[0] for container in ax.containers]
    assert [tuple(p) for p in points] == [(4, pytest.approx(67.0)), (8, pytest.approx(69.0))]  # lora only
    assert legend_texts(drawn["ablation_method_r"]) == ["lora", "full (no rank r)", "linear (no rank r)"]


def test_an_ablation_figure_takes_the_study_groups_that_vary_its_axis():
    """lora_ablations.yaml's shape: the main configuration in every group, a rank group and an alpha
    group whose alpha = 2r is set beside r. Neither figure pools the other group's configurations."""
    table = pd.DataFrame(
        [
            {
                "variant": "lora",
                "groups": "main,rank,alpha",
                "axes": "",
                "config.method.r": 8,
                "config.method.lora_alpha": 16,
            },
            {
                "variant": "lora r=4",
                "groups": "rank",
                "axes": "method.r",
                "config.method.r": 4,
                "config.method.lora_alpha": 8,
            },
            {
                "variant": "lora alpha=32",
                "groups": "alpha",
                "axes": "method.lora_alpha",
                "config.method.r": 8,
                "config.method.lora_alpha": 32,
            },
        ]
    )
    assert list(ablation_figure.runs_of_axis(table, "config.method.r")["variant"]) == ["lora", "lora r=4"]
    assert list(ablation_figure.runs_of_axis(table, "config.method.lora_alpha")["variant"]) == ["lora", "lora alpha=32"]
    unsaid = table.drop(columns="axes")
    assert len(ablation_figure.runs_of_axis(unsaid, "config.method.r")) == 3  # no axes column: every run


def test_figures_use_display_names(synthetic_study, drawn, tmp_path):
    labels = {"lora r=4": "LoRA ($r{=}4$)", "full": "Full FT"}
    figures.plot_seed_boxplots(synthetic_study, tmp_path, labels=labels)
    ticks = [t.get_text() for t in drawn["seed_boxplots"].axes[0].get_xticklabels()]
    assert ticks[:3] == ["Full FT", "linear", "LoRA ($r{=}4$)"]
    drawn["seed_boxplots"].canvas.draw()  # mathtext renders


def test_legend_and_latex_table_use_the_study_labels(synthetic_study, drawn, tmp_path):
    from peftlab.analysis.report import tables
    from peftlab.analysis.stats.intervals import summarize

    labels = {"lora r=4": "LoRA ($r{=}4$), 50% & more", "full": "Full FT_1", "lora": "LoRA"}
    figures.plot_accuracy_vs_params(synthetic_study, tmp_path, labels=labels)
    legend = legend_texts(drawn["accuracy_vs_params"])
    assert {"LoRA ($r{=}4$), 50% & more", "Full FT_1", "LoRA r=8", "linear"} <= set(legend), legend
    drawn["accuracy_vs_params"].canvas.draw()  # the mathtext of the legend renders
    tex = tables.latex_table(summarize(synthetic_study, "metrics.test_top1"), labels=labels)
    assert r"LoRA ($r{=}4$), 50\% \& more" in tex and r"Full FT\_1" in tex and "LoRA r=8" in tex


def test_a_label_mathtext_cannot_parse_is_shown_as_written(synthetic_study, drawn, tmp_path, caplog):
    labels = {"lora r=4": r"LoRA ($\textsc{r}{=}4$)"}
    figures.plot_seed_boxplots(synthetic_study, tmp_path, labels=labels)
    ticks = [t.get_text() for t in drawn["seed_boxplots"].axes[0].get_xticklabels()]
    assert r"LoRA (\$\textsc{r}{=}4\$)" in ticks
    drawn["seed_boxplots"].canvas.draw()  # no mathtext error
    assert "not matplotlib mathtext" in caplog.text


def test_cost_bars_are_means_with_each_run_as_a_dot_from_zero(synthetic_study, drawn, tmp_path):
    study = synthetic_study.copy()
    # a large spread: mean - sd would go below zero
    study.loc[study["variant"] == "linear", "timing.train_seconds"] = [5.0, 6.0, 300.0]
    figures.plot_cost(study, tmp_path)
    fig = drawn["cost"]
    assert [ax.get_title() for ax in fig.axes] == [
        "Training time",
        "Peak RSS of the run",
        "Frozen base weights as stored",
    ]
    time_axis = fig.axes[0]
    assert time_axis.get_xlim()[0] == 0
    assert not time_axis.lines  # no error bars
    linear = [ax for ax in time_axis.collections][1].get_offsets()[:, 0]
    assert sorted(linear) == pytest.approx(sorted(np.array([5.0, 6.0, 300.0]) / 60))  # minutes
    assert "dots: individual runs" in fig.get_suptitle()


def test_cost_says_full_fine_tuning_freezes_no_base_weights(synthetic_study, drawn, tmp_path):
    study = synthetic_study.copy()
    study["memory.base_weights_bytes"] = np.where(study["method"] == "full", 0, 4_000_000)
    figures.plot_cost(study, tmp_path)
    weights_axis = drawn["cost"].axes[2]
    assert [t.get_text() for t in weights_axis.texts] == ["none frozen: trains every weight"]
    assert len(weights_axis.collections) == study[study["method"] != "full"]["variant"].nunique()  # dots elsewhere


def quantized_table():
    """Hand-written results: fp32 LoRA and an nf4 and an int8 base, 3 seeds, plus a full run."""
    fp32_bytes = 1_000_000
    rows = []
    for variant, mode, stored, top1, merged in [
        ("lora r=8", "none", 1_000_000, [0.80, 0.82, 0.81], [0.80, 0.82, 0.81]),
        ("lora r=8 quant=nf4", "nf4", 135_000, [0.79, 0.80, 0.80], [0.75, 0.77, 0.76]),
        ("lora r=8 quant=int8", "int8", 257_000, [0.80, 0.82, 0.80], [0.80, 0.81, 0.80]),
    ]:
        for seed in range(3):
            rows.append(
                {
                    "run_id": f"{variant}-{seed}",
                    "variant": variant,
                    "method": "lora",
                    "seed": seed,
                    "status": "completed",
                    "config.seed": seed,
                    "config.method.r": 8,
                    "config.quant.mode": mode,
                    "config.quant.double_quant": mode == "nf4",
                    "config.train.lr": 1e-3,
                    "metrics.test_top1": top1[seed],
                    "metrics.merged_test_top1": merged[seed],
                    "memory.base_weights_bytes": stored,
                    "memory.base_weights_fp32_bytes": fp32_bytes,
                }
            )
    rows.append(
        {
            "run_id": "full-0",
            "variant": "full",
            "method": "full",
            "seed": 0,
            "status": "completed",
            "config.seed": 0,
            "config.method.r": 8,
            "config.quant.mode": "none",
            "config.quant.double_quant": False,
            "config.train.lr": 1e-4,
            "metrics.test_top1": 0.9,
            "memory.base_weights_bytes": fp32_bytes,
            "memory.base_weights_fp32_bytes": fp32_bytes,
        }
    )
    return pd.DataFrame(rows)


def test_quantization_points_by_hand():
    points = quantization_figure.quantization_points(quantized_table()).set_index(["variant", "model"])
    nf4 = points.loc[("lora r=8 quant=nf4", "unmerged")]
    # differences to fp32 on seeds 0, 1, 2: -0.01, -0.02, -0.01
    assert nf4["memory_ratio"] == pytest.approx(0.135)
    assert nf4["n_pairs"] == 3 and nf4["reference"] == "lora r=8"
    assert nf4["mean_diff"] == pytest.approx(-0.04 / 3)
    half = scipy.stats.t.ppf(0.975, 2) * np.std([-0.01, -0.02, -0.01], ddof=1) / np.sqrt(3)
    assert (nf4["ci_low"], nf4["ci_high"]) == (pytest.approx(-0.04 / 3 - half), pytest.approx(-0.04 / 3 + half))
    merged = points.loc[("lora r=8 quant=nf4", "merged")]
    assert merged["mean_diff"] == pytest.approx(-0.05)  # -0.05, -0.05, -0.05
    assert points.loc[("lora r=8 quant=int8", "unmerged"), "memory_ratio"] == pytest.approx(0.257)
    assert points.loc[("lora r=8 quant=int8", "unmerged"), "mean_diff"] == pytest.approx(-0.01 / 3)
    assert len(points) == 4  # the fp32 runs and full fine-tuning are no points


def test_quantization_figure_from_a_table_with_the_quantized_base_columns(tmp_path):
    assert_png_and_pdf(
        quantization_figure.plot_quantization_tradeoff(quantized_table(), tmp_path), tmp_path, "quantization_tradeoff"
    )


def test_quantization_points_need_the_same_config_and_seed():
    table = quantized_table()
    table.loc[table["config.quant.mode"] == "none", "config.train.lr"] = 5e-4  # another learning rate: no reference
    assert quantization_figure.quantization_points(table).empty
    table = quantized_table()
    table = table[~((table["config.quant.mode"] == "none") & (table["seed"] == 2))]
    assert set(quantization_figure.quantization_points(table)["n_pairs"]) == {2}


def test_accuracy_vs_params_with_many_configurations_names_the_front_beside_its_points(
    synthetic_study, tmp_path, drawn
):
    """Beyond 8 configurations, names beside every point would cover them: the legend names them,
    only the Pareto front's points keep their names, and the log axis reads 10K, 1M rather than 10^4."""
    many = pd.concat(
        [synthetic_study.assign(variant=synthetic_study["variant"] + suffix) for suffix in ("", " b")],
        ignore_index=True,
    )
    assert many["variant"].nunique() > figures.MAX_POINT_LABELS
    figures.plot_accuracy_vs_params(many, tmp_path)
    fig = drawn["accuracy_vs_params"]
    ax = fig.axes[0]
    named = {line for t in ax.texts for line in t.get_text().split("\n")}
    means = pareto_front(many)
    front = set(means.loc[means["on_front"], "variant"])
    assert named and named <= front, (named, front)
    assert legend_texts(fig)[-1] == "Pareto front"
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all(t[-1] in "KMG" or t.replace(".", "").isdigit() for t in labels), labels


# the adaptive-rank study of a review: four LoRA rank strategies (uniform and linear_decay at one budget, so one
# trainable count) and AdaLoRA, judged by test perplexity
RANK_STRATEGIES = [
    ("lora uniform", "lora", 73_728, 30.0),
    ("lora linear_decay", "lora", 73_728, 30.6),
    ("lora attention_heavy", "lora", 61_440, 30.3),
    ("lora empirical", "lora", 86_016, 29.8),
    ("adalora", "adalora", 92_160, 32.0),
]


def rank_strategy_study():
    rows = [
        {
            "run_id": f"{variant}-{seed}",
            "status": "completed",
            "variant": variant,
            "method": method,
            "seed": seed,
            "metrics.test_perplexity": perplexity + 0.6 * seed,
            "params.trainable": trainable,
        }
        for variant, method, trainable, perplexity in RANK_STRATEGIES
        for seed in range(3)
    ]
    return pd.DataFrame(rows)


def test_configurations_with_one_trainable_count_are_drawn_side_by_side(drawn, tmp_path):
    """Else one marker and interval hide the other's: each is drawn apart from the other, left to right in the
    legend's order, near their count; the ticks and the Pareto front stay those of the true counts."""
    study = rank_strategy_study()
    figures.plot_accuracy_vs_params(study, tmp_path, metric="metrics.test_perplexity")
    ax = drawn["accuracy_vs_params"].axes[0]
    points = {c.get_label(): c.lines[0].get_xdata()[0] for c in ax.containers}
    bars = {c.get_label(): c.lines[2][0].get_segments()[0][0][0] for c in ax.containers}  # the interval's x
    assert points["lora linear_decay"] < 73_728 < points["lora uniform"]  # linear_decay first in the legend
    assert points["lora uniform"] / points["lora linear_decay"] == pytest.approx(np.exp(0.03 * np.log(92_160 / 61_440)))
    assert bars == points
    assert [points[v] for v in ("lora attention_heavy", "lora empirical", "adalora")] == [61_440, 86_016, 92_160]
    assert "side by side" in ax.get_xlabel()
    assert figures.shared_counts(study, "metrics.test_perplexity") == [(73_728, ["lora linear_decay", "lora uniform"])]
    # the front on the true counts: attention_heavy (fewest), uniform (lower than linear_decay), empirical
    front = next(line for line in ax.lines if line.get_label() == "Pareto front")
    assert list(front.get_ydata()) == pytest.approx([30.9, 30.6, 30.4])
    assert list(front.get_xdata()) == [61_440, points["lora uniform"], 86_016]


def test_configurations_with_distinct_counts_stay_at_their_counts(synthetic_study, drawn, tmp_path):
    distinct = synthetic_study[~synthetic_study["variant"].isin(["lora r=8 int8", "lora r=8 nf4"])]
    figures.plot_accuracy_vs_params(distinct, tmp_path)
    ax = drawn["accuracy_vs_params"].axes[0]
    trainable = distinct.groupby("variant")["params.trainable"].first()
    assert {c.get_label(): c.lines[0].get_xdata()[0] for c in ax.containers} == trainable.to_dict()
    assert ax.get_xlabel() == "Trainable parameters" and figures.shared_counts(distinct) == []


def rank_strategy_curves():
    rows = [
        {"run_id": f"{variant}-{seed}", "variant": variant, "method": method, "seed": seed, "step": step}
        | {"val_perplexity": perplexity * 100 / step + 3 * seed}
        for variant, method, _, perplexity in RANK_STRATEGIES
        for seed in range(3)
        for step in (25, 50, 75, 100)
    ]
    return pd.DataFrame(rows)


def test_configurations_of_one_method_get_distinct_line_styles(drawn, tmp_path):
    """Shades of one hue whose bands overlap cannot be told apart: each LoRA configuration has its own line
    style (solid, dashed, dotted, dash-dot in the palette's order), the legend shows it, the hue stays."""
    curves = rank_strategy_curves()
    palette = study_palette(curves)
    figures.plot_convergence(curves, tmp_path, metric="val_perplexity")
    fig = drawn["convergence"]
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    lora = ["lora attention_heavy", "lora empirical", "lora linear_decay", "lora uniform"]
    assert [lines[v].get_linestyle() for v in lora] == ["-", "--", ":", "-."]
    assert lines["adalora"].get_linestyle() == "-"  # a method's first configuration: solid
    assert {lines[v].get_color() for v in lora} == {palette["variant"][v] for v in lora}  # shades of one hue
    legend = {text.get_text(): handle for handle, text in zip(fig.legends[0].legend_handles, fig.legends[0].texts)}
    assert [legend[v].get_linestyle() for v in lora] == ["-", "--", ":", "-."]


def test_the_palette_gives_each_configuration_of_a_method_its_own_line_style(synthetic_study):
    palette = study_palette(synthetic_study)
    lora = [v for v in palette["variants"] if palette["method_of"][v] == "lora"]
    assert len({str(palette["linestyle"][v]) for v in lora}) == len(lora) == 5
    assert palette["linestyle"]["full"] == palette["linestyle"]["lora r=4"] == "-"


def test_a_convergence_band_of_accuracies_stays_within_0_and_100_percent(drawn, tmp_path):
    """Two seeds far apart near the top: the t-band of their mean reaches past 130%; the band stops at 100%, and
    at 0% below, and the y axis a hair beyond it (issue 82: an interval cut by the axes' edge)."""
    rows = [
        {"run_id": f"s{seed}", "variant": "bitfit", "step": step, "val_top1": top1}
        for seed, values in enumerate(((0.80, 0.99), (0.70, 0.90)))
        for step, top1 in zip((10, 20), values)
    ]
    figures.plot_convergence(pd.DataFrame(rows), tmp_path)
    ax = drawn["convergence"].axes[0]
    low, high = ax.get_ylim()
    assert -2 <= low and 100 < high <= 102  # a hair beyond 100%: a band or bar ending there is inside the axes
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.max() <= 100 and band.min() >= 0


def test_an_ablation_caption_promises_reference_lines_only_where_they_are_drawn():
    """A rank group of LoRA runs only (the other methods in groups that do not vary r) draws no reference lines."""
    rows = [
        {"variant": v, "method": m, "groups": g, "axes": a, "seed": s, "status": "completed"}
        | {"config.method.r": r, "metrics.test_top1": 0.5 + 0.01 * s}
        for v, m, g, a, r in [
            ("lora", "lora", "main,rank", "", 8),
            ("lora r=16", "lora", "rank", "method.r", 16),
            ("bitfit", "bitfit", "main", "", 8),
        ]
        for s in (0, 1)
    ]
    table = pd.DataFrame(rows)
    assert not ablation_figure.draws_references(table, "config.method.r")
    assert ablation_figure.draws_references(table.drop(columns="axes"), "config.method.r")  # bitfit pooled in


def test_a_method_s_configurations_are_shaded_in_the_order_of_the_values_their_ablation_varies():
    """The method's own configuration (LoRA at r = 8, named "lora") sits between r = 2 and r = 16, light to
    dark, whatever rate each configuration's search chose; its name would sort it first."""
    table = pd.DataFrame(
        {
            "variant": ["lora r=16", "lora", "lora r=2", "full"],
            "method": ["lora", "lora", "lora", "full"],
            "config.method.r": [16, 8, 2, np.nan],
            "config.train.lr": [1e-3, 3e-2, 1e-2, 1e-4],  # tuned per configuration: not what the ablation varies
        }
    )
    palette = study_palette(table)
    assert palette["variants"] == ["full", "lora r=2", "lora", "lora r=16"]
    lightness = [sum(matplotlib.colors.to_rgb(palette["variant"][v])) for v in ["lora r=2", "lora", "lora r=16"]]
    assert lightness == sorted(lightness, reverse=True)


@pytest.mark.parametrize(
    "low, high, labelled",
    [(1.5e3, 1.9e5, {"2K", "5K", "20K", "50K"}), (2.5e3, 7.5e3, {"3K", "4K", "5K", "6K", "7K"}), (1e2, 1e7, set())],
)
def test_a_log_axis_labels_the_minor_ticks_its_span_leaves_room_for(low, high, labelled):
    """Points below an axis's first labelled power of ten sit beside a label: at 2 and 5 times each power
    on an axis of under three decades, at every minor tick under one decade, none on wider axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from peftlab.analysis.figures.ticks import log_tick_labels

    fig, ax = plt.subplots()
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    log_tick_labels(ax.xaxis, compact=True)
    fig.canvas.draw()
    formatter = ax.xaxis.get_minor_formatter()
    shown = [x for x in ax.xaxis.get_minorticklocs() if low <= x <= high]
    minor = {formatter(x, i) for i, x in enumerate(shown)} - {""}
    plt.close(fig)
    assert minor == labelled


def test_a_search_followed_past_its_grid_labels_its_log_axis_at_powers_of_ten_alone():
    """Eight searched rates (a 6-point grid and 2 added points) between 3e-4 and 0.1: matplotlib's minor labels at
    2 and 5 times each power ran into each other in a tuning panel; only the powers of ten are labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from peftlab.analysis.figures.ticks import searched_ticks

    values = [3e-4, 1e-3, 1.73e-3, 3e-3, 1e-2, 3e-2, 5.48e-2, 0.1]
    fig, ax = plt.subplots()
    ax.set_xscale("log")
    ax.plot(values, range(len(values)))
    searched_ticks(ax.xaxis, values)
    fig.canvas.draw()
    minor = {t.get_text() for t in ax.xaxis.get_minorticklabels()} - {""}
    major = [t.get_text() for t in ax.xaxis.get_majorticklabels() if t.get_text()]
    plt.close(fig)
    assert minor == set() and {"0.001", "0.01", "0.1"} <= set(major)
