"""Every tie and every ‡, everywhere (issue 91 item 4): configurations tied at one trainable count and one correct
count (or within one test example, the tie rule) are all on the Pareto front, in its sentence, ringed in the
figure; the front is drawn through its members only; points drawn side by side keep the parameter order; a
configuration at another's tuned values (tune.share) carries its ‡ in the Pareto, significance and ranking
sentences and in the protocol table, by its display name."""

import json

import numpy as np
import pandas as pd
import pytest
from paperkinds import default_kind, set_results

from peftlab.analysis.figures import study as figures
from peftlab.analysis.figures.style import side_by_side
from peftlab.analysis.report.primary import order_lines, pareto_lines, primary_score
from peftlab.analysis.report.protocol_card import card, latex_card
from peftlab.analysis.stats.intervals import pareto_front, pareto_mask

# reads the report's and paper's text and tables, never a figure's pixels or fonts
FIGURES_DRAWN = ()

ONE_EXAMPLE = 1 / 2000  # the default kind's test set: 2,000 images


def test_configurations_tied_at_one_count_are_all_on_the_front():
    # two at 1,000 parameters within one test example (1/600), a third one example below them
    x, y = [1000, 1000, 1000, 10], [0.750, 0.7495, 0.7483, 0.6]
    assert list(pareto_mask(x, y)) == [True, False, False, True]
    assert list(pareto_mask(x, y, step=1 / 600)) == [True, True, False, True]
    # equal correct counts summed in another order: equal up to float rounding, a tie without any step
    same = [sum([0.1, 0.2, 0.3]) / 3, sum([0.3, 0.2, 0.1]) / 3]
    assert same[0] != same[1] and list(pareto_mask([5, 5], same)) == [True, True]
    # a tie at another count is no tie at this one: more parameters for the same score stays dominated
    assert list(pareto_mask([5, 6], [0.7, 0.7], step=0.01)) == [True, False]


def test_points_drawn_side_by_side_keep_the_parameter_order():
    """Three configurations at 75,658 spread around it, a fourth at 76,000 beside them: none crosses it."""
    x = np.array([75_658, 75_658, 75_658, 76_000, 1_930, 5_526_346], dtype=float)
    drawn = side_by_side(x)
    assert list(np.argsort(drawn, kind="stable")) == list(np.argsort(x, kind="stable"))
    assert drawn[0] < drawn[1] < drawn[2] < drawn[3] and drawn[3] == 76_000


@pytest.fixture
def tied_study(tmp_path):
    """The default kind, its borrowed LoRA r=8 on an int8 base (‡) at LoRA r=8's count with LoRA r=8's per-seed
    correct counts in another order and one example more: tied with it within one test example."""
    study = default_kind(tmp_path)
    lora = {0: 0.684, 1: 0.664, 2: 0.702}  # lora r=8's test top-1 per seed (studyfiles)
    seeds = sorted(lora)

    def change(name, seed, result):
        if name == "lorar8int8":
            result["metrics"]["test_top1"] = lora[seeds[(seeds.index(seed) + 1) % 3]] + (
                ONE_EXAMPLE if seed == seeds[0] else 0
            )

    set_results(study, change)
    return study


def runs_of(study):
    from peftlab.analysis.results.load import load_results

    return load_results(study)


def test_the_report_names_the_tied_borrowed_configuration_on_the_front_with_its_mark(tied_study):
    df = runs_of(tied_study)
    front = pareto_front(df, step=ONE_EXAMPLE)
    on = list(front.loc[front["on_front"], "variant"])
    assert "lora r=8" in on and "lora r=8 quant=int8" in on
    assert not pareto_front(df)["on_front"][front["variant"] == "lora r=8"].item()  # one example below: off it
    line = pareto_lines(front, primary_score(df), {}, {"lora r=8 quant=int8": "lora r=8"})[0]
    assert "lora r=8, lora r=8 quant=int8 ‡, full." in line


