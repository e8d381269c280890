"""Every bad config or study file is one line on stderr and exit status 2: never a traceback,
never a hang, never a memory blow-up.

The named cases are the ones a user's bad day produced (a binary file, /dev/zero, a FIFO, an
alias bomb, 5,000-deep nesting, a 5,000-digit number, infinite learning rates, absurd sizes,
mistyped study files). The fuzz test mutates a valid run config and a valid study file with a
fixed seed and a bounded count, and calls the CLI's ``main`` in this process (``validate`` and
``study --dry-run``) under an alarm that turns a hang into a failure.
"""

import contextlib
import io
import os
import random
import signal

import pytest
import yaml
from testkit import TINY_MODEL, cpu_seconds

from peftlab import cli
from peftlab.config.schema import RunConfig, flatten, method_fields, to_dict

BASE = {
    "name": "fuzz",
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32},
    "method": {"name": "lora", "r": 4},
    "train": {"epochs": 1, "batch_size": 32},
}
STUDY = {
    "name": "s",
    "base": "base.yaml",
    "seeds": 2,
    "set": {"train.epochs": 1},
    "axes": {"data.name": ["fashion_mnist"]},
    "methods": {"full": {}, "lora": {"axes": {"method.r": [2, {"value": 4, "set": {"method.lora_alpha": 8}}]}}},
    "ablations": {"rank": {"methods": ["lora"], "axes": {"method.r": [2, 8]}}},
    "exclude": [{"method.name": "full", "seed": 1}],
    "report": {"interval": "t", "labels": {"full": "Full"}},
}
CASE_CPU_SECONDS = 20  # a case that spins longer counts as a hang
CASE_WALL_SECONDS = 600  # one that waits this long on a quiet or loaded machine, too


class Hang(Exception):
    pass


def call_cli(*argv: str) -> tuple[int | None, str]:
    """(exit status, stderr) of ``peftlab ARGV`` run in this process; status None: a hang."""

    def alarm(signum, frame):
        raise Hang()

    previous = (
        signal.signal(signal.SIGALRM, alarm),
        signal.signal(signal.SIGPROF, alarm),
        signal.getsignal(signal.SIGTERM),
    )
    stderr, stdout = io.StringIO(), io.StringIO()
    signal.setitimer(signal.ITIMER_PROF, CASE_CPU_SECONDS)  # CPU time: load from other processes does not count
    signal.alarm(CASE_WALL_SECONDS)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            status = cli.main(list(argv))
    except Hang:
        status = None
    finally:
        signal.alarm(0)
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGALRM, previous[0])
        signal.signal(signal.SIGPROF, previous[1])
        signal.signal(signal.SIGTERM, previous[2])
    return status, stderr.getvalue()


def assert_one_line_exit_2(status, stderr, *needles):
    assert status == 2, (status, stderr)
    assert stderr.startswith("peftlab: error: ") and stderr.count("\n") == 1, stderr
    assert len(stderr) < 1000, stderr
    for needle in needles:
        assert needle in stderr, stderr


