"""Progress off a terminal: plain lines with the time left, instead of a bar nobody sees."""

from tqdm import tqdm

from peftlab.utils.progress import TextProgress, duration


def test_without_a_terminal_progress_prints_lines_with_the_time_left(capsys):
    bar = tqdm(total=20, disable=True)  # what tqdm does when stderr is not a terminal
    lines = TextProgress(bar, True, "train demo", "step", every=5)
    for step in range(1, 21):
        bar.n = step
        lines.update(step, f"loss {1 / step:.3f}")
    out = capsys.readouterr().err.splitlines()
    assert len(out) == 4 and out[0].startswith("train demo: step 5/20 (25%), loss 0.200, ")
    assert "left" in out[0] and "left" not in out[-1] and out[-1].startswith("train demo: step 20/20 (100%)")


def test_no_lines_when_a_bar_is_drawn_or_progress_is_off(capsys):
    for bar, wanted in (
        (tqdm(total=3, disable=False, file=open("/dev/null", "w")), True),
        (tqdm(total=3, disable=True), False),
    ):
        lines = TextProgress(bar, wanted, "study s", "run")
        for n in (1, 2, 3):
            lines.update(n)
    assert capsys.readouterr().err == ""


def test_durations_read_naturally():
    assert [duration(s) for s in (37, 252, 5400 * 2)] == ["37 s", "4.2 min", "3.0 h"]