def test_the_report_orders_the_tie_as_one_and_marks_the_borrowed_configuration(tied_study):
    from peftlab.analysis.results.tuning_choices import borrowed_configurations
    from peftlab.analysis.stats.intervals import summarize

    df = runs_of(tied_study)
    primary = summarize(df, metric="metrics.test_top1")
    line = order_lines(primary, primary_score(df), {}, ONE_EXAMPLE, borrowed_configurations(df))[0]
    assert "> lora r=8 quant=int8 ‡ (68.3) = lora r=8 (68.3) > " in line, line


def test_the_figure_rings_every_tied_point_and_draws_the_front_through_members_only(tied_study, drawn, tmp_path):
    df = runs_of(tied_study)
    figures.plot_accuracy_vs_params(df, tmp_path)
    ax = drawn["accuracy_vs_params"].axes[0]
    points = {c.get_label(): (c.lines[0].get_xdata()[0], c.lines[0].get_ydata()[0]) for c in ax.containers}
    front = next(line for line in ax.lines if line.get_label() == "Pareto front")
    ringed = list(zip(front.get_xdata(), front.get_ydata()))
    members = ["linear", "lora r=4", "lora r=8", "lora r=8 quant=int8", "full"]
    assert np.allclose(ringed, [points[m] for m in members])  # in parameter order, the tie side by side
    assert points["lora r=8"][0] < points["lora r=8 quant=int8"][0]  # drawn apart, around their one count
    for name, (x, y) in points.items():  # the staircase meets no point that is off it
        if name not in members:
            steps_x, steps_y = figures.front_steps(front.get_xdata(), front.get_ydata())
            assert all(not (np.isclose(x, sx) and np.isclose(y, sy)) for sx, sy in zip(steps_x, steps_y)), name


@pytest.mark.e2e
def test_the_paper_names_the_tie_with_its_mark_in_every_sentence(tied_study, tmp_path):
    from test_paper import macros

    from peftlab.analysis.paper.build import write_paper

    write_paper(tied_study, tmp_path / "paper", compile=False)
    defined = macros((tmp_path / "paper" / "results.tex").read_text())
    mark = r"lora r=8 quant=int8$^{\ddagger}$"
    assert defined["paretoNames"] == f"full, linear, lora r=4, lora r=8 and {mark}"  # in the tables' order
    # every sentence that names it marks it; the note that says what the mark means names it after the mark
    unmarked = {n: t for n, t in defined.items() if t.count("lora r=8 quant=int8") != t.count(mark)}
    assert set(unmarked) == {"borrowedNote"}, unmarked
    assert defined["borrowedNote"].startswith(r"$^{\ddagger}$: not tuned itself")


def protocol_runs() -> pd.DataFrame:
    """Two configurations with a protocol record and different batch sizes, the second borrowed."""
    return pd.DataFrame(
        {
            "run_id": ["a", "b"],
            "variant": ["lora r=16", "lora r=16 quant=nf4"],
            "method": ["lora", "lora"],
            "seed": [0, 0],
            "status": "completed",
            "protocol.resolution": 224,
            "protocol.batch_size": [64, 32],
            "borrowed_from": [None, "lora r=16"],
        }
    )


def test_the_protocol_table_names_configurations_as_the_tables_do_with_their_mark(tmp_path):
    rows, _ = card(tmp_path, protocol_runs(), {"lora": "LoRA"})
    assert ("batch size", "LoRA r=16: 64; LoRA r=16 quant=nf4 ‡: 32") in rows
    tex = latex_card(tmp_path, protocol_runs(), {"lora": "LoRA"})
    assert r"LoRA r=16: 64; LoRA r=16 quant=nf4$^{\ddagger}$: 32 \\" in tex
    assert r"$^{\ddagger}$: not tuned itself; ran at the values tuned for another configuration" in tex
    untouched = json.dumps(card(tmp_path, protocol_runs().drop(columns="borrowed_from"), {})[0])
    assert "‡" not in untouched and "lora r=16 quant=nf4: 32" in untouched
