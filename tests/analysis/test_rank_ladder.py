"""A trend across LoRA's rank is claimed over every configuration on the rank ladder: LoRA's own r = 8 beside an
ablation of r = 4 and 16 (alpha = 2r throughout) makes the ladder 4, 8, 16, in the paper's sentence and in the
rank figure; a ladder of two points claims nothing."""

import json
import shutil

import pytest
from studyfiles import write_study_dir

from peftlab.analysis.figures import ablation as ablation_figure
from peftlab.analysis.paper import build as paper
from peftlab.analysis.results.load import load_results
from peftlab.analysis.stats.intervals import completed_runs
from peftlab.analysis.stats.rank_trend import rank_variants

FIGURES_DRAWN = ()  # text and files read, no figure drawn (conftest.py)

R16 = [0.726, 0.712, 0.741]  # r=4 + 5 points on every seed: r=4 against r=16 alone is significant


def rewrite(run, variant=None, groups=None, axes=None, r=None, alpha=None, top1=None):
    spec, result = json.loads((run / "spec.json").read_text()), json.loads((run / "result.json").read_text())
    spec.update({k: v for k, v in {"variant": variant, "groups": groups, "axes": axes}.items() if v is not None})
    if r is not None:
        result["config"]["method"]["r"] = r
    if alpha is not None:
        result["config"]["method"]["lora_alpha"] = alpha
    if top1 is not None:
        result["metrics"]["test_top1"] = top1
    (run / "spec.json").write_text(json.dumps(spec))
    (run / "result.json").write_text(json.dumps(result))


def ladder_study(root, main_alpha=16, r8=None):
    """LoRA r=8 (alpha main_alpha; test top-1 ``r8`` per seed, else studyfiles') in the main group, a rank
    ablation of r=4 and r=16 at alpha = 2r."""
    study = write_study_dir(root, with_failure=False, variants=["full", "lora r=4", "lora r=8"])
    for seed, top1 in enumerate(R16):
        shutil.copytree(study / "runs" / f"lorar4-s{seed}", study / "runs" / f"lorar16-s{seed}")
        rewrite(study / "runs" / f"lorar16-s{seed}", "lora r=16", ["rank"], {"method.r": 16}, 16, 32, top1)
        rewrite(study / "runs" / f"lorar4-s{seed}", groups=["rank"], alpha=8)
        rewrite(study / "runs" / f"lorar8-s{seed}", "lora", ["main"], {}, alpha=main_alpha, top1=r8 and r8[seed])
        rewrite(study / "runs" / f"full-s{seed}", groups=["main"], axes={})
    return study


def test_the_method_s_own_rank_joins_the_ablation_s_ladder(tmp_path):
    done = completed_runs(load_results(ladder_study(tmp_path / "study")))
    assert rank_variants(done) == {4: "lora r=4", 8: "lora", 16: "lora r=16"}
    # at alpha 32 the main LoRA is off the alpha = 2r line: not on the ladder
    off = completed_runs(load_results(ladder_study(tmp_path / "off", main_alpha=32)))
    assert rank_variants(off) == {4: "lora r=4", 16: "lora r=16"}


def test_the_rank_sentence_tests_every_step_of_the_ladder(tmp_path):
    out = tmp_path / "paper"
    paper.write_paper(ladder_study(tmp_path / "study"), out, compile=False)
    results = (out / "results.tex").read_text()
    trend = next(line for line in results.splitlines() if line.startswith(r"\newcommand{\rankTrend}"))
    # r=4 -> r=8: +0.7 points (p = 0.155 alone); r=8 -> r=16: +4.3: not every step differs, so no trend
    assert "shows no trend with $r$ over $r$ = 4, 8 and 16 that a test supports" in trend
    assert "increases" not in trend


def test_a_trend_every_step_supports_is_claimed_over_the_whole_ladder(tmp_path):
    out = tmp_path / "paper"
    paper.write_paper(ladder_study(tmp_path / "study", r8=[0.700, 0.690, 0.714]), out, compile=False)
    results = (out / "results.tex").read_text()
    trend = next(line for line in results.splitlines() if line.startswith(r"\newcommand{\rankTrend}"))
    assert "{increases with $r$ over $r$ = 4, 8 and 16 (each step: paired t-test between neighbouring" in trend


def test_the_rank_figure_shows_the_same_points(tmp_path):
    runs = completed_runs(load_results(ladder_study(tmp_path / "study")))
    on_axis = ablation_figure.runs_of_axis(runs, "config.method.r")
    assert set(on_axis["variant"]) == {"lora r=4", "lora", "lora r=16"}


@pytest.mark.parametrize("variants", [["full", "lora r=4", "lora r=8"]])
def test_two_ranks_are_no_trend(tmp_path, variants):
    out = tmp_path / "paper"
    paper.write_paper(write_study_dir(tmp_path / "two", with_failure=False, variants=variants), out, compile=False)
    assert "rankTrend" not in (out / "results.tex").read_text() and "rankTrend" not in (out / "main.tex").read_text()


# --- what fits the study: Algorithm 1, the author note on the base and the tuning caption -------------------


def test_algorithm_1_quantizes_and_regularises_only_where_the_study_did(tmp_path):
    study = write_study_dir(tmp_path / "plain", with_failure=False, variants=["full", "lora r=8"])
    main = paper.write_paper(study, tmp_path / "paper", compile=False).read_text()
    assert "quantize the base" not in main and "regulariser" not in main
    assert "load the base weights\n\\State apply the configuration's method (\\cfgMethodsOr{})" in main
    assert "cross-entropy of the batch\n" in main
    for path in study.glob("runs/lorar8-*/result.json"):
        result = json.loads(path.read_text())
        result["config"]["quant"]["mode"] = "nf4"
        path.write_text(json.dumps(result))
    main = paper.write_paper(study, tmp_path / "nf4", compile=False).read_text()
    assert "; quantize the base where the config asks for it\n\\State apply" in main


