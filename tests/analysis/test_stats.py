import numpy as np
import pandas as pd
import pytest
import scipy.stats

from peftlab.analysis.stats import comparisons, intervals
from peftlab.analysis.stats.power import minimum_detectable_effect, paired_ttest_power, pairs_needed


def runs(values_by_variant, status_by_variant=None):
    """A results table from {variant: [metric value per seed 0, 1, ...]}."""
    status_by_variant = status_by_variant or {}
    rows = []
    for variant, values in values_by_variant.items():
        for seed, value in enumerate(values):
            rows.append(
                {
                    "run_id": f"{variant}-{seed}",
                    "status": status_by_variant.get(variant, "completed"),
                    "variant": variant,
                    "seed": seed,
                    "metrics.test_top1": value,
                }
            )
    return pd.DataFrame(rows)


# Holm


def test_holm_matches_statsmodels_values():
    # statsmodels.stats.multitest.multipletests([0.01, 0.04, 0.03], method="holm")[1]
    np.testing.assert_allclose(comparisons.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_holm_hand_computed_step_down_with_monotonicity():
    # sorted p * (5, 4, 3, 2, 1) = 0.05, 0.08, 0.09, 0.08, 0.05; then running maximum
    np.testing.assert_allclose(comparisons.holm([0.01, 0.02, 0.03, 0.04, 0.05]), [0.05, 0.08, 0.09, 0.09, 0.09])


def test_holm_clips_at_one_and_leaves_nan_out_of_the_count():
    np.testing.assert_allclose(comparisons.holm([0.5, 0.6]), [1.0, 1.0])
    adjusted = comparisons.holm([0.01, np.nan, 0.02])
    assert np.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2]], [0.02, 0.02])
    assert comparisons.holm([]).shape == (0,)


# Bootstrap intervals


def test_bootstrap_ci_is_scipys_bca_interval():
    values = np.array([0.71, 0.73, 0.72, 0.745, 0.70, 0.728])
    low, high, method = intervals.bootstrap_ci(values, seed=3)
    expected = scipy.stats.bootstrap((values,), np.mean, method="BCa", rng=np.random.default_rng(3))
    assert method == "BCa"
    assert (low, high) == tuple(expected.confidence_interval)
    assert low < values.mean() < high


def test_bootstrap_ci_is_reproducible_with_a_seed():
    values = [0.71, 0.73, 0.72, 0.745, 0.70]
    assert intervals.bootstrap_ci(values, seed=1) == intervals.bootstrap_ci(values, seed=1)


def test_bootstrap_ci_of_identical_values_falls_back_to_percentile():
    # scipy's BCa returns NaN here (DESIGN.md, Statistics)
    assert intervals.bootstrap_ci([0.8, 0.8, 0.8]) == (0.8, 0.8, "percentile")


def test_bootstrap_ci_falls_back_to_percentile_when_bca_returns_nan(monkeypatch):
    real_bootstrap = scipy.stats.bootstrap

    def bca_gives_nan(data, statistic, **kwargs):
        result = real_bootstrap(data, statistic, **kwargs)
        if kwargs["method"] == "BCa":
            result.confidence_interval = type(result.confidence_interval)(np.nan, np.nan)
        return result

    monkeypatch.setattr(scipy.stats, "bootstrap", bca_gives_nan)
    values = [0.71, 0.73, 0.72, 0.745]
    low, high, method = intervals.bootstrap_ci(values)
    assert method == "percentile"
    assert np.isfinite(low) and np.isfinite(high) and low <= high


def test_bootstrap_ci_needs_two_values():
    low, high, method = intervals.bootstrap_ci([0.8, np.nan])
    assert np.isnan(low) and np.isnan(high) and method == "none"


def test_t_interval_is_scipys():
    values = np.array([0.71, 0.73, 0.72])
    expected = scipy.stats.t.interval(0.95, 2, loc=values.mean(), scale=scipy.stats.sem(values))
    np.testing.assert_allclose(intervals.t_interval(values), expected)
    assert np.isnan(intervals.t_interval([0.7])).all()


