"""Every YAML under configs/ validates: run configs with the model checks, studies expanded."""

import dataclasses
from pathlib import Path

import pytest
from testkit import REPO, RUN_CONFIGS

from peftlab.config.schema import load_config
from peftlab.study.preflight import validate_study
from peftlab.study.spec import load_study
from peftlab.tuners.params import check_against_model

STUDIES = sorted((REPO / "configs" / "studies").glob("*.yaml"))


def test_configs_exist():
    assert RUN_CONFIGS and STUDIES


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_run_config_validates_and_states_its_command(path: Path):
    cfg = load_config(path)
    if cfg.model.source == "hf-text" and not (Path(cfg.model.path) / "config.json").is_file():
        # a text base its study's pretraining writes (configs/pretrain_text.yaml): checked against the
        # architecture that pretraining trains, as the study's own pre-flight does
        base = load_config(REPO / "configs" / "pretrain_text.yaml")
        assert Path(cfg.model.path).name == base.name, "a text base the shipped pretraining does not write"
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=base.model.path))
    check_against_model(cfg)
    assert path.read_text().startswith("# "), "a config starts with its command and expected result"


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_study_validates(path: Path):
    study = load_study(path)
    validate_study(study)
    assert study.runs and len({s.run_id for s in study.runs}) == len(study.runs)
    assert path.read_text().startswith("# ")


def test_default_study_shape():
    study = load_study(REPO / "configs" / "studies" / "default.yaml")
    assert sorted({s.variant for s in study.runs}) == [
        "adalora",
        "adaptive",
        "full",
        "linear",
        "lora",
        "lora quant=int8",
        "lora quant=nf4",
        "qalora",
    ]
    assert len(study.runs) == 40 and study.pretrain is not None
    assert all(s.config.train.threads == 1 for s in study.runs)  # make study runs two at a time
    shared = [s for s in study.runs if s.variant == "lora"]  # the fp32 point of the quant ablation, trained once
    assert all(s.groups == ("main", "quant") for s in shared)


def test_matrix_dry_run(tmp_path):
    from testkit import run_cli

    proc = run_cli(
        "study",
        str(REPO / "configs" / "studies" / "vit_peft_matrix.yaml"),
        "--dry-run",
        "--study-dir",
        str(tmp_path / "m"),
    )
    # its datasets are not here: the runs are listed, then one line says what the study would stop on (issue 72)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "data.root=" in proc.stderr, proc.stderr
    assert "pending; remaining time: unknown until a run finishes" in proc.stdout


def test_vtab1k_study_dry_run_lists_19_tasks_by_method_by_seed_offline(tmp_path):
    from testkit import cli_here

    from peftlab.config.suites import VTAB1K_TASKS

    proc = cli_here(
        "study", str(REPO / "configs" / "studies" / "vtab1k.yaml"), "--dry-run", "--study-dir", str(tmp_path / "v")
    )
    # offline: no download attempted, nothing retried; the runs listed, then the one line the study would stop on
    assert proc.returncode == 2 and proc.stderr.startswith("peftlab: error: no vtab1k/"), proc.stderr
    assert proc.stderr.count("\n") == 1 and "stops 21 runs" in proc.stderr
    waiting = [line.split() for line in proc.stdout.splitlines() if line.startswith("(tuning)")]
    assert len(waiting) == 19 * 7 * 3
    assert {line[-1] for line in waiting} == {f"data=vtab1k/{task}" for task in VTAB1K_TASKS}
    assert len([line for line in proc.stdout.splitlines() if line.startswith("tune ")]) == 19 * 7
    assert "399 runs: 0 done" in proc.stdout and "GPU-hours" in proc.stdout.splitlines()[-1]
