"""How the report and the paper name what a search's certainty resamples (``stats.trial_predictions``), by the
metric the search chose by: the score, which way is best, what a seed deviation moves, and a winner's optimism in the
metric's units (top-1, F1 and Matthews in points, as the tables print them times 100; a perplexity as it is)."""

from __future__ import annotations

from dataclasses import dataclass

from peftlab.analysis.results.units import scale
from peftlab.training.run_result import lower_is_better


@dataclass(frozen=True)
class ScoreWords:
    score: str  # the score a trial is chosen by: "validation top-1"
    moved: str  # what a seed deviation moves: "top-1"
    deviations: str  # what the seed deviations are, before "times sqrt(n/(n-1))"
    lower: bool = False  # the lowest wins (a perplexity)

    @property
    def best(self) -> str:
        """ "best validation top-1", "lowest validation perplexity"."""
        return f"{'lowest' if self.lower else 'best'} {self.score}"

    @property
    def chance(self) -> str:
        """What the best of several trials is chosen partly for by chance: scoring "high", a perplexity "low"."""
        return "low" if self.lower else "high"


WORDS = {
    "val_top1": ScoreWords("validation top-1", "top-1", "their validation top-1 less its mean"),
    "val_f1": ScoreWords("validation F1", "F1", "their validation F1 less its mean"),
    "val_matthews": ScoreWords(
        "validation Matthews correlation", "Matthews correlation", "their validation Matthews correlation less its mean"
    ),
    "val_perplexity": ScoreWords(
        "validation perplexity", "log-perplexity", "the log of their validation perplexity less its mean", lower=True
    ),
}


def score_words(metric: str) -> ScoreWords:
    """The words of a search on ``metric``; a metric whose choice is not resampled (best_val_top1: its certainty is
    "n/a") is named as top-1's, the score its trials' predictions give."""
    return WORDS.get(metric, WORDS["val_top1"])


def amount(metric: str, value: float) -> str:
    """An optimism or a standard deviation of ``metric`` as printed: "3.1" (points of top-1, F1 or Matthews),
    "0.52" (a perplexity)."""
    return f"{value:.2f}" if lower_is_better(metric) else f"{scale(metric) * value:.1f}"


def points(metric: str) -> str:
    """The unit after ``amount``: " points" for top-1, F1 and Matthews, "" for a perplexity."""
    return "" if lower_is_better(metric) else " points"


def measured_noun(searches: list[dict]) -> str:
    """What the searches' certainties resample: "sequences" where the first with a share does (a text study),
    else "examples"."""
    return next(
        ((s.get("certainty") or {}).get("noun") for s in searches if (s.get("certainty") or {}).get("noun")),
        "examples",
    )