def write_config(tmp_path, data, name="run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def with_value(data: dict, dotted: str, value) -> dict:
    out = yaml.safe_load(yaml.safe_dump(data))
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value
    return out


# ---------------------------------------------------------------------------------------
# named cases


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"train:\n  lr: \xff\xfe0.1\n", "not UTF-8"),
        (
            b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
            "YAML alias",
        ),
        (b"train: " + b"[" * 5000 + b"]" * 5000 + b"\n", "more than 32 deep"),
        (b"train:\n" + b"".join(b"  " * i + b"k:\n" for i in range(1, 300)), "more than 32 deep"),
        (b"seed: " + b"9" * 5000 + b"\n", "5000 digits"),
        (b"train:\n  lr: 0.1\ntrain:\n  max_steps: 2\n", "repeats the key 'train' at line 3"),
        (b"train: {lr: 0.1, lr: 0.2}\n", "repeats the key 'lr' at line 1"),
        (b"train: {lr: 1e309}\n", "train.lr=inf is invalid: expected a finite number"),
        (b"train: {lr: .inf}\n", "train.lr=inf"),
        (b"train: {head_lr: .nan}\n", "train.head_lr=nan"),
        (b"train: {weight_decay: .inf}\n", "train.weight_decay"),
        (b"train: {clip_grad: .inf}\n", "train.clip_grad"),
        (b"method: {name: lora, lora_alpha: .inf}\n", "method.lora_alpha"),
        (b"method: {name: lora, alpha_pattern: {q: .inf}}\n", "method.alpha_pattern"),
        (b"data: {split_seed: -1}\n", "data.split_seed=-1"),
        (b"seed: 4294967296\n", "seed=4294967296"),
        (b"train: {threads: 9223372036854775808}\n", "train.threads"),
        (b"train: {batch_size: 9223372036854775808}\n", "train.batch_size"),
        (b"model: {depth: 4294967296}\n", "model.depth"),
        (b"model: {depth: 10000}\n", "model.depth=10000"),
        (b"model: {num_classes: 4294967296}\n", "model.num_classes"),
        (b"model: {img_size: 1000000, patch_size: 1}\n", "model.img_size=1000000"),
        (b"model: {embed_dim: 1000000000}\n", "model.embed_dim"),
        (b'name: "a\\0b"\n', "name="),
        (b"name: ../escape\n", "name="),
    ],
)
def test_bad_config_files_are_one_line(tmp_path, content, needle):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    start = cpu_seconds()
    assert_one_line_exit_2(*call_cli("validate", str(path)), needle)
    assert cpu_seconds() - start < 20  # CPU seconds: a refusal takes about one


def test_a_model_too_large_for_memory_is_refused_before_it_is_built(tmp_path):
    # within every bound, but 48 blocks of width 16384 are ~155 G parameters: refused from the meta count
    path = write_config(tmp_path, with_value(with_value(BASE, "model.embed_dim", 16384), "model.depth", 48))
    assert_one_line_exit_2(*call_cli("validate", str(path)), "parameters", "GiB", "available")
    path = write_config(tmp_path, with_value(BASE, "method.r", 100_000_000))
    assert_one_line_exit_2(*call_cli("validate", str(path)), "parameters", "available")


@pytest.mark.parametrize("kind", ["fifo", "directory", "dev-zero", "dev-urandom", "too-large"])
def test_config_that_is_no_regular_small_file_is_one_line(tmp_path, kind):
    path = tmp_path / "cfg.yaml"
    if kind == "fifo":
        os.mkfifo(path)  # opening it would block until a writer comes
    elif kind == "directory":
        path.mkdir()
    elif kind == "too-large":
        path.write_text("# padding\n" * 200_000)
    else:
        path = "/dev/zero" if kind == "dev-zero" else "/dev/urandom"
    needle = {"fifo": "not a regular file", "directory": "is a directory", "too-large": "expected at most"}
    assert_one_line_exit_2(*call_cli("validate", str(path)), needle.get(kind, "not a regular file"))


def test_an_override_that_is_not_yaml_or_too_big_is_one_line(tmp_path):
    path = write_config(tmp_path, BASE)
    assert_one_line_exit_2(*call_cli("validate", str(path), "seed=" + "9" * 5000), "seed=", "expected an integer")
    assert_one_line_exit_2(*call_cli("validate", str(path), "train.lr=*x"), "train.lr='*x'")


