"""The report's training-health section and its two figures, from hand-written run files."""

import json
from pathlib import Path

import pytest

from peftlab.analysis.figures.health import plot_gradient_flow, plot_rank_utilisation, short_layer
from peftlab.analysis.report.health import load_gradient_flow, load_health, load_rank_use, report_section

LAYERS = ["blocks.0.attn.qkv.q", "blocks.0.attn.qkv.v", "blocks.1.attn.qkv.q", "blocks.1.attn.qkv.v"]


def write_run(
    study: Path,
    run_id: str,
    variant: str,
    method: str,
    seed: int,
    *,
    r=None,
    verdict="stable",
    converged=False,
    frozen_equal=True,
    status="completed",
    exploding=0,
    merge_diff=None,
):
    run_dir = study / "runs" / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(
        json.dumps(
            {"run_id": run_id, "variant": variant, "method": method, "seed": seed, "groups": ["main"], "axes": {}}
        )
    )
    adapters = (
        {
            layer: {
                "r": r,
                "effective_rank": r * (0.3 + 0.1 * i),
                "rank90": 2,
                "stable_rank": 1.5,
                "norm_update": 0.1,
                "norm_A": 1.0,
                "norm_B": 0.1,
                "singular_values": [0.1] * r,
            }
            for i, layer in enumerate(LAYERS)
        }
        if r
        else {}
    )
    result = {
        "status": status,
        "step": 100,
        "config": {"method": {"name": method, "r": r}},
        "metrics": {"test_top1": 0.5},  # sound: a completed record without them is damaged, in no table
        "health": {
            "verdict": verdict,
            "counts": {"exploding": exploding, "vanishing": 0},
            "first_step": {"exploding": 40 if exploding else None, "vanishing": None},
            "groups": {"exploding": {"blocks.1.attn.qkv.v.lora_B": exploding} if exploding else {}, "vanishing": {}},
        },
        "convergence": {
            "converged": converged,
            "gain_last_window": 0.002 if converged else 0.03,
            "reason": "val top-1 rose +3.00 pts in the last 25% of training (>= 0.5 pts)",
            "steps_to": {"90": 25, "95": 50, "99": 75},
        },
        "frozen_base": {"equal": frozen_equal, "rebuilt_equal": True},
        "monitors": {"adapters": adapters, "share_of_train_seconds": 0.004},
        "merge": None
        if r is None
        else {"max_abs_diff": merge_diff or 1e-6, "tolerance": 1e-4, "ok": (merge_diff or 1e-6) <= 1e-4},
    }
    (run_dir / "result.json").write_text(json.dumps(result))
    groups = (
        [f"{layer}.lora_{ab}" for layer in LAYERS for ab in "AB"] if r else ["blocks.0.mlp.fc1", "blocks.1.mlp.fc1"]
    )
    with open(run_dir / "monitors.jsonl", "w") as f:
        for step in (10, 20, 30):
            grads = {g: 0.01 * step for g in groups} | {"head": 0.5}
            f.write(json.dumps({"kind": "monitors", "step": step, "grad": grads, "flags": [], "adapters": {}}) + "\n")


@pytest.fixture
def study(tmp_path):
    write_run(tmp_path, "a0", "full", "full", 0, converged=True)
    write_run(tmp_path, "a1", "full", "full", 1, converged=True)
    write_run(tmp_path, "b0", "lora r=4", "lora", 0, r=4)
    write_run(tmp_path, "b1", "lora r=4", "lora", 1, r=4, verdict="warnings", exploding=2)
    write_run(tmp_path, "c0", "lora r=8", "lora", 0, r=8, frozen_equal=False, merge_diff=5.91)
    return tmp_path


