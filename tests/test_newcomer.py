"""What a newcomer hit trying peftlab on an image folder of their own from the README (issue 72): each a check
that failed before its mend. Each runs in this process on a tiny folder of 12-pixel PNGs, in a fraction of a second
where nothing trains."""

import contextlib
import io
import json
import re

import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file
from testkit import REPO, TINY_MODEL, assert_one_line_refusal, command_in_process, header_images

from peftlab import cli
from peftlab.study.search import run_search, tune_study
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
    return {"status": "completed", "metrics": {"val_top1": 0.25 + cfg.train.lr}, "provenance": {"data": data}}


def failed(cfg):
    return {"status": "failed", "error": "weights file /x/model.safetensors does not exist"}


@pytest.mark.parametrize(
    "result, why",
    [
        (at_chance, "3 of 3 fell to chance on validation (the best: validation top-1 26.0% is at or below chance"),
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


def test_params_of_a_config_on_an_image_folder_counts_its_classes_and_applies_the_options(tmp_path, folder):
    # it asked for --num-classes though the folder was there, and printed the config's LoRA count under --method
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(base_on(folder)))
    status, out, _ = params_json(str(config))
    assert status == 0 and out["num_classes"] == len(CLASSES)
    houlsby = params_json(str(config), "method.name=houlsby")
    assert houlsby[0] == 0 and houlsby[1]["trainable"] != out["trainable"]
    for flag, value, key in (("--method", "houlsby", "method.name"), ("--r", "32", "method.r")):
        assert params_json(str(config), flag, value) == params_json(str(config), f"{key}={value}")  # applied
    status, _, stderr = params_json(str(config), "--method", "houlsby", "--r", "4")
    assert_one_line_refusal(status, stderr, "method.r")
    status, _, stderr = params_json("vit_tiny_patch16_224", "--method", "full", "--r", "8")
    assert_one_line_refusal(status, stderr, "--r sets method.r, which method 'full' does not take")


def params_json(*argv: str) -> tuple[int, dict | None, str]:
    """(exit status, the printed counts, stderr) of ``peftlab params ARGV --json`` in this process."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli.run_command(["params", *argv, "--json"])
    return status, json.loads(stdout.getvalue()) if status == 0 else None, stderr.getvalue()


@pytest.fixture
def trained(tmp_path, folder):
    """A finished one-step LoRA run of the tiny ViT on the folder, on a base weights file of its own."""
    base = tmp_path / "base.safetensors"
    save_file(
        timm.create_model(TINY_MODEL["name"], **{k: v for k, v in TINY_MODEL.items() if k != "name"}).state_dict(), base
    )
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(base_on(folder, pretrained=str(base))))
    run_dir = tmp_path / "run"
    status, stderr = command_in_process("train", str(config), "--run-dir", str(run_dir), "--quiet")
    assert status == 0, stderr
    return run_dir


def test_a_peft_adapter_says_how_to_build_and_feed_its_base(tmp_path, trained, folder):
    # its header held the class names only: the architecture of a base of one's own was in the merged export alone
    assert command_in_process("export", str(trained), "--peft", str(tmp_path / "peft")) == (0, "")
    test_top1 = json.loads((trained / "result.json").read_text())["metrics"]["test_top1"]
    paths = sorted((folder / "test").rglob("*.png"))
    labels = torch.tensor([CLASSES.index(p.parent.name) for p in paths])
    for adapter_dir in (trained, tmp_path / "peft"):
        namespace = {}  # docs/python-api.md's snippet, with this adapter
        exec(documented_snippet().replace('"runs/r16"', repr(str(adapter_dir))), namespace)
        header = namespace["header"]
        assert json.loads(header["class_names"]) == list(CLASSES)
        assert header["base_pretrained"] == str(tmp_path / "base.safetensors")
        assert json.loads(header["input_size"]) == [3, TINY_MODEL["img_size"], TINY_MODEL["img_size"]]
        with torch.no_grad():
            predicted = namespace["model"](header_images(paths, namespace["preprocessing"])).argmax(-1)
        assert (predicted == labels).float().mean().item() == pytest.approx(test_top1)


def documented_snippet() -> str:
    text = (REPO / "docs" / "python-api.md").read_text()
    found = re.search(r"<!-- tests/test_newcomer.py runs this block -->\n```python\n(.*?)```", text, re.S)
    assert found, "docs/python-api.md lost its snippet for a base of one's own"
    return found.group(1)


def test_predict_on_a_file_that_is_no_image_says_so_plainly(tmp_path, trained):
    notes = tmp_path / "notes.yaml"
    notes.write_text("name: not an image\n")
    status, stderr = command_in_process("predict", str(trained), str(notes))
    assert_one_line_refusal(status, stderr, f"{notes} is not an image PIL can read: no image format PIL knows")
    assert "BufferedReader" not in stderr


def test_one_worker_tunes_every_method_before_a_failed_search_stops_the_study(tmp_path):
    # with --workers 1 the first failed search stopped the study before the next one started; side by side (two
    # workers) the others went on to their choice
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**base_on(tmp_path), "train": {"lr": 1e-3}}))
    tune = {"axes": {"train.lr": [1e-3, 1e-2]}, "search": "grid"}
    study = {"name": "s", "base": "base.yaml", "seeds": 1, "methods": {"linear": {}, "lora": {}}, "tune": tune}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))

    def scored(cfg):
        if cfg.method.name == "linear":
            return at_chance(cfg)
        return {**at_chance(cfg), "metrics": {"val_top1": 0.9 - cfg.train.lr}}

    with pytest.raises(UserError, match="tuning of method 'linear': no trial can be chosen"):
        tune_study(load_study(tmp_path / "study.yaml"), tmp_path / "out", Trials(scored), slots=1)
    lora = json.loads((tmp_path / "out" / "tune" / "lora" / "selection.json").read_text())
    assert lora["done"] and lora["chosen"]["params"] == {"train.lr": 1e-3}


@pytest.mark.parametrize("method", ["ssf", "vpt"])
def test_a_method_plain_peft_cannot_load_still_trains_and_its_peft_export_is_one_line(tmp_path, folder, method):
    # the adapter's header read the tuned model's patch embedding, which SSF wraps: the run failed at its end
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**base_on(folder), "method": {"name": method}}))
    run_dir = tmp_path / "run"
    assert command_in_process("train", str(config), "--run-dir", str(run_dir), "--quiet") == (0, "")
    assert json.loads((run_dir / "result.json").read_text())["status"] == "completed"
    status, stderr = command_in_process("export", str(run_dir), "--peft", str(tmp_path / "peft"))
    assert_one_line_refusal(status, stderr, "`peftlab export --merged` works")


@pytest.mark.parametrize(
    "override, needle",
    [
        ("data.root=no-such-folder", "does not exist or is not a folder"),
        ("model.pretrained=no-such-base.safetensors", "(model.pretrained) does not exist"),
    ],
)
def test_train_refuses_a_missing_folder_or_base_before_its_run_folder(tmp_path, folder, override, needle):
    # the one line came, but after a run folder with a failed result.json: python-api.md promises none
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(base_on(folder)))
    status, stderr = command_in_process("train", str(config), override, "--run-dir", str(tmp_path / "run"))
    assert_one_line_refusal(status, stderr, needle)
    assert not (tmp_path / "run").exists()


def test_the_dry_runs_compute_counts_an_image_folders_images_by_listing_them(tmp_path):
    """An image folder's training images are known from its folders (no image opened): the dry-run's compute line
    counts them, validation carved as the run carves it, instead of "unknown"."""
    from peftlab.config.schema import load_config
    from peftlab.study.estimate import images_per_epoch

    for split, count in (("train", 10), ("test", 2)):
        for name in ("circle", "square"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                (tmp_path / split / name / f"{i}.png").write_bytes(b"never decoded")
    data = {"name": "imagefolder", "root": str(tmp_path), "val_fraction": 0.25}
    assert images_per_epoch(load_config(overrides={"data": data})) == (15, 5)  # 20 listed, round(0.25 x 20) to val
    assert images_per_epoch(load_config(overrides={"data": {**data, "train_subset": 8}})) == (8, 5)
    assert images_per_epoch(load_config(overrides={"data": {**data, "root": str(tmp_path / "no")}})) is None


def test_a_studys_runs_on_one_image_folder_list_it_once(tmp_path, monkeypatch):
    from peftlab.config.schema import load_config
    from peftlab.data import checks
    from peftlab.study.estimate import images_per_epoch

    for split in ("train", "test"):
        for name in ("circle", "square"):
            (tmp_path / split / name).mkdir(parents=True)
            (tmp_path / split / name / "0.png").write_bytes(b"never decoded")
    listed = []
    real = checks.folder_splits
    monkeypatch.setattr(checks, "folder_splits", lambda *a, **k: listed.append(a) or real(*a, **k))
    cfg = load_config(overrides={"data": {"name": "imagefolder", "root": str(tmp_path), "val_fraction": 0.5}})
    cache: dict = {}
    assert [images_per_epoch(cfg, cache) for _ in range(3)] == [(1, 1)] * 3 and len(listed) == 1
