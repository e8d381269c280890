"""How sure a search's choice is: the share of bootstrap resamples of the validation examples in which each trial
has the best validation top-1 (``win_shares``). A search selects the trial with the best validation score on one
validation split; resampling its examples (with replacement, the same resample for every trial, so that the
trials stay paired) shows how often another split of the same size would have chosen the same trial. A choice
whose win share is below ``SURE_SHARE`` is called uncertain in the report and the paper.

Ties in a resample are split: each of the k trials sharing the best top-1 gets 1/k of it, so two identical trials
win 0.5 each. With several tuning seeds a trial's score is its mean over the seeds (as selection's), each seed's
validation examples resampled on their own (a seed may hold another split). Numpy only, vectorised: the resamples
are multinomial counts of the examples, a matrix product gives every trial's correct count in every resample.

The seed is in it too (``spread``): resampling the examples keeps each trial's trained model fixed, but another
training seed moves a trial's validation top-1 by as much as the seed-to-seed spread its configuration's final
runs show (``seed_deviations``). Each resample then also moves every trial's top-1, on every tuning seed, by one
of those deviations drawn at random (with replacement, each trial its own). A choice is called sure only when it
wins at least ``SURE_SHARE`` of these resamples of examples and seeds, and ``verdict`` says "borderline" where the
share's Monte-Carlo error (``mc_error``) reaches that threshold.
"""

from __future__ import annotations

import numpy as np

SURE_SHARE = 0.8  # a choice that wins fewer resamples than this is called uncertain
RESAMPLES = 2000
SEED = 0  # of the resamples: the same share every time the report is built
CHUNK_ELEMENTS = 4_000_000  # resamples x examples drawn at once (32 MB of float64)
MC_ERRORS = 2  # a share within this many Monte-Carlo standard errors of SURE_SHARE is borderline


def win_shares(
    correct: list[np.ndarray], resamples: int = RESAMPLES, seed: int = SEED, spread: np.ndarray | None = None
) -> np.ndarray:
    """Each trial's share of ``resamples`` bootstrap resamples in which it has the best mean validation top-1.

    ``correct``: one boolean (trials x examples) matrix per tuning seed, row i trial i's correctness on that
    seed's validation examples (every trial scored on the same examples, in the same order). ``spread``: the
    seed deviations (``seed_deviations``, top-1 as a fraction) one of which moves each trial's top-1 on each tuning
    seed in each resample; None resamples the examples only. Returns a (trials,) array summing to 1."""
    if not correct or any(c.ndim != 2 for c in correct) or len({c.shape[0] for c in correct}) != 1:
        raise ValueError("correct: one (trials x examples) matrix per seed, the same trials in each")
    if any(c.shape[1] == 0 for c in correct):
        raise ValueError("correct: a seed without validation examples")
    rng = np.random.default_rng(seed)
    seed_rng = np.random.default_rng([seed, 1])  # the seed draws on their own stream: chunking keeps them
    trials = correct[0].shape[0]
    wins = np.zeros(trials)
    longest = max(c.shape[1] for c in correct)
    step = max(1, CHUNK_ELEMENTS // longest)
    for start in range(0, resamples, step):
        size = min(step, resamples - start)
        top1 = np.zeros((size, trials))  # (resamples, trials): mean over the seeds of each resample's top-1
        for matrix in correct:
            n = matrix.shape[1]
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size)  # (resamples, examples)
            top1 += counts.astype(np.float64) @ matrix.T.astype(np.float64) / n
            if spread is not None and len(spread):
                top1 += spread[seed_rng.integers(len(spread), size=(size, trials))]
        best = np.isclose(top1, top1.max(axis=1, keepdims=True), rtol=0, atol=1e-12)
        wins += (best / best.sum(axis=1, keepdims=True)).sum(axis=0)
    return wins / resamples


def seed_deviations(values) -> np.ndarray | None:
    """The seed-to-seed deviations of a configuration's final runs: their validation top-1 less its mean, times
    sqrt(n / (n - 1)), so that their mean square is the runs' unbiased variance; None under two runs (no spread)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    return (values - values.mean()) * np.sqrt(len(values) / (len(values) - 1))


def mc_error(share: float, resamples: int = RESAMPLES) -> float:
    """The Monte-Carlo standard error of a share estimated from ``resamples`` resamples, sqrt(p (1 - p) / R)."""
    return float(np.sqrt(share * (1 - share) / resamples))


def verdict(share: float, resamples: int = RESAMPLES) -> str:
    """ "sure" (share at least SURE_SHARE), "uncertain" (below it), or "borderline" where the share lies within
    MC_ERRORS Monte-Carlo standard errors of SURE_SHARE, so that another resampling seed could say either."""
    if abs(share - SURE_SHARE) <= MC_ERRORS * mc_error(share, resamples):
        return "borderline"
    return "sure" if share >= SURE_SHARE else "uncertain"