@pytest.mark.parametrize(
    "overrides",
    [["train.lr=0.1", "train.lr=0.2"], ["train={lr: 0.1}", "train.lr=0.2"], ["train.lr=0.1", "train={epochs: 2}"]],
)
def test_a_key_given_twice_in_overrides_is_one_line(tmp_path, overrides):
    """Like a duplicate YAML key: the last would win silently (the first value was lost)."""
    path = write_config(tmp_path, BASE)
    assert_one_line_exit_2(
        *call_cli("validate", str(path), *overrides),
        f"override '{overrides[1]}' sets",
        "again (an earlier override set it)",
    )


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"base": 5}, "base=5 is invalid"),
        ({"base": ["a"]}, "base=['a'] is invalid"),
        ({"base": None}, "base=None is invalid"),
        ({"pretrain": 5}, "pretrain=5 is invalid"),
        ({"pretrain": "lora.yaml"}, "expected 'full'"),
        ({"seeds": 1_000_000_000}, "study axis 'seeds' value 1000000000 is invalid"),
        ({"seeds": 100_000}, "study axis 'seeds' value 100000 is invalid"),
        ({"seeds": [1, 1]}, "distinct"),
        ({"seeds": 200, "axes": {"train.lr": [0.1 * i for i in range(1, 101)]}}, "expands to"),
        ({"exclude": [{"method.name": ["full", "lora"]}]}, "the exclude rules drop every run"),
        ({"exclude": [{"method": {"name": "full"}}]}, "exclude key 'method' is not a config field"),
        ({"exclude": [{"method.name": {"x": 1}}]}, "is a mapping"),
        ({"ablations": {"rank": {"methods": ["lora"], "axis": {"method.r": [2]}}}}, "unknown keys ['axis']"),
        ({"ablations": {"rank": {"methods": "lora"}}}, "methods='lora' is invalid"),
        ({"set": {"method": 5}}, "set/axes key 'method' is not a config field"),
        ({"set": {5: 1}}, "set/axes key 5 is not a config field"),
        ({"name": 5}, "name=5 is invalid"),
        ({"name": "a/b"}, "name='a/b' is invalid"),
        ({"methods": {"lora": {"set": {"model": {"depth": 2}}}}}, "set key 'model' is not a config field"),
    ],
)
def test_bad_study_files_are_one_line(tmp_path, change, needle):
    write_config(tmp_path, BASE, "base.yaml")
    write_config(tmp_path, with_value(BASE, "method.name", "lora"), "lora.yaml")
    path = write_config(tmp_path, {**STUDY, **change}, "study.yaml")
    start = cpu_seconds()
    assert_one_line_exit_2(*call_cli("study", str(path), "--dry-run", "--study-dir", str(tmp_path / "out")), needle)
    assert cpu_seconds() - start < 30  # CPU seconds: a refusal takes a few


def test_a_study_base_that_is_not_utf8_is_one_line(tmp_path):
    (tmp_path / "base.yaml").write_bytes(b"\x80\x81 not text")
    path = write_config(tmp_path, STUDY, "study.yaml")
    assert_one_line_exit_2(
        *call_cli("study", str(path), "--dry-run", "--study-dir", str(tmp_path / "out")), "base.yaml is not UTF-8"
    )


# ---------------------------------------------------------------------------------------
# fuzzing

NASTY = [
    None,
    True,
    False,
    -1,
    0,
    1,
    3,
    2**31,
    2**32,
    2**63,
    2**64 + 1,
    10**30,
    -(10**30),
    1e309,
    float("-inf"),
    float("nan"),
    -0.0,
    1e-320,
    0.5,
    1e30,
    "",
    "x",
    "x\x00y",
    "a" * 5000,
    "../..",
    "1e3",
    "nan",
    "-5",
    "auto",
    [],
    [1, 2],
    ["q", "v"],
    [[[[["deep"]]]]],
    {},
    {"a": 1},
    {"name": "full"},
    {"value": 1},
]


def fuzz_configs(rng: random.Random, count: int):
    fields = sorted(flatten(to_dict(RunConfig())))
    fields = [f for f in fields if not f.startswith("method.")] + [f"method.{f}" for f in method_fields("lora")]
    fields += ["train.unknown", "model", "method", "quant", "train", "nonsense"]
    for _ in range(count):
        data = BASE
        for _ in range(rng.randint(1, 3)):
            data = with_value(data, rng.choice(fields), rng.choice(NASTY))
        yield data