def test_confidence_interval_dispatches_on_the_interval_name():
    values = [0.71, 0.73, 0.72, 0.745, 0.70]
    assert intervals.confidence_interval(values) == (*intervals.t_interval(values), "t")
    assert intervals.confidence_interval(values, "bca") == intervals.bootstrap_ci(values)
    low, high, method = intervals.confidence_interval(values, "percentile")
    expected = scipy.stats.bootstrap(
        (np.array(values),), np.mean, method="percentile", n_resamples=9999, rng=np.random.default_rng(0)
    )
    assert method == "percentile" and (low, high) == tuple(expected.confidence_interval)
    assert intervals.confidence_interval([0.7], "t")[2] == "none"
    with pytest.raises(ValueError, match="expected one of t, bca, percentile"):
        intervals.confidence_interval(values, "wald")


def test_with_few_seeds_the_t_interval_is_wider_than_the_bootstrap():
    # the complaint: at n = 2 the bootstrap interval is just the two values
    values = [0.618, 0.634]
    low, high, _ = intervals.bootstrap_ci(values, method="percentile")
    assert (low, high) == (0.618, 0.634)
    t_low, t_high = intervals.t_interval(values)
    assert t_high - t_low > 10 * (high - low)


def test_captions_name_the_interval_and_the_bootstrap_settings():
    assert intervals.describe_interval() == "95% Student-t interval of the mean over seeds"
    assert (
        intervals.describe_interval("bca")
        == "95% BCa bootstrap interval of the mean over seeds (9999 resamples, seed 0)"
    )


# summarize


def test_summarize_counts_only_completed_runs_with_the_metric():
    table = pd.concat(
        [
            runs({"full": [0.80, 0.82, 0.81], "lora": [0.79, np.nan]}),
            runs({"lora": [0.10]}, status_by_variant={"lora": "diverged"}),
        ],
        ignore_index=True,
    )
    summary = intervals.summarize(table).set_index("variant")
    assert list(summary.index) == ["full", "lora"]
    assert summary.loc["full", "n"] == 3
    assert summary.loc["full", "mean"] == pytest.approx(0.81)
    assert summary.loc["full", "std"] == pytest.approx(0.01)
    assert summary.loc["full", "ci_method"] == "t"  # the default interval
    assert (summary.loc["full", "ci_low"], summary.loc["full", "ci_high"]) == intervals.t_interval([0.80, 0.82, 0.81])
    assert summary.loc["lora", "n"] == 1
    assert summary.loc["lora", "mean"] == pytest.approx(0.79)
    assert np.isnan(summary.loc["lora", ["std", "ci_low", "ci_high"]].astype(float)).all()
    assert summary.loc["lora", "ci_method"] == "none"


def test_summarize_uses_the_interval_asked_for():
    table = runs({"full": [0.80, 0.82, 0.81, 0.83, 0.79]})
    bca = intervals.summarize(table, interval="bca").iloc[0]
    assert (bca["ci_low"], bca["ci_high"], bca["ci_method"]) == intervals.bootstrap_ci(table["metrics.test_top1"])
    assert (bca["t_ci_low"], bca["t_ci_high"]) == intervals.t_interval(table["metrics.test_top1"])


def test_summarize_carries_costs_and_constant_config_columns():
    table = runs({"lora r=8": [0.8, 0.81], "lora r=16": [0.82, 0.83]})
    table["method"] = "lora"
    table["config.method.r"] = [8, 8, 16, 16]
    table["config.method.target_modules"] = [["q", "v"]] * 4
    table["config.train.lr"] = [1e-3, 2e-3, 1e-3, 1e-3]  # varies within "lora r=8"
    table["params.trainable"] = [100, 100, 200, 200]
    summary = intervals.summarize(table)
    assert list(summary["config.method.r"]) == [8, 16]
    assert list(summary["params.trainable"]) == [100.0, 200.0]
    assert summary["config.method.target_modules"].iloc[0] == ["q", "v"]
    assert "config.train.lr" not in summary.columns
    assert list(summary.columns[:10]) == [
        "variant",
        "metric",
        "n",
        "mean",
        "std",
        "ci_low",
        "ci_high",
        "ci_method",
        "t_ci_low",
        "t_ci_high",
    ]


def test_summarize_by_several_columns_keeps_missing_keys():
    table = runs({"full": [0.80, 0.82], "lora": [0.79, 0.78]})
    table["config.method.r"] = [np.nan, np.nan, 8, 8]
    summary = intervals.summarize(table, by=["variant", "config.method.r"])
    assert list(summary["variant"]) == ["full", "lora"]
    assert np.isnan(summary["config.method.r"].iloc[0])


# Paired comparisons

