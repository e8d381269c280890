"""Statistics over a study's results table: summaries, paired tests, Holm, Pareto fronts.

Every function takes the results DataFrame (one row per run, columns as written by
`peftlab results`) or plain arrays, and returns numbers or a DataFrame. Only rows with
status "completed" enter the statistics; `incomplete_runs` lists the others for the report.

Decisions a reader of the numbers must know:
- Confidence intervals are 95% intervals of the mean over seeds: the Student-t interval by
  default (`interval="t"`), or a bootstrap interval ("bca", "percentile"). With 3 to 5 seeds
  a bootstrap interval of the mean is too narrow (at n = 2 it is just the two values).
  BCa is undefined when all values are identical (scipy returns NaN): the percentile
  interval is used instead, which is then [v, v]. With fewer than 2 values there is no
  interval: ci_low = ci_high = NaN and ci_method = "none".
- Every bootstrap uses BOOTSTRAP_RESAMPLES resamples drawn from numpy's default_rng with
  the seed BOOTSTRAP_SEED, so the printed bounds do not change from one report to the next.
- Paired tests compare a variant with the baseline on matched seeds only.
- Each paired comparison states its minimum detectable difference (mde_80): the smallest true
  mean difference the two-sided paired t-test at the table's alpha, unadjusted for the other
  comparisons, finds with 80% power, taking the observed sd of the paired differences as the
  true one; and the pairs (seeds) that test needs for one point (pairs_for_1pt). Holm's
  correction raises the bar, so with several comparisons a difference must be larger still to
  be called significant. The power is statsmodels' TTestPower, computed with scipy's noncentral t.
- Probability of improvement is rliable's (Agarwal et al., 2021): P(X > Y) over all pairs
  of runs, ties counted half, averaged over tasks, with a stratified bootstrap percentile
  interval. The share of matched seeds where the variant wins is the "win rate".
- IQM is rliable's interquartile mean: the 25% trimmed mean of every run of every task.
- Paired differences, and their standard deviation, smaller than 1e-9 times the scale of
  the values (at least 1) are float noise (0.82 - 0.81 differs from 0.81 - 0.80 in the
  last bits) and are treated as exactly zero.

The code: intervals.py (completed runs, intervals, summaries, the Pareto front) and
comparisons.py (paired tests, Holm, win rate, probability of improvement, IQM, aggregates over
tasks); this module is their public face.
"""

from peftlab.analysis.comparisons import (MAX_PAIRS, MIN_PAIRS_WILCOXON, NOISE_TOLERANCE, POWER, aggregate_over_tasks,
                                          algorithm_name, below_detection, compare_paired, holm, iqm, iqm_ci,
                                          minimum_detectable_effect, paired_comparisons, paired_comparisons_within,
                                          paired_ttest_power, pairs_needed, probability_of_improvement,
                                          probability_of_improvement_ci, win_rate, with_holm)
from peftlab.analysis.intervals import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, COMPLETED, COST_COLUMNS, INTERVALS,
                                        MIN_SEEDS, bootstrap_ci, check_interval, completed_runs, confidence_interval,
                                        describe_interval, incomplete_runs, pareto_front, pareto_mask, summarize,
                                        t_interval)

__all__ = ["BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "COMPLETED", "COST_COLUMNS", "INTERVALS", "MAX_PAIRS",
           "MIN_PAIRS_WILCOXON", "MIN_SEEDS", "NOISE_TOLERANCE", "POWER", "aggregate_over_tasks", "algorithm_name",
           "below_detection", "bootstrap_ci", "check_interval", "compare_paired", "completed_runs",
           "confidence_interval", "describe_interval", "holm", "incomplete_runs", "iqm", "iqm_ci",
           "minimum_detectable_effect", "paired_comparisons", "paired_comparisons_within", "paired_ttest_power",
           "pairs_needed", "pareto_front", "pareto_mask", "probability_of_improvement", "probability_of_improvement_ci",
           "summarize", "t_interval", "win_rate", "with_holm"]