def test_tables_from_run_files(study):
    health = load_health(study)
    assert list(health["run_id"]) == ["a0", "a1", "b0", "b1", "c0"]
    assert health.set_index("run_id").loc["b1", "flagged_groups"] == "blocks.1.attn.qkv.v.lora_B"
    rank = load_rank_use(study)
    assert len(rank) == 3 * len(LAYERS) and rank["rank_ratio"].between(0, 1).all()
    flow = load_gradient_flow(study)
    assert set(flow["seed"]) == {0}  # one seed per configuration
    # blocks.0 of a LoRA run: four groups of 0.01 * step -> sqrt(4) * 0.01 * step
    row = flow[(flow["run_id"] == "b0") & (flow["step"] == 20) & (flow["layer"] == "blocks.0")]
    assert row["grad_norm"].item() == pytest.approx(2 * 0.2)
    assert short_layer("blocks.11.attn.qkv.v") == "11.v" and short_layer("blocks.2.mlp.fc1") == "2.fc1"


def test_figures_are_written(study, tmp_path):
    out = tmp_path / "figures"
    rank_paths = plot_rank_utilisation(load_rank_use(study), out)
    flow_paths = plot_gradient_flow(load_gradient_flow(study), out)
    assert [p.name for p in rank_paths] == ["rank_utilisation.png", "rank_utilisation.pdf"]
    assert [p.name for p in flow_paths] == ["gradient_flow.png", "gradient_flow.pdf"]
    assert all(p.stat().st_size > 1000 for p in rank_paths + flow_paths)
    assert plot_rank_utilisation(load_rank_use(study).iloc[0:0], out) is None


def test_report_section_says_what_failed_the_checks(study, tmp_path):
    text = "\n".join(report_section(study, tmp_path / "figures"))
    assert "| lora r=4 | 2 | 1 / 1 / 0 | 2 | 0 | 0 of 2 | +3.00 | 2 of 2 |" in text
    assert "| full | 2 | 2 / 0 / 0 | 0 | 0 | 2 of 2 | +0.20 | 2 of 2 |" in text
    assert (
        "- lora r=4 seed 1 [b1]: warnings; exploding 2 (first at step 40); layers: blocks.1.attn.qkv.v.lora_B" in text
    )
    assert (
        "**3 of 5 runs did not converge** (val top-1 still rose >= 0.5 pts in their last 25%): the study is "
        "under-trained" in text
    )
    assert "in 4 of 5 runs; **changed in c0**" in text
    assert "**Merge check failed in 1 of 3 adapter runs**" in text
    assert "- lora r=8 seed 0 [c0]: max |diff| 5.91 (tolerance 0.0001)" in text
    assert "figures/rank_utilisation.png" in text and "figures/gradient_flow.png" in text


def test_runs_without_monitor_results_are_said_so(tmp_path):
    run_dir = tmp_path / "runs" / "x"
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(
        json.dumps({"run_id": "x", "variant": "v", "method": "full", "seed": 0, "groups": ["main"], "axes": {}})
    )
    (run_dir / "result.json").write_text(
        json.dumps({"status": "completed", "merge": {"ok": True, "max_abs_diff": 0.0, "tolerance": 1e-4}})
    )
    text = "\n".join(report_section(tmp_path, tmp_path / "figures"))
    assert "No run recorded monitor results" in text
    assert "within tolerance in all 1 adapter runs" in text


