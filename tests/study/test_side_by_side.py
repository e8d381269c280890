"""Searches side by side: a tuned study's searches share the executor's workers, a worker one search leaves
idle (an edge-following grid adding points one at a time) trains another search's trial, and every search
chooses what it chooses alone, with the same trials, run ids and results. The trials are scored by a
stand-in pool of workers that writes each run's result.json and keeps a simulated clock: no training, no
wall-clock time, so it runs in seconds."""

import heapq
import json
import math

import pytest
import yaml
from testkit import TINY_MODEL

from peftlab.study.search import tune_dir, tune_study
from peftlab.study.spec import load_study
from peftlab.utils.errors import UserError

BASE = {
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 64},
    "train": {"lr": 1.0e-3, "head_lr": 1.0e-3},
}
METHODS = {"full": {}, "lora": {"axes": {"method.r": [2, 4]}}}  # three searches: full, lora r=2, lora r=4
TUNE = {"axes": {"train.lr": [1e-3, 1e-2, 1e-1]}, "search": "grid", "trials": 6, "follow_edge": True}
PEAKS = {"full": 0.3, 2: 3e-3, 4: 1e-4}  # past the top, between two points, past the bottom
DATA = {"num_classes": 10, "split_sizes": {"val": 500}}


def tuned_study(tmp_path, seeds=1):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    study = {"name": "s", "base": "base.yaml", "seeds": seeds, "methods": METHODS, "tune": TUNE}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    return load_study(tmp_path / "study.yaml")


def score(cfg) -> dict:
    """A trial run's result.json: val_top1 a parabola in log10(lr), highest at its configuration's peak."""
    peak = PEAKS[configuration(cfg)]
    value = 0.9 - 0.1 * (math.log10(cfg.train.lr) - math.log10(peak)) ** 2
    return {"status": "completed", "metrics": {"val_top1": value}, "provenance": {"data": DATA}}


def configuration(cfg):
    return "full" if cfg.method.name == "full" else cfg.method.r


class Pool:
    """Stands in for the local executor (``run_local``): ``workers`` at a time, in the order of ``jobs``,
    the jobs ``on_done`` appends too. Each run takes a simulated time set by its seed and learning rate, and
    ``log`` records (variant, start, end) on the simulated clock, which goes on from call to call.
    ``takes_once``: takes its list when called, as ``run_remote`` does. ``kill_once``: variants whose first
    run ends without a result, stopped from outside (its worker killed)."""

    def __init__(self, workers=2, takes_once=False, die_after=None, score=score, kill_once=()):
        self.workers, self.takes_once, self.die_after, self.score = workers, takes_once, die_after, score
        self.kill_once = set(kill_once)
        self.now, self.log, self.calls = 0.0, [], 0

    def __call__(self, jobs, on_done, stop_when):
        self.calls += 1
        jobs = list(jobs) if self.takes_once else jobs
        taken, running = 0, []
        while taken < len(jobs) or running:
            while taken < len(jobs) and len(running) < self.workers:
                spec, run_dir = jobs[taken]
                took = 1 + spec.seed % 2 + round(-4 * math.log10(spec.config.train.lr)) % 3  # 1 to 4 units
                heapq.heappush(running, (self.now + took, taken, self.now, spec, run_dir))
                taken += 1
            end, _, start, spec, run_dir = heapq.heappop(running)
            if self.die_after is not None and len(self.log) == self.die_after:
                raise Killed
            self.now = end
            self.log.append((spec.variant, start, end))
            if spec.variant in self.kill_once:
                self.kill_once.remove(spec.variant)
                on_done(spec, {"status": "pending", "error": "its worker was killed by SIGKILL"})
                continue
            result = self.score(spec.config)
            (run_dir / "result.json").write_text(json.dumps(result))
            on_done(spec, result)


class Killed(BaseException):
    """The study's process dying while trials train (what SIGKILL leaves: trials running in the journals)."""


def selections(study_dir, study) -> dict:
    return {key: json.loads((tune_dir(study_dir, key) / "selection.json").read_text()) for key in study.tune}


def final_runs(study) -> list:
    return [(spec.variant, spec.run_id, spec.tuned_by) for spec in study.runs]


def search_of(variant: str) -> str:
    return variant.rsplit(" trial ", 1)[0]


def ran_beside(log, variant: str) -> set[str]:
    """The trials whose runs trained while a run of ``variant`` trained (on the simulated clock)."""
    spans = [(s, e) for v, s, e in log if v == variant]
    return {v for v, t, f in log if v != variant and any(s < f and t < e for s, e in spans)}


@pytest.mark.parametrize("seeds", [1, 2])
def test_searches_side_by_side_choose_what_they_choose_one_after_another(tmp_path, seeds):
    study = tuned_study(tmp_path, seeds)
    alone, shared = Pool(), Pool()
    one_by_one = tune_study(study, tmp_path / "alone", alone, slots=2, side_by_side=False)
    side_by_side = tune_study(study, tmp_path / "shared", shared, slots=2, side_by_side=True)
    # every search: the same trials (values, run ids, results, what each added and why) and the same choice
    assert selections(tmp_path / "shared", study) == selections(tmp_path / "alone", study)
    assert final_runs(side_by_side) == final_runs(one_by_one)
    assert sorted(v for v, _, _ in shared.log) == sorted(v for v, _, _ in alone.log)
    trials = selections(tmp_path / "shared", study)
    assert {k: len(s["trials"]) for k, s in trials.items()} == {"full": 6, "lora r=2": 6, "lora r=4": 6}
    assert {k: s["chosen"]["params"]["train.lr"] for k, s in trials.items()} == {
        "full": 0.316227766017,
        "lora r=2": 0.00316227766017,
        "lora r=4": 0.0001,
    }