BASELINE = [0.801, 0.812, 0.795, 0.808, 0.790, 0.815]
BETTER = [0.811, 0.827, 0.798, 0.815, 0.802, 0.816]  # differences all positive, no ties


def test_paired_p_values_are_scipys():
    table = runs({"full": BASELINE, "lora": BETTER})
    row = comparisons.paired_comparisons(table, "full").iloc[0]
    assert row["variant"] == "lora" and row["n_pairs"] == 6
    assert row["p_ttest"] == pytest.approx(scipy.stats.ttest_rel(BETTER, BASELINE).pvalue, rel=1e-12)
    assert row["p_wilcoxon"] == pytest.approx(scipy.stats.wilcoxon(BETTER, BASELINE).pvalue, rel=1e-12)
    # exact test: all 6 differences positive -> two-sided p = 2 / 2**6
    assert row["p_wilcoxon"] == pytest.approx(2 / 64)
    diffs = np.subtract(BETTER, BASELINE)
    assert row["mean_diff"] == pytest.approx(diffs.mean())
    assert row["cohens_dz"] == pytest.approx(diffs.mean() / diffs.std(ddof=1))
    assert row["win_rate"] == 1.0


def test_paired_comparisons_holm_across_variants_and_significance():
    worse = [b - d for b, d in zip(BASELINE, [0.001, -0.002, 0.003, 0.0, 0.002, -0.001])]
    table = runs({"full": BASELINE, "lora": BETTER, "linear": worse})
    result = comparisons.paired_comparisons(table, "full").set_index("variant")
    np.testing.assert_allclose(result["p_ttest_holm"], comparisons.holm(result["p_ttest"]))
    np.testing.assert_allclose(result["p_wilcoxon_holm"], comparisons.holm(result["p_wilcoxon"]))
    assert list(result["significant"]) == list(result["p_ttest_holm"] < 0.05)
    assert result.loc["lora", "significant"]
    assert not result.loc["linear", "significant"]


def test_paired_comparisons_use_matched_seeds_only():
    table = runs({"full": [0.80, 0.81, 0.79], "lora": [0.82, 0.83, 0.80, 0.50, 0.40]})
    row = comparisons.paired_comparisons(table, "full").iloc[0]
    assert row["n_pairs"] == 3
    assert row["mean_diff"] == pytest.approx(np.mean([0.02, 0.02, 0.01]))


def test_failed_runs_do_not_pair():
    table = pd.concat(
        [runs({"full": [0.80, 0.81, 0.79], "lora": [0.82, 0.83]}), runs({"lora": [0.1, 0.1, 0.1]}, {"lora": "failed"})],
        ignore_index=True,
    )
    assert comparisons.paired_comparisons(table, "full").iloc[0]["n_pairs"] == 2


def test_wilcoxon_needs_five_pairs():
    table = runs({"full": BASELINE[:4], "lora": BETTER[:4]})
    row = comparisons.paired_comparisons(table, "full").iloc[0]
    assert np.isnan(row["p_wilcoxon"]) and np.isnan(row["p_wilcoxon_holm"])
    assert not row["significant_wilcoxon"]
    assert np.isfinite(row["p_ttest"])


def test_identical_results_give_no_p_values_and_no_effect_size():
    table = runs({"full": BASELINE, "same": BASELINE})
    row = comparisons.paired_comparisons(table, "full").iloc[0]
    assert row["mean_diff"] == 0
    assert np.isnan(row[["p_ttest", "p_wilcoxon", "cohens_dz"]].astype(float)).all()
    assert not row["significant"]
    assert row["win_rate"] == 0.5 and row["prob_improvement"] == 0.5


def test_constant_difference_up_to_float_noise_gives_no_t_test():
    # 0.82 - 0.81 and 0.81 - 0.80 differ in the last bits; scipy alone reports p ~ 0
    table = runs({"full": [0.80, 0.81, 0.70], "lora": [0.81, 0.82, 0.71]})
    row = comparisons.paired_comparisons(table, "full").iloc[0]
    assert row["sd_diff"] == 0
    assert np.isnan(row["p_ttest"]) and np.isnan(row["cohens_dz"])
    assert row["win_rate"] == 1.0


def test_probability_of_improvement_over_cross_pairs_is_mann_whitney_u_over_nm():
    x, y = [1.0, 2.0, 2.0], [1.0, 3.0]
    # pairs: (1,1) 0.5, (1,3) 0, (2,1) 1, (2,3) 0, (2,1) 1, (2,3) 0 -> 2.5 / 6
    assert comparisons.probability_of_improvement(x, y) == pytest.approx(2.5 / 6)
    u = scipy.stats.mannwhitneyu(x, y).statistic
    assert comparisons.probability_of_improvement(x, y) == pytest.approx(u / 6)


