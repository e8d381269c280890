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

A search on another score resamples it the same way (``resampled_wins``): F1 of class 1 and the Matthews correlation
from each resample's confusion counts (``confusion_scorer``: ``training.metrics``' definitions, their degenerate
cases included), a causal LM's perplexity as the ratio exp(sum of the resampled sequences' NLL / their tokens)
(``perplexity_scorer``: sequences are resampled, never tokens; the lowest wins). The seed deviations are taken in the
score's additive units: top-1, F1 and Matthews as they are, a perplexity's log (each resample's log-perplexity moved,
then a trial's perplexities averaged over its tuning seeds, as selection averages them).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from peftlab.training.run_result import MAX_LOG_PERPLEXITY

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

    def top1(matrix: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        return lambda counts: counts.astype(np.float64) @ matrix.T.astype(np.float64) / matrix.shape[1]

    scorers = [top1(matrix) for matrix in correct]
    return resampled_wins([c.shape[1] for c in correct], correct[0].shape[0], scorers, resamples, seed, spread)


def resampled_wins(
    sizes: list[int],
    trials: int,
    scorers: list[Callable[[np.ndarray], np.ndarray]],
    resamples: int = RESAMPLES,
    seed: int = SEED,
    spread: np.ndarray | None = None,
    lower: bool = False,
    log: bool = False,
) -> np.ndarray:
    """Each of ``trials`` trials' share of ``resamples`` bootstrap resamples in which its score, summed over the
    tuning seeds, is the best (the highest; the lowest where ``lower``), ties split.

    ``sizes``: each tuning seed's validation examples. ``scorers[k](counts)``: the (resamples, trials) scores of
    every trial on tuning seed k given (resamples, sizes[k]) multinomial counts of its examples, in the units
    ``spread``'s seed deviations are in; ``log``: the score is a logarithm (a perplexity's), moved by its
    deviation, and a trial's seeds sum its exponential. Returns a (trials,) array summing to 1."""
    if not sizes or any(n == 0 for n in sizes):
        raise ValueError("sizes: a tuning seed without validation examples")
    rng = np.random.default_rng(seed)
    seed_rng = np.random.default_rng([seed, 1])  # the seed draws on their own stream: chunking keeps them
    moved = spread is not None and len(spread) > 0
    wins = np.zeros(trials)
    step = max(1, CHUNK_ELEMENTS // max(sizes))
    for start in range(0, resamples, step):
        size = min(step, resamples - start)
        total = np.zeros((size, trials))  # (resamples, trials): each resample's score summed over the seeds
        for k, n in enumerate(sizes):
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size)  # (resamples, examples)
            value = scorers[k](counts)
            deviation = spread[seed_rng.integers(len(spread), size=(size, trials))] if moved else 0.0
            if log:
                with np.errstate(over="ignore"):  # a perplexity beyond a float's range: inf, tied with inf
                    total += np.exp(value + deviation)
            else:
                total += value
                total += deviation
        best = np.isclose(total, (total.min if lower else total.max)(axis=1, keepdims=True), rtol=0, atol=1e-12)
        wins += (best / best.sum(axis=1, keepdims=True)).sum(axis=0)
    return wins / resamples


def confusion_scorer(metric: str, labels: np.ndarray, predicted: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The (resamples, trials) F1 of class 1 (``metric`` "f1") or Matthews correlation ("matthews") of every trial
    given (resamples, examples) counts of the examples, each from the resampled confusion counts as
    ``training.metrics.class_count_scores`` computes it (F1 0 without a class-1 label or prediction, Matthews 0 where
    every label or every prediction is one class). ``labels``: (examples,); ``predicted``: (trials, examples);
    F1 is a two-class score (classes 0 and 1). Per class the counts are summed over the examples sorted by class
    (``np.add.reduceat``), so memory grows with the classes present, never with their square."""
    hit = (predicted == labels).T.astype(np.float64)  # (examples, trials)
    if metric == "f1":
        labelled, guessed = (labels == 1).astype(np.float64), (predicted == 1).T.astype(np.float64)
        both = ((predicted == 1) & (labels == 1)).T.astype(np.float64)

        def f1(counts: np.ndarray) -> np.ndarray:
            counts = counts.astype(np.float64)
            denominator = counts @ guessed + (counts @ labelled)[:, None]
            out = np.zeros(denominator.shape)
            return np.divide(2 * (counts @ both), denominator, out=out, where=denominator > 0)

        return f1
    true_classes, true_groups = class_groups(labels)
    groups = [class_groups(row) for row in predicted]

    def matthews(counts: np.ndarray) -> np.ndarray:
        counts = counts.astype(np.float64)
        n = counts.sum(axis=1)  # (resamples,): the examples drawn, every one of them
        t = np.add.reduceat(counts[:, true_groups[0]], true_groups[1], axis=1)  # (resamples, label classes)
        correct, agree, p2 = counts @ hit, [], []
        for classes, (order, starts) in groups:
            p = np.add.reduceat(counts[:, order], starts, axis=1)  # (resamples, predicted classes)
            _, at_t, at_p = np.intersect1d(true_classes, classes, assume_unique=True, return_indices=True)
            agree.append((t[:, at_t] * p[:, at_p]).sum(axis=1))
            p2.append((p * p).sum(axis=1))
        agree, p2 = np.stack(agree, axis=1), np.stack(p2, axis=1)  # (resamples, trials)
        square = (n * n)[:, None]
        denominator = np.sqrt((square - p2) * (square - (t * t).sum(axis=1, keepdims=True)))
        numerator = correct * n[:, None] - agree
        return np.divide(numerator, denominator, out=np.zeros(numerator.shape), where=denominator > 0)

    return matthews


def class_groups(values: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(the classes in ``values``, sorted; (the order that sorts the examples by class, where each class starts))."""
    order = np.argsort(values, kind="stable")
    classes, starts = np.unique(values[order], return_index=True)
    return classes, (order, starts)


def perplexity_scorer(nll: np.ndarray, tokens: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The (resamples, trials) log-perplexity of every trial given (resamples, sequences) counts of the validation
    sequences: sum(count * nll) / sum(count * tokens), a ratio over the resampled sequences (never a resample of
    tokens); a resample without a scored token ties every trial at 0. ``nll``: (trials, sequences) each sequence's
    summed token NLL; ``tokens``: (sequences,) its scored tokens, the same for every trial. Capped at
    ``training.run_result.MAX_LOG_PERPLEXITY``, as the runs' own perplexity is."""
    nll, tokens = nll.T.astype(np.float64), tokens.astype(np.float64)

    def log_perplexity(counts: np.ndarray) -> np.ndarray:
        counts = counts.astype(np.float64)
        scored = np.maximum(counts @ tokens, 1.0)[:, None]
        return np.minimum(counts @ nll / scored, MAX_LOG_PERPLEXITY)

    return log_perplexity


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