def test_rank_use_of_many_configurations_is_a_grid_in_forward_order(tmp_path):
    """Beyond 6 configurations the markers would overlap: a configurations x layers grid instead,
    layers in depth then forward order (q, k, v, proj, fc1, fc2)."""
    import pandas as pd

    from peftlab.analysis.figures.health import _layer_key, plot_rank_utilisation

    layers = [
        "blocks.0.mlp.fc2",
        "blocks.0.attn.proj",
        "blocks.0.attn.qkv.q",
        "blocks.1.attn.qkv.v",
        "blocks.0.mlp.fc1",
        "blocks.0.attn.qkv.k",
    ]
    assert [layer.rsplit(".", 1)[-1] for layer in sorted(layers, key=_layer_key)] == [
        "q",
        "k",
        "proj",
        "fc1",
        "fc2",
        "v",
    ]
    rows = [
        {"variant": f"config {v}", "seed": s, "layer": layer, "rank_ratio": 0.1 * v}
        for v in range(8)
        for s in range(2)
        for layer in layers
    ]
    paths = plot_rank_utilisation(pd.DataFrame(rows), tmp_path)
    assert paths and all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_health_figures_take_the_study_palette_and_display_names(study, tmp_path, monkeypatch):
    """Rank use and gradient flow colour and name a configuration as every other figure does: the
    report's palette (keyed by method, so a figure without full fine-tuning keeps LoRA's colour)."""
    import matplotlib.colors

    import peftlab.analysis.figures.health as health_figures
    from peftlab.analysis.figures.style import study_palette

    drawn = []
    monkeypatch.setattr(health_figures, "save_figure", lambda fig, out_dir, name: drawn.append(fig) or [])
    palette = study_palette(load_health(study))  # full and LoRA, as the report's table has them
    labels = {"lora r=4": "LoRA ($r{=}4$)"}
    health_figures.plot_rank_utilisation(load_rank_use(study), tmp_path, labels=labels, palette=palette)
    health_figures.plot_gradient_flow(load_gradient_flow(study), tmp_path, labels=labels, palette=palette)
    legend = drawn[0].legends[0]
    names = [text.get_text() for text in legend.get_texts()]
    assert names == ["LoRA ($r{=}4$)", "lora r=8"]
    colors = [matplotlib.colors.to_hex(bars.lines[0].get_color()) for bars in drawn[0].axes[0].containers]
    assert colors == [palette["variant"]["lora r=4"], palette["variant"]["lora r=8"]]
    titles = [ax.get_title() for ax in drawn[1].axes if ax.get_visible()]
    assert titles == ["full (seed 0)", "LoRA ($r{=}4$) (seed 0)", "lora r=8 (seed 0)"]


@pytest.mark.parametrize("recorded", [None, False])  # False: as result files recorded it before the verdict was None
def test_runs_without_validation_get_no_convergence_verdict(tmp_path, recorded):
    """Final runs on train + val (data.trainval) have no validation curve: no "did not converge", and the
    section says why there is no verdict."""
    for seed in range(4):
        write_run(tmp_path, f"t{seed}", "lora", "lora", seed, r=4)
        path = tmp_path / "runs" / f"t{seed}" / "result.json"
        result = json.loads(path.read_text())
        result["convergence"] = {
            "converged": recorded,
            "gain_last_window": None,
            "reason": "no evaluation on the validation split",
            "steps_to": {"90": None, "95": None, "99": None},
        }
        path.write_text(json.dumps(result))
    text = "\n".join(report_section(tmp_path, tmp_path / "figures"))
    assert "did not converge" not in text and "runs converged" not in text
    assert "| lora | 4 | 4 / 0 / 0 | 0 | 0 | no verdict | n/a | 4 of 4 |" in text
    assert "Convergence: no verdict for any run: no evaluation on the validation split (4 runs)." in text


def test_damaged_monitor_lines_are_left_out_and_counted_where_the_figure_is(study, tmp_path):
    """A line of monitors.jsonl cut short, not an object, or a monitor record of another shape is left out of the
    gradient flow, and the report says how many and where (issue 78, round 7's leftover: they were a traceback or
    silent)."""
    from peftlab.analysis.report.health import health_figure_lines

    sound = load_gradient_flow(study)
    with open(study / "runs" / "a0" / "monitors.jsonl", "a") as f:
        f.write('{"kind": "monitors", "step": 40, "grad": {"head": 0.1\n')  # line 4: cut short
        f.write("[1, 2]\n")  # line 5
        f.write(json.dumps({"kind": "monitors", "step": "50", "grad": {"head": 0.1}}) + "\n")  # line 6
        f.write(json.dumps({"kind": "monitors", "step": 60, "grad": {"head": "NaN"}}) + "\n")  # line 7
        f.write(json.dumps({"kind": "eval", "step": 60}) + "\n")  # another kind: not damaged
    flow = load_gradient_flow(study)
    assert flow.equals(sound) and flow.attrs["damaged_lines"] == {"a0": [4, 5, 6, 7]}
    lines = health_figure_lines(study, tmp_path / "figures")
    assert (
        "4 damaged lines of monitors.jsonl (not a monitor record: cut short, or of another shape) left out of "
        "the gradient flow: `a0` lines 4, 5, 6, 7." in lines
    )
    assert not any("damaged" in line for line in health_figure_lines(study / "nothing", tmp_path / "f2"))