def test_paired_comparisons_report_win_rate_and_rliables_probability_of_improvement_apart():
    table = runs({"full": [0.80, 0.81], "lora": [0.805, 0.79, 0.90]})
    row = comparisons.paired_comparisons(table, "full").iloc[0]
    assert row["win_rate"] == 0.5  # matched seeds 0, 1: one win, one loss
    # all pairs: 0.805 beats 0.80 only, 0.79 beats none, 0.90 beats both -> 3 / 6
    assert row["prob_improvement"] == pytest.approx(3 / 6)
    assert row["prob_improvement_low"] <= row["prob_improvement"] <= row["prob_improvement_high"]
    assert (row["prob_improvement_low"], row["prob_improvement_high"]) == comparisons.probability_of_improvement_ci(
        [0.805, 0.79, 0.90], [0.80, 0.81]
    )


def test_probability_of_improvement_by_hand_one_task():
    x, y = [0.80, 0.82, 0.81], [0.81, 0.79]
    # (.80,.81) 0  (.80,.79) 1  (.82,.81) 1  (.82,.79) 1  (.81,.81) 0.5  (.81,.79) 1 -> 4.5 / 6
    assert comparisons.probability_of_improvement(x, y) == pytest.approx(0.75)
    assert comparisons.probability_of_improvement(x, x) == pytest.approx(0.5)  # rliable: identical scores give 0.5
    assert np.isnan(comparisons.probability_of_improvement(x, []))


def test_probability_of_improvement_averages_tasks_like_rliable():
    # task A as above: 0.75; task B: (1,2) 0, (1,3) 0, (2,2) 0.5, (2,3) 0 -> 0.125
    x = [[0.80, 0.82, 0.81], [1.0, 2.0]]
    y = [[0.81, 0.79], [2.0, 3.0]]
    assert comparisons.probability_of_improvement(x, y) == pytest.approx((0.75 + 0.125) / 2)
    # rliable's layout: a (runs x tasks) matrix
    matrix_x = np.array([[0.80, 1.0], [0.82, 2.0]])
    matrix_y = np.array([[0.81, 2.0], [0.79, 3.0]])
    # task A: (.80,.81) 0, (.80,.79) 1, (.82,.81) 1, (.82,.79) 1 -> 0.75; task B 0.125
    assert comparisons.probability_of_improvement(matrix_x, matrix_y) == pytest.approx((0.75 + 0.125) / 2)


def test_probability_of_improvement_interval_by_hand():
    # y is one run (0.5), so each resample's P(X > Y) is the share of ones among 10 draws
    # from x: k / 10 with k ~ Binomial(10, 0.9). P(k <= 6) = 0.013 < 2.5% < P(k <= 7) = 0.070,
    # and P(k = 10) = 0.35 > 2.5%: the 95% percentile interval is [0.7, 1.0].
    x = [1.0] * 9 + [0.0]
    low, high = comparisons.probability_of_improvement_ci(x, [0.5])
    assert (low, high) == (pytest.approx(0.7), pytest.approx(1.0))
    assert comparisons.probability_of_improvement_ci(x, [0.5]) == (low, high)  # fixed seed


def test_probability_of_improvement_interval_resamples_within_tasks():
    # X always wins task A and always loses task B, whatever runs are drawn within a task:
    # every stratified resample gives 0.5. Pooling the runs of both tasks would not.
    low, high = comparisons.probability_of_improvement_ci([[1.0, 1.0], [0.0, 0.0]], [[0.5], [0.5]])
    assert (low, high) == (0.5, 0.5)


def test_iqm_is_the_25_percent_trimmed_mean_of_all_runs_and_tasks():
    # 8 scores pooled, 2 cut at each end: mean(3, 4, 5, 6)
    assert comparisons.iqm([[1, 2, 3, 4], [5, 6, 7, 8]]) == pytest.approx(4.5)
    assert comparisons.iqm(np.array([[1, 5], [2, 6], [3, 7], [4, 8]])) == pytest.approx(4.5)  # runs x tasks
    assert comparisons.iqm([0.7, 0.8, 0.9, 10.0]) == pytest.approx(0.85)
    # each task's runs are constant: every stratified resample is mean(1, 1, 5, 5) = 3
    assert comparisons.iqm_ci([[1, 1, 1, 1], [5, 5, 5, 5]]) == (3.0, 3.0)
    low, high = comparisons.iqm_ci([[0.70, 0.72, 0.75, 0.71], [0.50, 0.55, 0.52, 0.58]])
    assert low < comparisons.iqm([[0.70, 0.72, 0.75, 0.71], [0.50, 0.55, 0.52, 0.58]]) < high


