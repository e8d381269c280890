"""Every size a method config can set is counted on the meta device before anything is allocated:
each integer knob of each method at its maximum is a one-line refusal (exit 2), or a config that
validates, in seconds and without a memory blow-up; validate, train and a study's dry-run alike."""

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from peftlab.config_checks import MAX_INT
from peftlab.tuners import TUNERS
from testkit import TINY_MODEL, assert_one_line_refusal, cli_in_process, needs_fashion_mnist

# a knob that counts only once another is set: oft's r (blocks) replaces oft_block_size, and so on
COMPANIONS = {("oft", "r"): {"oft_block_size": 0}, ("boft", "boft_block_num"): {"boft_block_size": 0},
              ("qalora", "schedule_steps"): {"schedule": "linear"}}
CPU_SECONDS = 60  # in-process checks of the tiny model take well under a CPU second
RSS_GROWTH = 2 ** 30


def integer_knobs():
    """(method, field, value at its maximum) for every field of every TUNERS config that holds integers."""
    for name, spec in TUNERS.items():
        hints = typing.get_type_hints(spec.config_cls)
        for field in dataclasses.fields(spec.config_cls):
            hint = hints[field.name]
            if hint is int or int in typing.get_args(hint):
                yield name, field.name, {"q": MAX_INT} if typing.get_origin(hint) is dict else MAX_INT


def write_config(path: Path, method: dict, **train) -> Path:
    path.write_text(yaml.safe_dump({
        "model": TINY_MODEL, "method": method,
        "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32},
        "train": {"max_steps": 2, "batch_size": 16, **train}}))
    return path


@pytest.mark.parametrize(("method", "knob", "value"), [(m, k, v) for m, k, v in integer_knobs()],
                         ids=[f"{m}.{k}" for m, k, _ in integer_knobs()])
def test_every_integer_knob_at_its_maximum_is_refused_in_one_line_or_validates(tmp_path, method, knob, value):
    """VPT's prompt_tokens and the adapters' bottleneck were built on the CPU (550 GB, a traceback)
    while the pre-flight counted only the base and rank-r adapters."""
    config = {"name": method, knob: value, **COMPANIONS.get((method, knob), {})}
    status, stderr, seconds, growth = cli_in_process("validate", str(write_config(tmp_path / "c.yaml", config)))
    assert status == 0 or status == 2 and stderr.startswith("peftlab: error: ") and stderr.count("\n") == 1, \
        (status, stderr[-2000:])
    assert seconds < CPU_SECONDS and growth < RSS_GROWTH, (seconds, growth / 2 ** 20)


@needs_fashion_mnist()
@pytest.mark.parametrize("method", [{"name": "vpt", "prompt_tokens": MAX_INT},
                                    {"name": "vpt", "prompt_tokens": 10 ** 8},
                                    {"name": "houlsby", "bottleneck": MAX_INT},
                                    {"name": "lora", "rank_budget": MAX_INT, "rank_strategy": "linear_decay"}],
                         ids=lambda m: f"{m['name']}-{list(m)[1]}")
def test_a_method_too_large_is_refused_by_validate_train_and_a_study_dry_run(tmp_path, method):
    """Each names the knob, and train refuses before it builds the model (no RuntimeError wrapped in
    a train.auto_batch hint)."""
    knob = next(k for k in method if k != "name")
    path = write_config(tmp_path / "run.yaml", method)
    needles = (f"method.{knob}={method[knob]}", "expected a model that fits")
    assert_one_line_refusal(*cli_in_process("validate", str(path))[:2], *needles)
    status, stderr, seconds, growth = cli_in_process("train", str(path), "--run-dir", str(tmp_path / "run"))
    assert_one_line_refusal(status, stderr, *needles)
    assert growth < RSS_GROWTH and "auto_batch" not in stderr
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({"name": "s", "base": "run.yaml", "seeds": 1,
                                                        "methods": {method["name"]: {}}}))
    assert_one_line_refusal(*cli_in_process("study", str(tmp_path / "study.yaml"), "--dry-run", "--study-dir",
                                            str(tmp_path / "out"))[:2], *needles)


def test_the_size_check_leaves_the_meta_model_a_study_shares_as_found():
    from peftlab.config import load_config
    from peftlab.params import check_against_model, meta_model

    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": "houlsby"}})
    model = meta_model(cfg)
    before = [(n, type(m)) for n, m in model.named_modules()]
    check_against_model(cfg, model=model)
    assert [(n, type(m)) for n, m in model.named_modules()] == before


def test_a_quantized_base_counts_as_many_parameters_as_its_float_base():
    """``peftlab params`` of a QLoRA config was a traceback: bitsandbytes cannot quantize a meta tensor."""
    from peftlab.config import load_config
    from peftlab.params import count_parameters

    lora = load_config(overrides={"model": TINY_MODEL, "method": {"name": "lora"}})
    for mode in ("nf4", "int8"):
        assert count_parameters(dataclasses.replace(lora, quant=dataclasses.replace(lora.quant, mode=mode))) == \
            count_parameters(lora)


NASTY_SIZES = [None, True, -1, 0, 1, 3, 64, MAX_INT, MAX_INT + 1, 10**30, 1e309, 0.5, "8", [], {}, {"q": MAX_INT},
               {"q": -1}]


def test_fuzzed_method_knobs_are_one_line_errors_or_valid(tmp_path):
    """Random methods with one to three of their fields set to hostile values (a fixed seed, a bounded
    count): each validate is a one-line refusal or valid, in seconds and bounded memory."""
    import random

    rng = random.Random(37)
    fields = {name: [f.name for f in dataclasses.fields(spec.config_cls) if f.name != "name"]
              for name, spec in sorted(TUNERS.items())}
    outcomes = {"valid": 0, "refused": 0}
    for i in range(40):
        name = rng.choice([name for name, own in fields.items() if own])
        method = {"name": name, **{rng.choice(fields[name]): rng.choice(NASTY_SIZES) for _ in range(rng.randint(1, 3))}}
        status, stderr, seconds, growth = cli_in_process("validate", str(write_config(tmp_path / f"{i}.yaml", method)))
        assert status == 0 or status == 2 and stderr.startswith("peftlab: error: ") and stderr.count("\n") == 1, \
            (method, status, stderr[-2000:])
        assert seconds < CPU_SECONDS and growth < RSS_GROWTH, (method, seconds, growth / 2 ** 20)
        outcomes["valid" if status == 0 else "refused"] += 1
    assert outcomes["refused"] > 20 and outcomes["valid"] > 0, outcomes
