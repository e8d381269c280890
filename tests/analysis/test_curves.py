"""load_curves: validation accuracy against step from each completed run's metrics.jsonl, a damaged line named."""

import json
import logging

from studyfiles import write_study_dir

from peftlab.analysis.results.load import load_curves


def test_damaged_metrics_lines_are_named_by_file_and_line_and_a_cut_last_line_is_noted(tmp_path, caplog):
    write_study_dir(tmp_path, with_failure=False, variants=["linear"])
    runs = tmp_path / "runs"
    lines = (runs / "linear-s0" / "metrics.jsonl").read_text().splitlines()
    step = json.dumps({"kind": "step", "step": 10, "epoch": 0, "loss": 1.2})  # no curve point, and not damage
    wrong = json.dumps({"kind": "eval", "step": 60, "epoch": 0, "val_loss": 1.0, "val_top1": "abc"})
    (runs / "linear-s0" / "metrics.jsonl").write_text("\n".join([step, lines[0], "{cut", wrong, *lines[1:]]) + "\n")
    (runs / "linear-s1" / "metrics.jsonl").write_text("\n".join(lines) + '\n{"kind": "eval", "st')  # a crash mid-write
    (runs / "linear-s2").rename(runs / "linear\x1b[2J")

    with caplog.at_level(logging.WARNING, logger="peftlab"):
        curves = load_curves(tmp_path)
    assert len(curves) == 3 * 4 and curves["val_top1"].between(0, 1).all()
    said = [r.getMessage() for r in caplog.records if r.name.startswith("peftlab")]
    assert len(said) == 2, said
    assert "2 damaged lines of metrics.jsonl" in said[0] and "runs/linear-s0/metrics.jsonl lines 3, 4" in said[0]
    assert "the last line of runs/linear-s1/metrics.jsonl" in said[1] and "cut short" in said[1]
    assert curves.attrs["damaged_lines"] == {"linear-s0": [3, 4]}

    (runs / "linear-s0" / "metrics.jsonl").write_text("\n".join(lines) + "\n{cut\n")  # ended: no write was cut
    (runs / "linear\x1b[2J" / "metrics.jsonl").write_text("[1]\n" + "\n".join(lines) + "\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="peftlab"):
        load_curves(tmp_path)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("peftlab")]
    assert "runs/linear-s0/metrics.jsonl line 5" in said[0] and "runs/linear\\x1b[2J/metrics.jsonl line 1" in said[0]
    assert "\x1b" not in said[0]