def test_aggregate_over_tasks_names_algorithms_without_their_dataset():
    table = runs(
        {
            "full data=a": [0.80, 0.82, 0.81],
            "full data=b": [0.60, 0.61, 0.62],
            "lora data=a": [0.81, 0.79, 0.80],
            "lora data=b": [0.63, 0.60, 0.64],
            "lora r=4 data=a": [0.7, 0.7, 0.7],
        }
    )
    table["config.data.name"] = [v.rsplit("=", 1)[1] for v in table["variant"]]
    result = comparisons.aggregate_over_tasks(table, baseline="full data=a").set_index("algorithm")
    assert list(result.index) == ["full", "lora", "lora r=4"]
    # 6 scores pooled, 1 cut at each end: mean(0.61, 0.62, 0.80, 0.81)
    assert result.loc["full", "iqm"] == pytest.approx(0.71)
    assert result.loc["lora", "n_tasks"] == 2 and result.loc["lora", "n_runs"] == 6
    expected = comparisons.probability_of_improvement(
        [[0.81, 0.79, 0.80], [0.63, 0.60, 0.64]], [[0.80, 0.82, 0.81], [0.60, 0.61, 0.62]]
    )
    # task a: 0.81 beats .80, ties .81 -> 1.5; 0.79 none; 0.80 ties .80 -> 0.5: 2 / 9;
    # task b: 0.63 beats 3, 0.60 ties .60 -> 0.5, 0.64 beats 3: 6.5 / 9
    assert expected == pytest.approx((2 / 9 + 6.5 / 9) / 2)
    assert result.loc["lora", "prob_improvement"] == pytest.approx(expected)
    assert np.isnan(result.loc["full", "prob_improvement"])
    assert result.loc["lora r=4", "n_tasks"] == 1 and np.isnan(result.loc["lora r=4", "iqm"])


def test_paired_comparisons_refuse_a_missing_baseline_and_repeated_keys():
    table = runs({"full": [0.8, 0.81], "lora": [0.82, 0.83]})
    with pytest.raises(ValueError, match="baseline 'nope'"):
        comparisons.paired_comparisons(table, "nope")
    repeated = pd.concat([table, table], ignore_index=True)
    with pytest.raises(ValueError, match="several completed runs"):
        comparisons.paired_comparisons(repeated, "full")
    repeated["config.data.name"] = ["a"] * 4 + ["b"] * 4
    result = comparisons.paired_comparisons(repeated, "full", pair_on=["config.data.name", "seed"])
    assert result.iloc[0]["n_pairs"] == 4


def test_incomplete_runs_lists_failures_with_their_errors():
    table = runs({"full": [0.8], "lora": [np.nan]}, {"lora": "failed"})
    table["error"] = [None, "RuntimeError: boom"]
    listed = intervals.incomplete_runs(table)
    assert list(listed["run_id"]) == ["lora-0"]
    assert list(listed["error"]) == ["RuntimeError: boom"]


# Pareto front


def test_pareto_mask_hand_example():
    #        A    B    C (dominated by B)  D (= B)  E     F (NaN)
    x = [1.0, 2.0, 3.0, 2.0, 0.5, np.nan]
    y = [0.5, 0.7, 0.6, 0.7, 0.4, 0.9]
    assert list(intervals.pareto_mask(x, y)) == [True, True, False, True, True, False]


def test_pareto_mask_dominated_on_one_axis_with_a_tie_on_the_other():
    assert list(intervals.pareto_mask([1.0, 1.0, 2.0], [0.5, 0.6, 0.6])) == [False, True, False]


