"""The run id's fast encoding writes the text the old one hashed, byte for byte.

``config_hash`` joins each top-level entry's YAML, dumped once per distinct entry, and a study
hashes all seeds of a configuration from one set of entries (``seed_hashes``). The reference here
is the old path: ``yaml.dump`` of the whole hashed dict, then SHA-256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from pathlib import Path

import pytest
import yaml

from peftlab.config.checks import MAX_INT
from peftlab.config.methods import METHODS
from peftlab.config.pair_joins import decoder_pair_join
from peftlab.config.paths import PATH_FIELDS, hashed_path
from peftlab.config.run_ids import HASHED_AS, LATE_FIELDS, UNHASHED_FIELDS, _entry_yaml, seed_hashes
from peftlab.config.schema import config_hash, to_dict
from peftlab.study.spec import load_study
from peftlab.utils.errors import ConfigError

STUDIES = sorted((Path(__file__).resolve().parents[1] / "configs" / "studies").glob("*.yaml"))
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # what config_hash dumped with before

# strings YAML must quote, fold or escape: keywords, numbers, indicators, spaces, non-ASCII, long lines
STRINGS = [
    "run",
    "yes",
    "No",
    "null",
    "~",
    "true",
    "off",
    "1e3",
    "0x1F",
    "0o17",
    "1_000",
    ".inf",
    "-.5",
    "2001-12-14",
    "a: b",
    "#c",
    "x #y",
    "- x",
    "'q'",
    '"dq"',
    "@at",
    "`b",
    "%p",
    "!t",
    "&a",
    "*s",
    "[l]",
    "{m}",
    ">",
    "|",
    "?",
    " lead",
    "trail ",
    "é ü",
    "日本語",
    "x" * 130,
    "word " * 30 + "end",
    "a,b",
    "=",
    "<<",
    "",
    "back\\slash",
]
FLOATS = [
    1e-3,
    0.1,
    1e-05,
    3e-4,
    1.0,
    2.5e-10,
    1e16,
    1e17,
    123456789.0,
    5e-324,
    1.7976931348623157e308,
    0.0,
    -0.0,
    2.0e-3,
    1 / 3,
]


def reference_hash(cfg, length: int = 12) -> str:
    """``config_hash`` as it was before the fast encoding (commit 67f375a), verbatim, and a decoder pair run's join
    (``pair_joins``, added since)."""
    data = to_dict(cfg)
    if decoder_pair_join(data) is not None:
        data["data"]["pair_join"] = decoder_pair_join(data)
    for dotted in UNHASHED_FIELDS:
        section, _, name = dotted.rpartition(".")
        (data.get(section) if section else data).pop(name, None)
    for dotted in PATH_FIELDS:
        section, _, name = dotted.rpartition(".")
        if isinstance(data[section].get(name), str):
            data[section][name] = hashed_path(data[section][name])
    for dotted, default in LATE_FIELDS.items():
        section, _, name = dotted.rpartition(".")
        fields = data.get(section) if section else data
        if isinstance(fields, dict) and name in fields and fields[name] == default:
            del fields[name]
    for (dotted, value), old in HASHED_AS.items():
        section, _, name = dotted.rpartition(".")
        fields = data.get(section) if section else data
        if isinstance(fields, dict) and fields.get(name) == (list(value) if isinstance(value, tuple) else value):
            fields[name] = old
    for name, (value, old) in METHODS[data["method"]["name"]].hashed_as.items():
        if data["method"].get(name) == value:
            data["method"][name] = old
    return hashlib.sha256(yaml.dump(data, Dumper=DUMPER, sort_keys=False).encode()).hexdigest()[:length]


def shipped_configs() -> list:
    return [spec.config for study in STUDIES for spec in load_study(study).runs]


def replaced(section, rng: random.Random, **choices):
    """``section`` with one field that it has set to a random choice; unchanged where none fits."""
    options = [(name, values) for name, values in choices.items() if hasattr(section, name)]
    if not options:
        return section
    name, values = rng.choice(options)
    try:
        return dataclasses.replace(section, **{name: rng.choice(values)})
    except ConfigError:
        return section


def perturbed(cfg, rng: random.Random):
    """``cfg`` with random hostile values in its name, seed, paths, numbers, lists and patterns."""
    name = rng.choice(
        [
            s
            for s in STRINGS
            if s and s.isprintable() and len(s) <= 128 and "/" not in s and "\\" not in s and s not in (".", "..")
        ]
    )
    method = replaced(
        cfg.method,
        rng,
        r=[1, 7, 64, MAX_INT],
        lora_alpha=FLOATS + [3, 16],
        lora_dropout=FLOATS[:3],
        target_modules=["standard", "qkv", ["q", "v"], ["yes", "no"], ["a: b", "#c"]],
        rank_pattern=[{}, {"blocks.0.attn.qkv": 4, "yes": 2}, {"日本": 3, "a b": 1}],
    )
    train = replaced(
        cfg.train,
        rng,
        lr=FLOATS[:12],
        head_lr=[None] + FLOATS[:5],
        weight_decay=FLOATS,
        clip_grad=[None] + FLOATS[:5],
        max_steps=[None, 0, 1, MAX_INT],
        device=["cpu", "cuda:1"],
        precision=["auto", "fp32", "bf16"],
        compile=[True, False],
        fused_adamw=[None, True, False],
    )
    data = replaced(
        cfg.data,
        rng,
        root=[None] + ["/data/" + s for s in STRINGS if s],
        classes=[None, (0, 1), (3,)],
        val_fraction=FLOATS[:3],
        num_workers=[None, 0, 3],
        cache=[True, False],
        test_dir=[None, "/t/yes", "/t/a: b"],
    )
    quant = replaced(
        cfg.quant,
        rng,
        skip=[(), ("head",), ("head", "yes", "a b")],
        double_quant=[True, False],
        cpu_kernel=["reference", "bnb"],
    )
    model = replaced(
        cfg.model,
        rng,
        pretrained=["none", "hub", "/w/日本.safetensors", "/w/a: b #c.bin"],
        drop_path_rate=FLOATS[:3],
        num_classes=[None, 2, 1000],
    )
    # protocol none: a preset's keys (drop-path, interpolation, ...) are perturbed above, which it would refuse
    return dataclasses.replace(
        cfg,
        name=name,
        seed=rng.randint(0, MAX_INT),
        method=method,
        train=train,
        data=data,
        quant=quant,
        model=model,
        protocol="none",
    )


def test_the_run_id_of_every_shipped_study_run_is_the_old_encodings():
    for study in STUDIES:
        for spec in load_study(study).runs:
            assert spec.run_id == reference_hash(spec.config), (study.name, spec.variant, spec.seed)


def test_random_configs_from_the_shipped_studies_hash_as_before():
    rng = random.Random(26)
    configs = rng.sample(shipped_configs(), 300)
    changed = 0
    for cfg in configs:
        hostile = perturbed(cfg, rng)
        changed += hostile != cfg
        assert config_hash(cfg) == reference_hash(cfg)
        assert config_hash(hostile) == reference_hash(hostile), hostile
        assert config_hash(hostile, 64) == reference_hash(hostile, 64)
        seeds = [0, 1, rng.randint(2, MAX_INT)]
        expected = [reference_hash(dataclasses.replace(hostile, seed=seed)) for seed in seeds]
        assert seed_hashes(to_dict(hostile), seeds) == expected
    assert changed == len(configs)  # every config was perturbed: the test compares the hostile values


def plain_value(rng: random.Random, depth: int = 0):
    """A random value of the kinds ``to_dict`` makes, nested up to 3 deep, strings YAML must quote."""
    kind = rng.randrange(7 if depth < 3 else 5)
    if kind == 0:
        return rng.choice(STRINGS + ["multi\nline", "trailing\n", "\ttab", "nul\x00", "\x85next", "a" * 81 + " b"])
    if kind == 1:
        return rng.choice(FLOATS + [float("inf"), -float("inf"), float("nan"), -1e-7])
    if kind == 2:
        return rng.choice([0, 1, -1, MAX_INT, 10**20])
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    if kind == 5:
        return [plain_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(STRINGS) + str(i): plain_value(rng, depth + 1) for i in range(rng.randrange(4))}


@pytest.mark.parametrize("seed", range(5))
def test_a_mappings_yaml_is_its_entries_yaml_joined(seed):
    rng = random.Random(seed)
    for _ in range(200):
        data = {rng.choice(STRINGS) + str(i): plain_value(rng) for i in range(1 + rng.randrange(8))}
        joined = "".join(_entry_yaml(key, value) for key, value in data.items())
        assert joined == yaml.dump(data, Dumper=DUMPER, sort_keys=False), data


def test_entries_that_compare_equal_but_are_written_differently_are_not_confused():
    for a, b in [(1, 1.0), (1, True), (0.0, -0.0), (0, False), ([1], [1.0]), ({"a": 1, "b": 2}, {"b": 2, "a": 1})]:
        assert _entry_yaml("k", a) == yaml.dump({"k": a}, Dumper=DUMPER, sort_keys=False)
        assert _entry_yaml("k", b) == yaml.dump({"k": b}, Dumper=DUMPER, sort_keys=False)
        assert _entry_yaml("k", a) != _entry_yaml("k", b)
