import numpy as np
import pandas as pd
import pytest
from PIL import Image

from peftlab.analysis import figures


def assert_png_and_pdf(paths, out_dir, name):
    assert paths == [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    png, pdf = paths
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        assert image.width > 900  # at least 3 inches at 300 dpi
    assert pdf.read_bytes().startswith(b"%PDF")


@pytest.fixture
def importance():
    modules = ["q", "k", "v", "proj", "fc1", "fc2"]
    return pd.DataFrame(
        [{"layer": layer, "module": m, "score": np.sin(layer + i) + 1} for layer in range(4) for i, m in enumerate(modules)]
    )


def test_accuracy_vs_params(synthetic_study, tmp_path):
    paths = figures.plot_accuracy_vs_params(synthetic_study, tmp_path)
    assert_png_and_pdf(paths, tmp_path, "accuracy_vs_params")


def test_quantization_tradeoff(synthetic_study, tmp_path):
    paths = figures.plot_quantization_tradeoff(synthetic_study, tmp_path)
    assert_png_and_pdf(paths, tmp_path, "quantization_tradeoff")


def test_importance_heatmap(importance, tmp_path):
    assert_png_and_pdf(figures.plot_importance_heatmap(importance, tmp_path), tmp_path, "importance_heatmap")


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
    assert_png_and_pdf(figures.plot_ablation(study, axis, tmp_path), tmp_path, name)


def test_seed_boxplots(synthetic_study, tmp_path):
    assert_png_and_pdf(figures.plot_seed_boxplots(synthetic_study, tmp_path), tmp_path, "seed_boxplots")


def only_unquantized(study):
    return study[study["config.quant.mode"] == "none"]


def only_failures(study):
    return study.assign(status="failed")


@pytest.mark.parametrize(
    "draw",
    [
        lambda study, out: figures.plot_accuracy_vs_params(only_failures(study), out),
        lambda study, out: figures.plot_quantization_tradeoff(only_unquantized(study), out),
        lambda study, out: figures.plot_quantization_tradeoff(study[study["config.quant.mode"] != "none"], out),
        lambda study, out: figures.plot_importance_heatmap(None, out),
        lambda study, out: figures.plot_importance_heatmap(pd.DataFrame(columns=["layer", "module", "score"]), out),
        lambda study, out: figures.plot_convergence(None, out),
        lambda study, out: figures.plot_convergence(pd.DataFrame(columns=["run_id", "variant", "step", "val_top1"]), out),
        lambda study, out: figures.plot_cost(study.drop(columns=["timing.train_seconds", "memory.peak_rss_bytes"]), out),
        lambda study, out: figures.plot_ablation(study, "config.train.lr", out),  # one value only
        lambda study, out: figures.plot_ablation(study, "config.method.dropout", out),  # no such column
        lambda study, out: figures.plot_seed_boxplots(only_failures(study), out),
    ],
    ids=[
        "accuracy_no_completed_run",
        "quantization_only_none",
        "quantization_no_reference",
        "importance_none",
        "importance_empty",
        "convergence_none",
        "convergence_empty",
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