def test_pareto_front_uses_per_variant_means_of_completed_runs():
    table = runs({"full": [0.80, 0.82], "lora": [0.80, 0.80], "bad": [0.70, 0.70], "big": [0.79]})
    table["params.trainable"] = [1000, 1000, 10, 10, 10, 10, 5000]
    table.loc[table["variant"] == "bad", "params.trainable"] = 20
    front = intervals.pareto_front(table)
    assert list(front["variant"]) == ["lora", "bad", "full", "big"]
    assert list(front["on_front"]) == [True, False, True, False]
    assert front.loc[front["variant"] == "full", "metrics.test_top1"].item() == pytest.approx(0.81)


def test_the_intervals_a_study_file_may_name_are_the_ones_stats_computes():
    from peftlab.study.report_options import REPORT_INTERVALS

    assert tuple(intervals.INTERVALS) == REPORT_INTERVALS


def test_comparisons_within_datasets_pair_each_dataset_with_its_own_baseline():
    table = runs(
        {
            "full data=a": BASELINE,
            "lora data=a": BETTER,
            "full data=b": [v - 0.2 for v in BASELINE],
            "lora data=b": [v - 0.2 for v in BASELINE],
        }
    )
    table["config.data.name"] = [v.rsplit("=", 1)[1] for v in table["variant"]]
    result = comparisons.paired_comparisons_within(table, "full data=a").set_index("variant")
    assert list(result["baseline"]) == ["full data=a", "full data=b"]
    assert result.loc["lora data=b", "mean_diff"] == pytest.approx(0)  # not lora on b minus full on a
    assert result.loc["lora data=a", "mean_diff"] == pytest.approx(np.mean(np.subtract(BETTER, BASELINE)))
    np.testing.assert_allclose(result["p_ttest_holm"], comparisons.holm(result["p_ttest"]))
    one = comparisons.paired_comparisons_within(table[table["config.data.name"] == "a"], "full data=a")
    assert one.equals(comparisons.paired_comparisons(table[table["config.data.name"] == "a"], "full data=a"))


# Power of the paired t-test

# statsmodels 0.15.0: TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=0.8,
# alternative="two-sided"), run once from its wheel (statsmodels is not a dependency of peftlab). Its root
# finder stops near 1e-7 in power, so the comparison allows 1e-5 relative.
STATSMODELS_MDE = {
    (2, 0.05): 11.549889754978167,
    (3, 0.05): 3.264043552819638,
    (5, 0.05): 1.6819970833232674,
    (10, 0.05): 0.9960019107624178,
    (5, 0.01): 2.6289740837721873,
}
# the same with effect_size=d, nobs=None: the pairs needed are its ceiling
STATSMODELS_NOBS = {2.0: 4.22071858501904, 1.0: 9.93785094105438, 0.5: 33.36713118431779, 0.1: 786.808940181792}


@pytest.mark.parametrize("n, alpha", list(STATSMODELS_MDE))
def test_minimum_detectable_effect_is_statsmodels_and_has_80_percent_power(n, alpha):
    d = minimum_detectable_effect(n, alpha)
    assert d == pytest.approx(STATSMODELS_MDE[n, alpha], rel=1e-5)
    # independently of peftlab's power function: the noncentral t written out here
    critical = scipy.stats.t.isf(alpha / 2, n - 1)
    power = scipy.stats.nct.sf(critical, n - 1, d * np.sqrt(n)) + scipy.stats.nct.sf(critical, n - 1, -d * np.sqrt(n))
    assert power == pytest.approx(0.8, abs=1e-6)


def test_power_at_the_minimum_detectable_effect_by_simulation():
    # 200,000 simulated studies of 5 normal paired differences with true mean d * sd: the two-sided
    # t-test at 0.05 rejects in 80% of them (standard error 0.0009)
    d = minimum_detectable_effect(5)
    diffs = np.random.default_rng(0).normal(d, 1.0, size=(200_000, 5))
    t = diffs.mean(axis=1) / (diffs.std(axis=1, ddof=1) / np.sqrt(5))
    assert np.mean(np.abs(t) > scipy.stats.t.isf(0.025, 4)) == pytest.approx(0.8, abs=0.004)


def test_power_function_is_statsmodels():
    # statsmodels 0.15.0: TTestPower().power(effect_size=1.0, nobs=5, alpha=0.05) = 0.4013899173717948
    assert paired_ttest_power(1.0, 5) == pytest.approx(0.4013899173717948, rel=1e-12)
    assert paired_ttest_power(0.0, 5) == pytest.approx(0.05, rel=1e-12)  # no difference: the level


