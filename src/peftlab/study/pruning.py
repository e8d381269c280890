"""A halving search's pruning while its trials train: ``PruneWatch`` is the executor's ``stop_when``. It
reports each validation score a trial's run writes to metrics.jsonl to Optuna (``trial.report``) and says
to stop the run when the pruner (Optuna's SuccessiveHalvingPruner) prunes its trial."""

from __future__ import annotations

import json
from pathlib import Path

from peftlab.study.spec import RunSpec
from peftlab.study.tuning.edge import minimizes
from peftlab.study.tuning.metric import METRICS
from peftlab.study.tuning.tune import Search
from peftlab.utils.errors import UserError
from peftlab.utils.files import read_lines


class PruneWatch:
    """``stop_when`` of a halving search: reports each new validation score a trial's run wrote to
    metrics.jsonl (``trial.report``) and says to stop the run when the pruner prunes the trial."""

    def __init__(self, search: Search, study, trial_of_run: dict):
        self.field = METRICS[search.metric]
        self.best = search.metric.startswith("best_")
        self.minimize = minimizes(search)
        self.trial_of_run = trial_of_run
        before = {t.number: t.intermediate_values for t in study.get_trials(deepcopy=False)}  # a resumed trial's
        self.reported = {rid: set(before.get(trial.number, {})) for rid, trial in trial_of_run.items()}

    def __call__(self, spec: RunSpec, run_dir: Path) -> bool:
        """Report the run's new scores in step order, asking the pruner after each: the decisions
        depend on the scores alone, not on when this looks (a run that finished between two looks
        is judged the same way afterwards, see ``run_trials``)."""
        trial, reported = self.trial_of_run[spec.run_id], self.reported[spec.run_id]
        for step, value in self.scores(run_dir / "metrics.jsonl"):
            if step not in reported:
                trial.report(value, step)
                reported.add(step)
                if trial.should_prune():
                    return True
        return False

    def scores(self, path: Path) -> list[tuple[int, float]]:
        """(step, score) of each evaluation on val so far; a running best for best_* metrics."""
        out, best = [], None
        try:
            lines = read_lines(path, "run directory entry") or []
        except (OSError, UserError):  # the run's own check names it; the pruner reads no score from it
            return out
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line being written
            if record.get("kind") in ("eval", "epoch") and record.get(self.field) is not None:
                value = record[self.field]
                if self.best and best is not None:
                    value = min(best, value) if self.minimize else max(best, value)
                best = value
                out.append((int(record["step"]), float(value)))
        return out