def test_a_worker_one_search_leaves_idle_trains_another_searchs_trial(tmp_path):
    """One after another, a search's added points train one at a time while the other worker waits; side
    by side, another search's trial trains beside them, and the pool is never idle while a trial waits."""
    study = tuned_study(tmp_path)
    alone, shared = Pool(), Pool()
    tune_study(study, tmp_path / "alone", alone, slots=2, side_by_side=False)
    tune_study(study, tmp_path / "shared", shared, slots=2, side_by_side=True)
    added = {f"{key} trial {n}" for key in study.tune for n in range(3, 6)}  # the grid is trials 0 to 2
    assert all(ran_beside(alone.log, trial) == set() for trial in added)  # one at a time, a worker idle
    for trial in added:  # side by side: each beside another search's trial
        assert {search_of(other) for other in ran_beside(shared.log, trial)} - {search_of(trial)}, trial
    assert shared.now < alone.now  # on the simulated clock


def test_an_executor_that_takes_its_jobs_once_is_given_those_it_left(tmp_path):
    """run_remote takes its job list when called (one job array): the searches' later trials go to its
    next calls, and the choices are the same."""
    study = tuned_study(tmp_path)
    once = Pool(takes_once=True)
    side_by_side = tune_study(study, tmp_path / "shared", once, slots=2, side_by_side=True)
    one_by_one = tune_study(study, tmp_path / "alone", Pool(), slots=2, side_by_side=False)
    assert selections(tmp_path / "shared", study) == selections(tmp_path / "alone", study)
    assert final_runs(side_by_side) == final_runs(one_by_one) and once.calls > 1


def test_a_study_killed_side_by_side_resumes_to_the_same_choices_and_trains_nothing_twice(tmp_path):
    study = tuned_study(tmp_path)
    reference = tune_study(study, tmp_path / "reference", Pool(), slots=2, side_by_side=False)
    for die_after in (2, 7, 13):  # in the grids, and while added points train
        out = tmp_path / f"killed-{die_after}"
        with pytest.raises(Killed):
            tune_study(study, out, Pool(die_after=die_after), slots=2, side_by_side=True)
        resumed = Pool()
        assert final_runs(tune_study(study, out, resumed, slots=2, side_by_side=True)) == final_runs(reference)
        assert len(resumed.log) == 18 - die_after  # nothing finished before the kill was trained again
        assert selections(out, study) == selections(tmp_path / "reference", study)


def test_a_failing_search_lets_the_others_end_and_then_stops_the_study(tmp_path):
    """lora r=4's every trial diverges: its one line is raised once full's and lora r=2's searches have
    ended, with their choices recorded for the next call."""
    study = tuned_study(tmp_path)

    def diverging(cfg):
        return {"status": "diverged", "error": "nan"} if configuration(cfg) == 4 else score(cfg)

    with pytest.raises(
        UserError, match=r"tuning of method 'lora r=4': no trial can be chosen: 3 of 3 diverged \(the first: nan\)"
    ):
        tune_study(study, tmp_path / "shared", Pool(score=diverging), slots=2, side_by_side=True)
    records = selections(tmp_path / "shared", study)
    assert records["full"]["done"] and records["lora r=2"]["done"] and records["lora r=4"]["chosen"] is None
    assert records["full"]["chosen"]["params"] == {"train.lr": 0.316227766017}


def test_each_running_job_is_asked_about_by_its_own_searchs_stop_when(tmp_path):
    """A halving search's pruner (``stop_when``) is asked about its own trials' runs only; a search without
    one is never stopped; without ``may_stop`` the executor gets no stop_when at all."""
    from types import SimpleNamespace

    from peftlab.study.side_by_side import run_side_by_side

    asked = []

    def search(name, stop_when):
        outcomes = {}
        jobs = [(SimpleNamespace(variant=f"{name} trial {n}", run_id=f"{name}{n}"), tmp_path) for n in range(2)]
        yield jobs, lambda spec, result: outcomes.update({spec.run_id: result}), stop_when
        return outcomes

    def pruner(spec, run_dir):
        asked.append(spec.run_id)
        return spec.run_id == "a1"

    def executor(jobs, on_done, stop_when):
        given.append(stop_when)
        for spec, run_dir in jobs:
            on_done(spec, {"status": "stopped"} if stop_when and stop_when(spec, run_dir) else {"status": "completed"})

    given = []
    ended = run_side_by_side({"a": search("a", pruner), "b": search("b", None)}, executor, may_stop=True)
    assert asked == ["a0", "a1"] and ended["a"]["a1"] == {"status": "stopped"}
    assert ended["b"] == {"b0": {"status": "completed"}, "b1": {"status": "completed"}}
    given = []
    run_side_by_side({"a": search("a", pruner)}, executor, may_stop=False)
    assert given == [None]


def test_a_trial_run_killed_from_outside_side_by_side_is_resumed_and_its_search_goes_on(tmp_path, capsys):
    study = tuned_study(tmp_path)
    reference = tune_study(study, tmp_path / "reference", Pool(), slots=2, side_by_side=False)
    killing = Pool(kill_once={"lora r=2 trial 1", "full trial 4"})
    assert final_runs(tune_study(study, tmp_path / "shared", killing, slots=2, side_by_side=True)) == final_runs(
        reference
    )
    assert selections(tmp_path / "shared", study) == selections(tmp_path / "reference", study)
    trained = [variant for variant, _, _ in killing.log]
    assert len(trained) == 20 and trained.count("lora r=2 trial 1") == 2 and trained.count("full trial 4") == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all("stopped by an outside cause" in line and "resuming it" in line for line in lines)
