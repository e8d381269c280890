"""A trial run stopped by an outside cause (its spawn worker killed, the out-of-memory killer) during a
search: as a study goes on after a killed worker (docs/studies.md), the search resumes the run in a new
worker and goes on; only a run stopped a second time stops the search, in one line. The real processes'
version is tests/study/test_spawn.py."""

import pytest
from test_journal import SCORES, tiny_search

from peftlab.utils.errors import UserError
from peftlab.utils.files import write_json_atomic

KILLED = {"status": "pending", "error": "its worker was killed by SIGKILL (the out-of-memory killer?)"}


def killing_jobs(trained: list, kills: int):
    """``run_jobs`` whose first run at lr 1e-2 is killed ``kills`` times (no result.json, as a killed worker
    leaves it) before it completes; every other run completes at once with ``SCORES``."""

    def run_jobs(jobs, on_done, stop_when=None):
        for spec, run_dir in jobs:
            trained.append(spec.run_id)
            if spec.config.train.lr == 1e-2 and trained.count(spec.run_id) <= kills:
                on_done(spec, dict(KILLED))
                continue
            result = {"status": "completed", "metrics": {"val_top1": SCORES[spec.config.train.lr]}}
            write_json_atomic(run_dir / "result.json", result)
            on_done(spec, result)

    return run_jobs


@pytest.mark.parametrize("slots", [1, 2])
def test_a_killed_trial_run_is_resumed_and_the_search_goes_on(tmp_path, capsys, slots):
    from peftlab.study.search import run_search

    search, trained = tiny_search(tmp_path), []
    chosen = run_search(search, tmp_path / "tune" / "lora", killing_jobs(trained, kills=1), slots=slots)
    assert chosen["params"] == {"train.lr": 1e-2} and chosen["value"] == SCORES[1e-2]
    assert len(trained) == 3 and len(set(trained)) == 2  # the killed run once more, nothing else
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("peftlab: tune lora: run ") and "killed by SIGKILL" in line and "resuming it" in line


def test_a_trial_run_killed_twice_stops_the_search_in_one_line_and_the_same_command_resumes_it(tmp_path):
    from peftlab.study.search import run_search

    search, trained, directory = tiny_search(tmp_path), [], tmp_path / "tune" / "lora"
    with pytest.raises(UserError, match=r"1 trial runs were stopped by an outside cause twice \(its worker was"):
        run_search(search, directory, killing_jobs(trained, kills=2), slots=1)
    assert run_search(search, directory, killing_jobs(trained, kills=2), slots=1)["params"] == {"train.lr": 1e-2}
    assert len(trained) == 4 and len(set(trained)) == 2
