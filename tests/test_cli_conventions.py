"""The command line as researchers expect it (issue 72): dotted overrides may come after a command's options, in
their order; anything else left over is argparse's one line."""

import pytest
import yaml
from testkit import TINY_MODEL

from peftlab.cli import run_command


def test_overrides_after_an_option_are_applied_in_order(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    model = {**TINY_MODEL, "pretrained": "none"}
    config.write_text(yaml.safe_dump({"model": model, "data": {"name": "fashion_mnist"}}))
    capsys.readouterr()
    status = run_command(["validate", str(config), "train.lr=0.5", "--show", "train.max_steps=3", "train.epochs=2"])
    shown = yaml.safe_load(capsys.readouterr().out.split("\n# ")[0])
    assert status == 0 and shown["train"]["max_steps"] == 3 and shown["train"]["lr"] == 0.5
    assert shown["train"]["epochs"] == 2


@pytest.mark.parametrize(
    "argv, left",
    [(["methods", "a=b"], "a=b"), (["validate", "x.yaml", "--bogus", "train.lr=1"], "--bogus")],
)
def test_words_left_over_are_one_line(capsys, argv, left):
    with pytest.raises(SystemExit) as stop:
        run_command(argv)
    stderr = capsys.readouterr().err
    assert stop.value.code == 2 and stderr.count("\n") == 1 and f"unrecognized arguments: {left}" in stderr


@pytest.mark.parametrize(
    "override, meant",
    [
        ("train.learning_rate=1e-3", "train.lr"),
        ("method.rank=4", "method.r"),
        ("train.batchsize=8", "train.batch_size"),
        ("train.max_grad_norm=1", "train.clip_grad"),
        ("train.num_train_epochs=3", "train.epochs"),
    ],
)
def test_did_you_mean_names_the_key_meant(override, meant):
    """Issue 72: train.learning_rate was told warmup_ratio, method.rank min_rank."""
    from peftlab.config.schema import load_config
    from peftlab.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=f"did you mean '{meant}'"):
        load_config(None, [override])


def test_did_you_mean_a_timm_model_by_its_whole_name():
    from peftlab.config.sections import ModelConfig
    from peftlab.models.backbones import build_backbone
    from peftlab.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'vit_small_patch16_224'"):
        build_backbone(ModelConfig(name="vit_smal_patch16_224", pretrained="none"), 10)


def test_a_yaml_error_names_its_cause_and_a_string_field_its_choices(tmp_path):
    from peftlab.config.schema import load_config
    from peftlab.utils.errors import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: [vit\ntrain: {lr: 1}\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line 3, column 6: expected ',' or '\]', but got ':'"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"model.pretrained=True is invalid: expected a string: none .*, hub .* path"):
        load_config(None, ["model.pretrained=true"])


def test_validate_and_summary_answer_in_json(tmp_path, capsys):
    """Issue 72: --json on every command that prints results or checks (validate, summary as well)."""
    import json

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": {**TINY_MODEL, "pretrained": "none"}, "method": {"name": "lora"}}))
    capsys.readouterr()
    assert run_command(["validate", str(config), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["valid"] and set(record["ranks"].values()) == {8} and record["memory_estimate"]["total_bytes"] > 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({"status": "failed", "error": "\x1b[2Jboom"}))
    assert run_command(["summary", str(run), str(tmp_path / "none"), "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["status"], r["error"]) for r in lines] == [
        ("failed", "\x1b[2Jboom"),
        ("unreadable", "no readable result.json"),
    ]


def test_a_study_dry_run_answers_in_json_and_json_alone_is_refused(tmp_path, capsys):
    import json

    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"model": {**TINY_MODEL, "pretrained": "none"}}))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", "seeds": 2, "methods": {"lora": {}}}))
    capsys.readouterr()
    assert run_command(["study", str(study), "--study-dir", str(tmp_path / "out"), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [(r["variant"], r["seed"], r["status"]) for r in plan["runs"]] == [
        ("lora", 0, "pending"),
        ("lora", 1, "pending"),
    ]
    assert plan["remaining_seconds"] is None and plan["training_estimate"]
    assert run_command(["study", str(study), "--json"]) == 2
    assert "--json prints a study's plan for --dry-run" in capsys.readouterr().err
