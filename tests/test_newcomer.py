"""What a newcomer hit trying peftlab on an image folder of their own from the README (issue 72): each a check
that failed before its mend. Each runs in this process on a tiny folder of 12-pixel PNGs, in a fraction of a second
where nothing trains."""

import json

import pytest
import yaml
from PIL import Image
from testkit import TINY_MODEL, assert_one_line_refusal, command_in_process

from peftlab.study.search import run_search
from peftlab.study.spec import load_study
from peftlab.utils.errors import UserError

CLASSES = ("circle", "cross", "square")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """An image folder of three classes with train/ and test/, as a researcher's own data."""
    monkeypatch.setenv("PEFTLAB_DATA_CACHE", str(tmp_path / "cache"))  # never the real ~/.cache
    root = tmp_path / "shapes"
    for c, name in enumerate(CLASSES):
        for split, count in (("train", 6), ("test", 2)):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (12, 12), (80 * c, 30 * i, 100)).save(root / split / name / f"{i}.png")
    return root


def write_study(tmp_path, base: dict, methods: dict, tune: dict | None = None):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    study = {"name": "s", "base": "base.yaml", "seeds": 1, "methods": methods}
    if tune is not None:
        study["tune"] = tune
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def base_on(folder, **model) -> dict:
    return {
        "model": {**TINY_MODEL, **model},
        "data": {"name": "imagefolder", "root": str(folder)},
        "method": {"name": "lora", "r": 2},
        "train": {"max_steps": 1, "batch_size": 4},
    }


def test_a_study_on_a_base_file_that_is_not_there_stops_before_any_run(tmp_path, folder):
    # validate refused it, but the study's pre-flight and dry-run passed and every trial then failed
    path = write_study(tmp_path, base_on(folder, pretrained="no-such-base.safetensors"), {"lora": {}})
    out = tmp_path / "out"
    dry = command_in_process("study", str(path), "--study-dir", str(out), "--dry-run", "--quiet")
    assert_one_line_refusal(*dry, "no-such-base.safetensors", "does not exist", "stops 1 run (lora)")
    real = command_in_process("study", str(path), "--study-dir", str(out), "--quiet")
    assert real == dry
    assert not out.exists()


class Trials:
    """Stands in for the study's executor: writes each trial run's result.json as ``result(config)`` gives it."""

    def __init__(self, result):
        self.result = result

    def __call__(self, jobs, on_done, stop_when):
        for spec, run_dir in jobs:
            result = self.result(spec.config)
            (run_dir / "result.json").write_text(json.dumps(result))
            on_done(spec, result)


def at_chance(cfg):
    data = {"num_classes": 4, "split_sizes": {"val": 24}}
    return {"status": "completed", "metrics": {"val_top1": 0.2917}, "provenance": {"data": data}}


def failed(cfg):
    return {"status": "failed", "error": "weights file /x/model.safetensors does not exist"}


@pytest.mark.parametrize(
    "result, why",
    [
        (at_chance, "3 of 3 fell to chance on validation (the first: validation top-1 29.2% is at or below chance"),
        (failed, "3 of 3 failed (the first: weights file /x/model.safetensors does not exist)"),
    ],
)
def test_a_search_that_can_choose_no_trial_says_why(tmp_path, result, why):
    # it said "no trial completed without diverging" where every trial had completed at chance, or failed
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**base_on(tmp_path), "train": {"lr": 1e-3}}))
    tune = {"axes": {"train.lr": [1e-3, 3e-3, 1e-2]}, "search": "grid"}
    study = {"name": "s", "base": "base.yaml", "seeds": 1, "methods": {"lora": {}}, "tune": tune}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    search = load_study(tmp_path / "study.yaml").tune["lora"]
    with pytest.raises(UserError) as refused:
        run_search(search, tmp_path / "tune", Trials(result), slots=1)
    assert f"tuning of method 'lora': no trial can be chosen: {why}" in str(refused.value)
    assert "diverging" not in str(refused.value)


def test_a_probe_with_nothing_to_tune_is_told_why(tmp_path, folder):
    # configs/downstream.yaml sets train.head_lr, so a probe copied from it has no use for the shared train.lr:
    # the line said only "has no axis to tune"
    base = base_on(folder)
    base["train"]["head_lr"] = 2e-3
    tune = {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid"}
    path = write_study(tmp_path, base, {"linear": {}, "lora": {}}, tune)
    status, stderr = command_in_process("study", str(path), "--study-dir", str(tmp_path / "out"), "--dry-run")
    assert_one_line_refusal(
        status,
        stderr,
        "study method 'linear' has no axis to tune: train.lr has no effect (a linear probe trains only its head, "
        "whose rate is train.head_lr=0.002: set train.head_lr instead); give it its own tune: {axes: ...}",
    )