def test_the_mnist_note_only_where_the_base_was_pretrained_on_mnist(tmp_path):
    study = write_study_dir(tmp_path / "mnist", with_failure=False, variants=["full"])
    assert "pretrains the backbone on MNIST" in paper.write_paper(study, tmp_path / "p", compile=False).read_text()
    for path in study.glob("runs/*/result.json"):
        result = json.loads(path.read_text())
        result["config"]["model"]["pretrained"] = "none"
        path.write_text(json.dumps(result))
    assert "MNIST" not in paper.write_paper(study, tmp_path / "q", compile=False).read_text()


def test_the_tuning_caption_names_pruned_trials_only_where_a_search_pruned_one(tmp_path):
    from types import SimpleNamespace

    from peftlab.analysis.paper.macro_text import TUNING
    from peftlab.analysis.paper.macros import Numbers

    numbers = Numbers()
    numbers.made_from = TUNING  # as define_tuning makes them (paper/macro_text.py)
    for name in ("tuneUnit", "tuneMetric"):
        numbers.add(name, "x", "")
    trial = {"state": "COMPLETE", "value": 0.5, "params": {"train.lr": 0.1}}
    search = {"search": {"metric": "val_top1", "axes": [{"key": "train.lr", "values": [0.1]}], "trials": 1}}
    study = SimpleNamespace(searches=[{**search, "trials": [trial]}])
    study.searches[0]["search"]["seeds"] = [1000]
    assert "hollow" not in paper.tuning_text(study, numbers, [])["caption"]
    study.searches[0]["trials"].append({**trial, "state": "PRUNED", "value": 0.3})
    assert "hollow markers are pruned trials" in paper.tuning_text(study, numbers, [])["caption"]


def test_the_run_time_in_all_counts_every_phase_phases_jsonl_records(tmp_path):
    study = write_study_dir(tmp_path / "timed", with_failure=False, variants=["full"])  # 3 runs of 40 s: 2.0 min
    main = paper.write_paper(study, tmp_path / "p", compile=False).read_text()
    # no phases.jsonl (an older study): the final runs' result.json files, and the trials' where there are any
    assert r"the run times of \studyWallPhases{} sum to \studyWallMinutes{} minutes" in main
    assert r"\newcommand{\studyWallPhases}{the final runs}" in (tmp_path / "p" / "results.tex").read_text()
    trial = study / "tune" / "full" / "runs" / "t0" / "result.json"
    trial.parent.mkdir(parents=True)
    trial.write_text(json.dumps({"status": "completed", "timing": {"wall_seconds": 60.0}}))
    paper.write_paper(study, tmp_path / "t", compile=False)
    results = (tmp_path / "t" / "results.tex").read_text()
    assert r"\newcommand{\studyWallMinutes}{3.0}" in results  # 3 runs of 40 s and a trial of 60 s
    assert r"\newcommand{\studyWallPhases}{the tuning trials and the final runs}" in results
    trial.unlink()
    record = {"started": "2026-11-26T10:00:00Z", "wall_seconds": 100.0, "workers": 1, "executor": "local"}
    record |= {"train_eval_seconds": 100.0, "complete": True}
    lines = [
        {**record, "phase": "trials", "runs": 4, "run_seconds": 180.0},
        {**record, "phase": "final runs", "runs": 3, "run_seconds": 120.0},
    ]
    (study / "phases.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    main = paper.write_paper(study, tmp_path / "q", compile=False).read_text()
    results = (tmp_path / "q" / "results.tex").read_text()
    assert r"\newcommand{\studyWallMinutes}{5.0}" in results  # 180 s of trials + 120 s of final runs
    assert r"\newcommand{\studyWallPhases}{the tuning trials and the final runs}" in results
    assert r"the run times of \studyWallPhases{} sum to \studyWallMinutes{} minutes" in main


def test_the_abstract_writes_the_model_and_the_data_as_the_field_does(tmp_path):
    study = write_study_dir(tmp_path / "named", with_failure=False, variants=["full"])
    main = paper.write_paper(study, tmp_path / "p", compile=False).read_text()
    results = (tmp_path / "p" / "results.tex").read_text()
    # downstream.yaml: vit_tiny_patch16_224 resized to 4 blocks of width 128 and 7-pixel patches: not a ViT-Ti/16
    assert r"\newcommand{\cfgModelText}{a ViT of 4 blocks of width 128 with 7-pixel patches}" in results
    assert r"\newcommand{\cfgDataText}{Fashion-MNIST}" in results
    abstract = main[main.index(r"\begin{abstract}") : main.index(r"\end{abstract}")]
    assert r"adapting \cfgModelText{} to \cfgDataText{}" in abstract and "texttt" not in abstract


def test_a_vit_of_its_family_s_size_is_named_by_its_family_and_patch():
    from types import SimpleNamespace

    from peftlab.analysis.paper.macros import typeset_model

    sizes = {"model.patch_size": [16], "model.depth": [12], "model.embed_dim": [192]}
    study = SimpleNamespace(config=lambda key: sizes.get(key, []))
    assert typeset_model("vit_tiny_patch16_224", study) == "ViT-Ti/16"
    assert typeset_model("resnet50", study) == r"\texttt{resnet50}"
