"""Issue 73, item 4: figures and layout a reviewer reads. The names of the accuracy-versus-parameters figure never
overlap and stay near their points (measured with the renderer on the figure as saved), the ablation figure's
reference lines differ in line style, and the reproducibility command is broken at spaces to fit the column and
copies back from the PDF as it ran."""

import math
import subprocess
import sys

import pytest
from ablationfiles import write_crossed_study
from matplotlib.text import Text
from studyfiles import RUNS, ZOO_RUNS, write_study_dir
from test_paper import MISSING_LATEX

from peftlab.analysis.figures import ablation, study
from peftlab.analysis.paper import build as paper
from peftlab.analysis.paper.latex import compile_pdf
from peftlab.analysis.results.load import load_results

REACH = 48  # points: a name further than this from its point has strayed from it


def saved_figures(monkeypatch, module):
    """The figures ``module`` saves, kept for the test to measure."""
    saved, save = [], module.save_figure

    def keep(fig, out_dir, name):
        saved.append(fig)
        return save(fig, out_dir, name)

    monkeypatch.setattr(module, "save_figure", keep)
    return saved


def studies(tmp_path):
    crossed = write_crossed_study(tmp_path / "crossed")
    crowded = write_study_dir(tmp_path / "zoo", with_failure=False, variants=[r[0] for r in RUNS + ZOO_RUNS])
    labels = {"lora r=8": "LoRA", "lora r=4 targets=all-linear": "LoRA r=4 targets=all-linear"}
    return [(crossed, labels), (crowded, {})]


def test_the_names_of_the_accuracy_figure_never_overlap_or_stray(tmp_path, monkeypatch):
    saved = saved_figures(monkeypatch, study)
    for study_dir, labels in studies(tmp_path):
        study.plot_accuracy_vs_params(load_results(study_dir), tmp_path / "figures", labels=labels)
    for fig in saved:
        fig.canvas.draw()  # as saved: the layout the PDF has
        renderer, ax = fig.canvas.get_renderer(), fig.axes[0]
        frame, to_points = ax.get_window_extent(renderer), 72 / fig.dpi
        notes = [t for t in ax.texts if t.get_text()]
        assert len(notes) >= 5
        boxes = [Text.get_window_extent(note, renderer) for note in notes]  # the name, not its leader line
        for i, (note, box) in enumerate(zip(notes, boxes)):
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            px, py = ax.transData.transform(note.xy)
            gap = math.hypot(max(box.x0 - px, 0, px - box.x1), max(box.y0 - py, 0, py - box.y1)) * to_points
            assert gap <= REACH, f"{note.get_text()!r} is {gap:.0f} pt from its point"
            for other, other_box in zip(notes[i + 1 :], boxes[i + 1 :]):
                assert not box.overlaps(other_box), f"{note.get_text()!r} overlaps {other.get_text()!r}"
            for x0, y0, x1, y1 in bars(ax):  # a name written across an interval bar reads as that point's
                crossed = x0 < box.x1 and box.x0 < x1 and min(y0, y1) < box.y1 and box.y0 < max(y0, y1)
                assert not crossed, f"{note.get_text()!r} crosses an interval bar"


def bars(ax):
    """The vertical interval bars drawn (errorbar's LineCollections), in display coordinates."""
    found = []
    for collection in ax.collections:
        for segment in getattr(collection, "get_segments", lambda: [])():
            (x0, y0), (x1, y1) = ax.transData.transform(segment[:2])
            if abs(x1 - x0) < 1 and abs(y1 - y0) > 1:
                found.append((x0 - 1, y0, x1 + 1, y1))
    return found


def test_reference_lines_of_the_ablation_figure_differ_in_line_style(tmp_path, monkeypatch):
    saved = saved_figures(monkeypatch, ablation)
    ablation.plot_ablation(load_results(write_crossed_study(tmp_path / "s")), "config.method.r", tmp_path / "f")
    (fig,) = saved
    references = [line for line in fig.axes[0].get_lines() if len(set(line.get_ydata())) == 1 and line.get_label()]
    references = [line for line in references if "no rank" in line.get_label()]
    assert len(references) == 2  # full and linear
    # the dash pattern drawn (offset, on-off lengths): "--" names every custom pattern alike
    assert len({str(line._unscaled_dash_pattern) for line in references}) == 2


@pytest.mark.e2e
@pytest.mark.skipif(bool(MISSING_LATEX), reason="LaTeX is not installed")
def test_a_long_command_fits_the_column_and_names_copy_back_intact(tmp_path, monkeypatch):
    study_dir = write_crossed_study(tmp_path / "mine")  # its ablation rank_targets: an underscore in roman type
    from peftlab.cli.study import record_command

    command = [
        "peftlab",
        "study",
        "configs/studies/text_small_with_a_rather_long_name.yaml",
        "--study-dir",
        "runs/text_small_study_of_the_reviewer",
        "--workers",
        "2",
        "--report",
    ]
    monkeypatch.setattr(sys, "argv", ["/venv/bin/" + command[0], *command[1:]])
    record_command(study_dir)
    out = tmp_path / "paper"
    paper.write_paper(study_dir, out, compile=False)
    pdf = compile_pdf(out / "main.tex")
    log = (out / "main.log").read_text(errors="replace")
    assert "Overfull \\hbox" not in log  # the command broken at its spaces: nothing runs past the margin
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    start = text.index("peftlab study configs/")
    copied = " ".join(text[start:].split()[: len(command)])
    assert copied == " ".join(command)
    assert "The rank_targets ablation" in " ".join(text.split())  # an underscore copies as one in any font