@pytest.mark.parametrize("d", list(STATSMODELS_NOBS))
def test_pairs_needed_is_the_ceiling_of_statsmodels_sample_size(d):
    n = pairs_needed(d)
    assert n == int(np.ceil(STATSMODELS_NOBS[d]))
    assert paired_ttest_power(d, n) >= 0.8 > paired_ttest_power(d, n - 1)


def test_pairs_needed_past_ten_thousand_is_infinite_and_never_below_two():
    assert pairs_needed(0.01) == np.inf  # statsmodels: 78,491
    assert pairs_needed(100.0) == 2


def test_statsmodels_itself_when_installed():
    power = pytest.importorskip("statsmodels.stats.power")
    for (n, alpha), expected in STATSMODELS_MDE.items():
        solved = power.TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=0.8)
        assert solved == pytest.approx(expected, rel=1e-9)
        assert minimum_detectable_effect(n, alpha) == pytest.approx(solved, rel=1e-5)


def test_paired_comparisons_state_the_minimum_detectable_difference_in_the_metric_s_unit():
    baseline = [0.80, 0.81, 0.79, 0.82, 0.80]
    variant = [0.804, 0.806, 0.799, 0.818, 0.805]  # differences 0.4, -0.4, 0.9, -0.2, 0.5 points
    row = comparisons.paired_comparisons(runs({"full": baseline, "lora": variant}), "full").iloc[0]
    sd = np.std(np.subtract(variant, baseline), ddof=1)
    assert row["mde_80"] == pytest.approx(STATSMODELS_MDE[5, 0.05] * sd, rel=1e-5)
    assert 100 * row["mde_80"] == pytest.approx(0.8948, abs=1e-4)  # points
    # one point (0.01) is 1.88 sd of the differences; statsmodels' nobs for it: 4.47, so 5 pairs
    assert row["pairs_for_1pt"] == 5
    strict = comparisons.paired_comparisons(runs({"full": baseline, "lora": variant}), "full", alpha=0.01).iloc[0]
    assert strict["mde_80"] == pytest.approx(STATSMODELS_MDE[5, 0.01] * sd, rel=1e-5)


def test_no_minimum_detectable_difference_without_spread_or_with_one_pair():
    constant = comparisons.paired_comparisons(runs({"full": [0.80, 0.81, 0.70], "lora": [0.81, 0.82, 0.71]}), "full")
    single = comparisons.paired_comparisons(runs({"full": [0.80], "lora": [0.81]}), "full")
    for row in (constant.iloc[0], single.iloc[0]):
        assert np.isnan(row["mde_80"]) and np.isnan(row["pairs_for_1pt"])


def test_an_accuracy_interval_is_cut_at_0_and_100_percent_and_says_so():
    """Two runs 3.7 points apart near 86%: the t-interval of their mean is [62.2, 109.9]%; an accuracy cannot
    pass 100%, so the interval stops there and ci_clipped says it was cut. A perplexity's is not cut."""
    df = pd.DataFrame(
        {
            "variant": ["bitfit", "bitfit"],
            "status": ["completed"] * 2,
            "metrics.test_top1": [0.84125, 0.87875],
            "metrics.test_perplexity": [3.0, 90.0],
        }
    )
    row = intervals.summarize(df).iloc[0]
    assert row["t_ci_low"] == pytest.approx(0.6218, abs=1e-4) and row["t_ci_high"] == 1.0 and row["ci_high"] == 1.0
    assert row["ci_clipped"]
    perplexity = intervals.summarize(df, metric="metrics.test_perplexity").iloc[0]
    assert perplexity["t_ci_low"] < 0 and not perplexity["ci_clipped"]  # unbounded above: left as computed


def test_an_exactly_zero_difference_is_zero_and_prints_without_a_sign():
    """The same three scores in another order: their paired differences sum to -9.25e-18 in floating point; the
    difference is zero, d_z is zero, and zero prints as 0.0, never -0.00."""
    from peftlab.analysis.paper.macros import signed as macro_signed
    from peftlab.analysis.results.units import signed

    result = comparisons.compare_paired([0.637, 0.27, 0.041], [0.041, 0.637, 0.27])
    assert result["mean_diff"] == 0.0 and result["cohens_dz"] == 0.0
    assert signed(-9.25e-18, 2) == "0.00" and signed(-0.04) == "0.0" and signed(-0.06) == "-0.1"
    assert macro_signed(-1e-17) == r"\ensuremath{0.0}" and macro_signed(1.2) == r"\ensuremath{+1.2}"
