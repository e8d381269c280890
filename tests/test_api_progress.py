"""One bar per call (issue 90): a pinned child's progress reaches the caller as its steps, drawn as one bar of the
caller's (tqdm.auto: a notebook's widget, a terminal's bar), or where no bar is drawn as the lines a run prints off a
terminal; the child's progress lines themselves are never shown (training/run.py's relay, utils/progress.py)."""

import subprocess
import sys
from pathlib import Path

from peftlab.training.run import ERROR_PREFIX, relay
from peftlab.utils.progress import RELAY_ENV, RELAY_PREFIX, RelayedBar, TextProgress


def test_a_childs_steps_are_one_bar_here_and_its_progress_lines_are_not_shown(capfd, monkeypatch):
    """Off a terminal (pytest's stderr) the bar draws nothing: its lines are the caller's, every tenth step, as the
    run's own would be; the child's other output passes as it comes, its error line is raised, not shown."""
    monkeypatch.delenv(RELAY_ENV, raising=False)
    steps = [f"{RELAY_PREFIX}train tiny\tstep\t{n}\t20\n" for n in range(1, 21)]
    steps.insert(3, f"{RELAY_PREFIX}val\tbatch\t1\t4\n")  # another label (an evaluation's): not the bar's
    script = (
        "import sys, time\n"
        f"lines = {steps!r}\n"
        "sys.stderr.write(lines[0][:9]); sys.stderr.flush(); time.sleep(0.05)\n"  # a line split across reads
        "sys.stderr.write(lines[0][9:] + 'a warning\\n' + ''.join(lines[1:])); sys.stderr.flush()\n"
        f"sys.stderr.write({ERROR_PREFIX!r} + 'data.root=/x does not exist\\n'); sys.exit(2)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert relay(proc) == f"{ERROR_PREFIX}data.root=/x does not exist"
    err = capfd.readouterr().err
    assert RELAY_PREFIX not in err and ERROR_PREFIX not in err and err.count("a warning\n") == 1, err
    shown = [line.split(",")[0] for line in err.splitlines() if line.startswith("train tiny: ")]
    assert shown == [f"train tiny: step {n}/20 ({5 * n}%)" for n in range(2, 21, 2)], err


def test_the_child_writes_every_update_as_one_line_where_the_parent_draws_it(capsys, monkeypatch):
    from tqdm import tqdm

    monkeypatch.setenv(RELAY_ENV, "1")
    bar = tqdm(total=3, disable=True)
    lines = TextProgress(bar, True, "train tiny", "step", every=2)
    for n in (1, 2, 3):
        lines.update(n)
    assert capsys.readouterr().err.splitlines() == [f"{RELAY_PREFIX}train tiny\tstep\t{n}\t3" for n in (1, 2, 3)]
    quiet = TextProgress(bar, False, "train tiny", "step")  # progress not asked for: nothing, relayed or not
    quiet.update(1, force=True)
    assert capsys.readouterr().err == ""


def test_a_bar_takes_the_first_label_and_ignores_what_is_no_progress_line(capsys):
    bar = RelayedBar()
    for line in (f"{RELAY_PREFIX}study s\trun\t1\t4", f"{RELAY_PREFIX}other\tx\t3\t3", f"{RELAY_PREFIX}bad"):
        bar.take(line)
    bar.close()
    assert (bar.label, bar.bar.total) == ("study s", 4)
    assert [line.split(",")[0] for line in capsys.readouterr().err.splitlines()] == ["study s: run 1/4 (25%)"]


def test_a_studys_trials_are_counted_as_trials_on_its_notebook_line():
    """``run_study(progress=False)`` in a notebook shows one line in place (``progress_line``): while a tuned study's
    searches run it counts their trials as trials (study/runner.py's ``TrialEnds``), each with its run and status."""
    from types import SimpleNamespace

    from peftlab.study.phases import Phase
    from peftlab.study.runner import TrialEnds
    from peftlab.utils.progress import IN_PLACE, counting_bar

    specs = [SimpleNamespace(variant="lora", seed=1000, run_id=f"t{n}") for n in range(3)]
    shown, ended = [], []

    def run_jobs(jobs, on_done, stop_when=None):
        for spec in jobs:
            on_done(spec, {"status": "completed" if spec.run_id != "t1" else "stopped"})

    IN_PLACE.append(shown.append)
    try:
        with counting_bar("study s", "trial", 3, False) as done:
            ends = TrialEnds(Phase(), done)
            ends.runs(run_jobs)(specs, lambda spec, result: ended.append(spec.run_id))
            ends.pruned(specs[1], Path("t1"), "pruned")  # its search's word on the run it stopped
    finally:
        IN_PLACE.pop()
    assert ended == ["t0", "t1", "t2"]
    assert [line.split(", ")[:2] for line in shown] == [
        ["study s: trial 1/3 (33%)", "lora seed=1000 [t0] completed"],
        ["study s: trial 2/3 (67%)", "lora seed=1000 [t2] completed"],
        ["study s: trial 3/3 (100%)", "lora seed=1000 [t1] pruned"],
    ]
