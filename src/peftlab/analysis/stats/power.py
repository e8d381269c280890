"""The power of the two-sided paired t-test: the minimum detectable difference a table of paired
comparisons states (comparisons.compare_paired's mde_80) and the pairs (seeds) a difference needs
(pairs_for_1pt). The power is statsmodels' TTestPower, computed with scipy's noncentral t.
"""

import numpy as np
import scipy.optimize
import scipy.stats

# The power at which `mde_80` and `pairs_for_1pt` are stated; past MAX_PAIRS the seeds a difference
# needs are reported as "more than MAX_PAIRS" (inf): no study runs that many.
POWER = 0.8
MAX_PAIRS = 10_000
ALPHA = 0.05  # significance level of the paired comparisons, and the level their MDE is stated at


def paired_ttest_power(effect_size, n, alpha=ALPHA):
    """Power of the two-sided paired t-test at level alpha with n pairs, for a true mean difference of
    `effect_size` standard deviations of the differences (Cohen's d_z).

    The t statistic follows a noncentral t with n - 1 degrees of freedom and noncentrality
    effect_size * sqrt(n); power is the mass beyond either critical value, as statsmodels'
    TTestPower computes it (the far tail included).
    """
    df = n - 1
    critical = scipy.stats.t.isf(alpha / 2, df)
    noncentrality = effect_size * np.sqrt(n)
    near = scipy.stats.nct.sf(critical, df, noncentrality)
    # the far tail P(T < -critical) by symmetry: scipy's nct.cdf there is NaN for some df and noncentrality
    # (df = 1, noncentrality 8-12), its sf with the noncentrality negated is the same number and finite
    far = scipy.stats.nct.sf(critical, df, -noncentrality)
    return float(near + far)


def minimum_detectable_effect(n, alpha=ALPHA, power=POWER):
    """The standardized difference d_z that the two-sided paired t-test with n pairs finds with
    `power` at level alpha (statsmodels' TTestPower().solve_power(effect_size=None, ...)); NaN for n < 2.

    Times the sd of the differences it is the minimum detectable difference. It assumes normal
    differences whose true sd is the one plugged in; with few seeds the observed sd is itself rough.
    """
    if n < 2:
        return np.nan
    upper = 1.0
    while paired_ttest_power(upper, n, alpha) < power:  # n = 2 needs d_z near 11.5
        upper *= 2
    return scipy.optimize.brentq(lambda d: paired_ttest_power(d, n, alpha) - power, 0.0, upper, xtol=1e-12, rtol=1e-12)


def pairs_needed(effect_size, alpha=ALPHA, power=POWER, most=MAX_PAIRS):
    """The fewest pairs (at least 2) with which the two-sided paired t-test finds a true standardized
    difference `effect_size` with `power`; inf when more than `most` are needed."""
    effect_size = abs(effect_size)
    if paired_ttest_power(effect_size, most, alpha) < power:
        return np.inf
    fails, works = 1, most  # power grows with n: bisect to the first n that reaches it
    while works - fails > 1:
        middle = (fails + works) // 2
        if paired_ttest_power(effect_size, middle, alpha) >= power:
            works = middle
        else:
            fails = middle
    return works