def study_paths(node, prefix=()):
    """Every place in a study dict a value can be replaced: (path of keys / indices)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from study_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from study_paths(value, prefix + (i,))


def replaced(node, path, value):
    if not path:
        return value
    node = list(node) if isinstance(node, list) else dict(node)
    node[path[0]] = replaced(node[path[0]], path[1:], value)
    return node


def fuzz_studies(rng: random.Random, count: int):
    keys = ["base", "pretrain", "seeds", "set", "axes", "methods", "ablations", "exclude", "report", "name", "extra"]
    for _ in range(count):
        study = STUDY
        for _ in range(rng.randint(1, 2)):
            paths = [p for p in study_paths(study) if p]
            if rng.random() < 0.3:
                study = {**study, rng.choice(keys): rng.choice(NASTY)}
            elif rng.random() < 0.2 and paths:  # a key renamed: unknown keys anywhere
                path = rng.choice(paths)
                node = study
                for part in path[:-1]:
                    node = node[part]
                if isinstance(node, dict):
                    new_key = rng.choice([5, None, True, "method", "train.lr", "x.y", "value", "set"])
                    study = replaced(study, path[:-1], {(new_key if k == path[-1] else k): v for k, v in node.items()})
            elif paths:
                study = replaced(study, rng.choice(paths), rng.choice(NASTY))
        yield study


def test_fuzzed_configs_and_studies_are_one_line_errors_or_valid(tmp_path):
    """The counts go into the closing note of issue 14: cases, one-line errors, valid, tracebacks, hangs."""
    rng = random.Random(14)
    write_config(tmp_path, BASE, "base.yaml")
    counts = {"cases": 0, "one_line_errors": 0, "valid": 0, "tracebacks": 0, "hangs": 0}
    failures = []

    def check(argv, source):
        counts["cases"] += 1
        try:
            status, stderr = call_cli(*argv)
        except BaseException as err:
            counts["tracebacks"] += 1
            failures.append(f"{type(err).__name__}: {str(err)[:200]} <- {str(source)[:300]}")
            return
        if status is None:
            counts["hangs"] += 1
            failures.append(f"hang <- {str(source)[:300]}")
        elif status == 0:
            counts["valid"] += 1
        elif status == 2 and stderr.startswith("peftlab: error: ") and stderr.count("\n") == 1 and len(stderr) < 1000:
            counts["one_line_errors"] += 1
        else:
            counts["tracebacks"] += 1
            failures.append(f"exit {status}: {stderr[:300]} <- {str(source)[:300]}")

    for i, data in enumerate(fuzz_configs(rng, 300)):
        path = tmp_path / f"cfg{i}.yaml"
        path.write_text(yaml.safe_dump(data))
        check(["validate", str(path)], data)
    for i, study in enumerate(fuzz_studies(rng, 200)):
        path = tmp_path / f"study{i}.yaml"
        path.write_text(yaml.safe_dump(study))
        check(["study", str(path), "--dry-run", "--study-dir", str(tmp_path / "out")], study)
    print(f"\nissue 14 fuzz counts: {counts}")
    assert counts["tracebacks"] == 0 and counts["hangs"] == 0, (counts, failures)
    assert counts["one_line_errors"] > 250 and counts["valid"] > 20, counts  # the fuzzer reaches both outcomes


# ---------------------------------------------------------------------------------------
# issue 26: control characters, regexes as they are used, special files and wrong kinds of paths


@pytest.mark.parametrize("content", [b"seed: 1\n\x01\n", b'name: "a"\nseed: \x00\n', b"train: {lr: 1}\x1b\n"])
def test_control_characters_in_a_config_or_study_are_one_line(tmp_path, content):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert_one_line_exit_2(*call_cli("validate", str(path)), "bad.yaml", "control character")
    write_config(tmp_path, BASE, "base.yaml")
    study = tmp_path / "study.yaml"
    study.write_bytes(yaml.safe_dump(STUDY).encode() + content)
    assert_one_line_exit_2(
        *call_cli("study", str(study), "--dry-run", "--study-dir", str(tmp_path / "out")),
        "study.yaml",
        "control character",
    )


def test_control_characters_in_an_override_are_one_line(tmp_path):
    path = write_config(tmp_path, BASE)
    assert_one_line_exit_2(*call_cli("validate", str(path), "train.lr=\x01"), "train.lr='\\x01' is invalid")
    assert_one_line_exit_2(*call_cli("validate", str(path), "name=a\x1bb"), "name='a\\x1bb' is invalid")
    assert_one_line_exit_2(*call_cli("validate", str(path), "tra\x01in.lr=1"), "unknown config key")
    assert_one_line_exit_2(*call_cli("validate", str(path), "name=a\x85b"), "name='a\\x85b' is invalid")


@pytest.mark.parametrize("content", ['name: "a\x85b"\n', "name: a\x85b\n", "seed: 1\x85train: {lr: 1}\n"])
def test_a_next_line_character_in_a_config_is_one_line_not_a_silent_line_break(tmp_path, content):
    """YAML reads U+0085 (NEL) as a line break: a name holding one became 'a b' without a word."""
    path = tmp_path / "c.yaml"
    path.write_text(content, encoding="utf-8")
    assert_one_line_exit_2(*call_cli("validate", str(path)), "line 1 holds the control character U+0085 (NEL)")


def test_control_characters_of_a_path_in_an_error_are_shown_escaped(tmp_path):
    """A missing weights file named with ESC [ 2 J cleared the terminal that printed the error."""
    path = write_config(tmp_path, BASE)
    status, stderr = call_cli("validate", str(path), "model.pretrained=/tmp/a\x1b[2Jb.safetensors")
    assert_one_line_exit_2(status, stderr, "a\\x1b[2Jb.safetensors")
    assert "\x1b" not in stderr


@pytest.mark.parametrize(
    "override, needle",
    [
        ("method.rank_pattern={'(?i)q': 4}", "still compiles inside"),  # a global flag once embedded
        ("method.alpha_pattern={'(?s)q': 4}", "still compiles inside"),
        ("quant.skip=['(?i)head']", "still compiles inside"),
        ("method.target_modules=['(.*.*)*z']", "quantifier inside a quantified group"),  # catastrophic backtracking
        ("method.target_modules=['(a|a)*b']", "alternation inside a quantified group"),
        ("method.rank_pattern={'(blocks\\.\\d+)+q': 4}", "quantifier inside a quantified group"),
        ("quant.skip=['(x+x+)+y']", "quantifier inside a quantified group"),
        ("method.target_modules=['.*.*.*.*.*.*.*.*.*.*.*.*z']", "at most 4 quantifiers"),
        ("method.target_modules=['" + ".?" * 40 + "z']", "at most 4 quantifiers"),  # 2**40 ways to fail
        ("method.rank_pattern={'(?:.?){30}z': 4}", "quantifier inside a quantified group"),
        ("method.target_modules=['(?:.?.?)*z']", "quantifier inside a quantified group"),
        ("quant.skip=['" + "(?:|.)" * 24 + "z']", "at most 4 quantifiers"),  # an empty alternative is a ?
        ("method.target_modules=['" + "(.|..)" * 40 + "']", "at most 4 quantifiers"),
        ("method.target_modules=['(q)\\1']", "backreference"),
        ("method.target_modules=['" + "q" * 300 + "']", "at most 256 characters"),
    ],
)
def test_regex_fields_are_checked_as_they_are_used_and_match_in_bounded_time(tmp_path, override, needle):
    path = write_config(tmp_path, BASE)
    start = cpu_seconds()
    field_name = override.partition("=")[0]
    assert_one_line_exit_2(*call_cli("validate", str(path), override), field_name, needle)
    assert cpu_seconds() - start < 20  # CPU seconds: a refusal takes about one


def test_regexes_that_module_names_need_stay_valid():
    from peftlab.config.checks import NAME_COMPONENTS, NAME_SUFFIX, WHOLE_NAME, check_regex
    from peftlab.tuners.targets import PRESETS

    patterns = [p for group in PRESETS.values() for p in group]
    patterns += ["head", "patch_embed.*", r"blocks\.(0|1)\.attn\..*", "(?i:Q)", r"blocks\.[0-5]\.mlp\.fc\d"]
    for pattern in patterns:
        for form in (WHOLE_NAME, NAME_SUFFIX, NAME_COMPONENTS):
            check_regex("f", pattern, form)


@pytest.mark.skipif(not os.access("/proc/kmsg", os.R_OK), reason="/proc/kmsg is not readable here")
def test_a_proc_file_that_waits_for_data_is_one_line_not_a_hang():
    status, stderr = call_cli("validate", "/proc/kmsg")  # a "regular file" whose read blocks
    assert status is not None, "validate /proc/kmsg hung"
    assert status == 2 and stderr.count("\n") == 1 and "/proc/kmsg" in stderr, stderr


RUN_DIR_CASES = {
    "a-file": lambda d: d.write_text("x"),
    "checkpoint-a-file": lambda d: (d.mkdir(), (d / "checkpoint").write_text("x")),
    "last.pt-a-directory": lambda d: (d / "checkpoint" / "last.pt").mkdir(parents=True),
    "lock-a-directory": lambda d: (d / ".lock").mkdir(parents=True),
    "monitors-a-fifo": lambda d: (d.mkdir(), os.mkfifo(d / "monitors.jsonl")),
    "result-a-device": lambda d: (d.mkdir(), (d / "result.json").symlink_to("/dev/null")),
}


@pytest.mark.parametrize("case", sorted(RUN_DIR_CASES))
def test_a_run_directory_or_entry_of_the_wrong_kind_is_one_line(tmp_path, case):
    path = write_config(tmp_path, BASE)
    run_dir = tmp_path / "run"
    RUN_DIR_CASES[case](run_dir)
    needle = "run directory" if case == "a-file" else "run directory entry"
    # a link to a device is refused as a link: peftlab writes nothing through a link in a run directory
    what = "is a symbolic link" if case == "result-a-device" else "expected a"
    assert_one_line_exit_2(*call_cli("train", str(path), "--run-dir", str(run_dir), "--quiet"), needle, what)


@pytest.mark.parametrize(
    "run_dir, needle", [("/dev/null", "is a character device"), ("/proc/self", "cannot hold peftlab's files")]
)
def test_a_run_or_study_directory_that_is_a_device_or_under_proc_is_one_line(tmp_path, run_dir, needle):
    path = write_config(tmp_path, BASE, "base.yaml")
    assert_one_line_exit_2(*call_cli("train", str(path), "--run-dir", run_dir, "--quiet"), run_dir, needle)
    study = write_config(tmp_path, STUDY, "study.yaml")
    assert_one_line_exit_2(*call_cli("study", str(study), "--study-dir", run_dir, "--quiet"), run_dir, needle)


@pytest.mark.parametrize(
    "model, needle",
    [
        ({"patch_size": 5}, "model.patch_size=5 is invalid: expected a divisor of model.img_size=32"),
        ({"patch_size": 64}, "model.patch_size=64 is invalid: expected a divisor of model.img_size=32"),
        ({"img_size": None, "patch_size": 15}, "divisor of vit_tiny_patch16_224's default image size (224)"),
    ],
)
def test_patches_that_do_not_tile_the_image_are_refused_by_validate_and_train(tmp_path, model, needle):
    """timm drops the border pixels of an image the patch size does not divide (and a patch larger
    than the image sees nothing): validate and train refuse it in one line."""
    path = write_config(tmp_path, {**BASE, "model": {**TINY_MODEL, **model}})
    assert_one_line_exit_2(*call_cli("validate", str(path)), needle)
    assert_one_line_exit_2(*call_cli("train", str(path), "--run-dir", str(tmp_path / "run")), needle)


def test_validate_refuses_data_classes_the_dataset_lacks(tmp_path):
    """train fails such a run once it reads the labels; validate says so before."""
    path = write_config(tmp_path, BASE)
    assert_one_line_exit_2(
        *call_cli("validate", str(path), "data.classes=[3,12]"),
        "data.classes=[3, 12] is invalid: expected labels of fashion_mnist, which has 10 classes",
    )


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.precision=fp16", "train.precision='fp16' is invalid on CPU"),
        ("train.device=cuda", "train.device='cuda' is invalid: no CUDA device is available here"),
        ("model.num_classes=1", "model.num_classes=1 is invalid"),
        ("train.batch_size=2147483647", "GiB are available"),  # the memory pre-flight
    ],
)
def test_validate_refuses_what_train_refuses(tmp_path, override, needle):
    """`peftlab validate` ("all config checks") said valid for these, and train then refused them."""
    import torch

    if "cuda" in override or "fp16" in override:
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    path = write_config(tmp_path, BASE)
    assert_one_line_exit_2(*call_cli("validate", str(path), override), needle)
    assert_one_line_exit_2(*call_cli("train", str(path), override, "--run-dir", str(tmp_path / "run")), needle)
