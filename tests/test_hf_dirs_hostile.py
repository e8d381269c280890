"""Hostile HF model directories and hub caches: code a directory ships is never run (with or without a
terminal, whatever stdin answers), a weights file that is no regular file or does not fit the model is one
line, and every file read from a hub cache is a regular file read with a bound."""

import contextlib
import io
import json
import os
import random
import resource
import shutil
import signal
import sys

import pytest
import yaml
from hubcache import COMMIT, lay_out_snapshot, timm_hub_files, use_cache
from testkit import REPO, TINY_MODEL, assert_one_line_refusal, cli_in_process, hf_text_dir, write_text_task

from peftlab.config.sections import ModelConfig
from peftlab.models.backbones import build_backbone
from peftlab.utils.errors import UserError

# a module that leaves a marker behind when imported: transformers imports it to run auto_map's classes
EVIL = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


def with_remote_code(source, path, marker, where: str = "config.json"):
    """A copy of the HF directory ``source`` at ``path`` whose ``where`` maps its classes to evil.py, as
    a model of its own architecture does."""
    shutil.copytree(source, path)
    config = json.loads((path / where).read_text()) if (path / where).exists() else {}
    config["auto_map"] = {
        "AutoConfig": "evil.EvilConfig",
        "AutoModelForImageClassification": "evil.EvilModel",
        "AutoModelForSequenceClassification": "evil.EvilModel",
        "AutoTokenizer": ["evil.EvilTokenizer", None],
    }
    # a model or tokenizer class transformers does not know: else it would use its own and ask nothing
    config["model_type" if where == "config.json" else "tokenizer_class"] = "EvilModel"
    (path / where).write_text(json.dumps(config))
    (path / "evil.py").write_text(EVIL.format(marker=str(marker)))
    return path


@pytest.fixture
def answers_yes(monkeypatch):
    """stdin answers "y" to every question, as `yes | peftlab ...` would."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 20))


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return hf_text_dir(tmp_path_factory.mktemp("hf-text") / "roberta", "roberta")


def run_yaml(tmp_path, model: dict, data: dict) -> str:
    config = {
        "model": model,
        "method": {"name": "lora", "r": 2},
        "data": data,
        "train": {"max_steps": 1, "batch_size": 8, "eval_batch_size": 8},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    return str(tmp_path / "run.yaml")


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json", "evil.py alone"])
@pytest.mark.parametrize("command", ["train", "validate", "params"])
def test_a_text_model_directory_with_its_own_code_is_refused_in_one_line_even_after_a_yes(
    text_dir, tmp_path, answers_yes, command, where
):
    marker = tmp_path / "marker"
    model = with_remote_code(text_dir, tmp_path / "model", marker, where.split()[0].replace("evil.py", "config.json"))
    if where == "evil.py alone":
        config = json.loads((model / "config.json").read_text())
        del config["auto_map"]
        (model / "config.json").write_text(json.dumps(config))
    data = {"name": "text", "root": str(write_text_task(tmp_path / "data", train=8, test=8)), "max_length": 16}
    config = run_yaml(tmp_path, {"source": "hf-text", "path": str(model)}, data)
    argv = {
        "train": ["train", config, "--run-dir", str(tmp_path / "run"), "--quiet"],
        "validate": ["validate", config],
        "params": ["params", str(model), "--method", "lora", "--r", "2"],
    }[command]
    status, stderr, _, _ = cli_in_process(*argv)
    assert_one_line_refusal(status, stderr, "ships its own Python code", "never runs a model's code")
    assert not marker.exists()


@pytest.mark.parametrize("command", ["train", "validate", "params"])
def test_an_image_model_directory_with_its_own_code_is_refused_in_one_line_even_after_a_yes(
    hf_dir, tmp_path, answers_yes, command
):
    marker = tmp_path / "marker"
    model = with_remote_code(hf_dir, tmp_path / "model", marker)
    config = run_yaml(tmp_path, {"source": "hf", "path": str(model)}, {"name": "fashion_mnist", "train_subset": 8})
    argv = {
        "train": ["train", config, "--run-dir", str(tmp_path / "run"), "--quiet"],
        "validate": ["validate", config],
        "params": ["params", str(model), "--method", "lora", "--r", "2"],
    }[command]
    status, stderr, _, _ = cli_in_process(*argv)
    assert_one_line_refusal(status, stderr, "ships its own Python code", "auto_map names 'evil.")
    assert not marker.exists()


def test_a_hub_snapshot_with_its_own_code_is_refused_with_a_terminal_on_stdin_answering_yes(hf_dir, tmp_path):
    """`peftlab params` with a pseudo-terminal as stdin (where transformers would ask and wait) and "y"
    typed into it: one line, no question, no code run."""
    import pty
    import subprocess

    marker = tmp_path / "marker"
    source = with_remote_code(hf_dir, tmp_path / "model", marker)
    cache = tmp_path / "hub"
    lay_out_snapshot(cache, "someorg/evil-vit", {p.name: p.read_bytes() for p in source.iterdir()})
    main, terminal = pty.openpty()
    os.write(main, b"y\ny\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "peftlab.cli", "params", "someorg/evil-vit", "--method", "lora", "--r", "2"],
            stdin=terminal,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    finally:
        os.close(terminal)
        os.close(main)
    assert_one_line_refusal(done.returncode, done.stderr, "ships its own Python code")
    assert "Do you wish" not in done.stdout + done.stderr
    assert not marker.exists()


def replace_weights(path, kind: str) -> None:
    """``path``/model.safetensors replaced by ``kind``: a FIFO, a folder, a broken link, a link to a device."""
    weights = path / "model.safetensors"
    weights.unlink()
    if kind == "fifo":
        os.mkfifo(weights)
    elif kind == "folder":
        weights.mkdir()
    else:
        weights.symlink_to({"broken link": path / "gone.safetensors", "device link": "/dev/zero"}[kind])


@pytest.mark.parametrize("kind", ["fifo", "folder", "broken link", "device link"])
@pytest.mark.parametrize("source", ["hf", "hf-text"])
def test_hf_weights_that_are_no_regular_file_are_one_line_not_a_random_base(hf_dir, text_dir, tmp_path, source, kind):
    model = tmp_path / "model"
    shutil.copytree(hf_dir if source == "hf" else text_dir, model)
    replace_weights(model, kind)
    with pytest.raises(UserError, match="model.safetensors (is|cannot)") as err:
        build_backbone(ModelConfig(source=source, path=str(model)), 3)
    assert "\n" not in str(err.value)


def damage_weights(path, damage: str) -> str:
    """One tensor of ``path``/model.safetensors renamed, dropped or transposed; its key."""
    from safetensors.torch import load_file, save_file

    state = load_file(path / "model.safetensors")
    key = next(k for k in state if k.endswith(("fc1.weight", "intermediate.dense.weight")))
    if damage == "renamed":
        state[key.replace("weight", "weights")] = state.pop(key)
    elif damage == "missing":
        del state[key]
    else:
        state[key] = state[key].t().contiguous()
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    return key.rpartition(".")[0]


@pytest.mark.parametrize("damage", ["renamed", "missing", "transposed"])
@pytest.mark.parametrize("source", ["hf", "hf-text"])
def test_hf_weights_that_load_only_in_part_are_one_line_naming_the_keys(hf_dir, text_dir, tmp_path, source, damage):
    """Only the classifier head may be new (here it is: 3 classes for a head of 5 or 3 saved)."""
    model = tmp_path / "model"
    shutil.copytree(hf_dir if source == "hf" else text_dir, model)
    module = damage_weights(model, damage)
    with pytest.raises(UserError, match="the weights do not fit the model of its config.json") as err:
        build_backbone(ModelConfig(source=source, path=str(model)), 3)
    assert "\n" not in str(err.value)
    assert {"renamed": "missing from the file", "missing": "missing from the file"}.get(damage, "another shape") in str(
        err.value
    )
    assert any(name in str(err.value) for name in (module.split(".")[-1], "fc1"))  # transformers 5 renames ViT's


class Hang(BaseException):  # past the library code that catches every Exception
    pass


@contextlib.contextmanager
def no_hang(seconds: int = 60):
    """Raise Hang where a read blocks (a FIFO) for ``seconds``: the test fails instead of waiting forever."""

    def alarm(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


HOSTILE = ["fifo", "folder", "device link", "broken link"]


def make_hostile(path, kind: str) -> None:
    """``path`` replaced by ``kind`` (a link to /dev/zero would be read until memory ran out)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to({"device link": "/dev/zero", "broken link": str(path) + ".gone"}[kind])


def parquet(rows: int, labels=None) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    columns = {
        "sentence1": [f"premise {i}" for i in range(rows)],
        "sentence2": [f"hypothesis {i}" for i in range(rows)],
        "label": pa.array(labels or [i % 2 for i in range(rows)], type=pa.int64()),
    }
    pq.write_table(pa.table(columns), out)
    return out.getvalue()


GLUE_FILES = {"rte/train-00000-of-00001.parquet": parquet(20), "rte/validation-00000-of-00001.parquet": parquet(6)}


def read_hub_rte():
    from peftlab.data.text.glue import read_glue

    return read_glue("rte", None, 0.2, 0, False)


@pytest.fixture(scope="module")
def text_files(text_dir):
    return {p.name: p.read_bytes() for p in text_dir.iterdir()}


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize(
    "entry",
    [
        "refs/main",
        "trees/COMMIT.json",
        "snapshot tokenizer.json",
        "snapshot model.safetensors",
        "glue refs/main",
        "glue parquet",
    ],
)
def test_a_hub_cache_entry_that_is_no_regular_file_is_one_line_not_a_hang(
    text_files, tmp_path, monkeypatch, entry, kind
):
    """What huggingface_hub and peftlab read of a hub cache: the ref, the tree listing, a snapshot's files,
    the hub's GLUE parquet; each of them a FIFO, a folder, a link to /dev/zero, a broken link."""
    cache = tmp_path / "hub"
    glue = entry.startswith("glue")
    if glue:
        from peftlab.data.text.glue import HUB_REPO

        snapshot = lay_out_snapshot(cache, HUB_REPO, GLUE_FILES, repo_type="dataset")
    else:
        snapshot = lay_out_snapshot(cache, "someorg/tiny", text_files)
    use_cache(monkeypatch, cache)
    name = entry.removeprefix("glue ")
    target = {
        "refs/main": snapshot.parents[1] / "refs" / "main",
        "trees/COMMIT.json": snapshot.parents[1] / "trees" / f"{COMMIT}.json",
        "snapshot tokenizer.json": snapshot / "tokenizer.json",
        "snapshot model.safetensors": snapshot / "model.safetensors",
        "parquet": snapshot / "rte" / "train-00000-of-00001.parquet",
    }[name]
    make_hostile(target, kind)
    with no_hang(), pytest.raises(UserError) as err:
        if glue:
            read_hub_rte()
        else:
            build_backbone(ModelConfig(source="hf-text", name="someorg/tiny", pretrained="hub"), 3)
    assert "\n" not in str(err.value) and target.name in str(err.value), str(err.value)


def damaged(rng: random.Random, data: bytes) -> bytes:
    """``data`` with bytes replaced, inserted or cut (as tests/data/test_fuzz_files.py damages files)."""
    data = bytearray(data)
    for _ in range(rng.choice([1, 4, 32])):
        if not data:
            break
        where = rng.randrange(len(data))
        if rng.random() < 0.7:
            data[where] = rng.randrange(256)
        else:
            del data[where : where + rng.randrange(1, 16)]
    return bytes(data)


@pytest.mark.parametrize("entry", ["refs/main", "config.json", "tokenizer_config.json", "glue parquet"])
def test_damaged_hub_cache_files_are_one_line_or_read(text_files, tmp_path, monkeypatch, entry):
    """Fuzzed with a fixed seed and a bounded count: each outcome is a result or one UserError line, never
    another exception, a hang or a memory blow-up."""
    glue = entry == "glue parquet"
    cache = tmp_path / "hub"
    if glue:
        from peftlab.data.text.glue import HUB_REPO

        snapshot = lay_out_snapshot(cache, HUB_REPO, GLUE_FILES, repo_type="dataset")
        target = snapshot / "rte" / "train-00000-of-00001.parquet"
    else:
        snapshot = lay_out_snapshot(cache, "someorg/tiny", text_files)
        target = snapshot.parents[1] / entry if entry == "refs/main" else snapshot / entry
    use_cache(monkeypatch, cache)
    original = target.read_bytes()
    rng = random.Random(f"2026-11-25 {entry}")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = {"read": 0, "refused": 0}
    for _ in range(12):
        target.unlink()  # the snapshot's link to its blob: the damaged bytes go in its place
        target.write_bytes(damaged(rng, original))
        with no_hang(30):
            try:
                if glue:
                    read_hub_rte()
                else:
                    build_backbone(
                        ModelConfig(source="hf-text", name="someorg/tiny", pretrained="hub"), 3, weights=False
                    )
                outcomes["read"] += 1
            except UserError as err:
                assert "\n" not in str(err) and len(str(err)) < 1500, str(err)
                outcomes["refused"] += 1
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 512 * 1024, f"peak memory grew by {grown_kib / 1024:.0f} MiB"
    assert outcomes["refused"] >= 1, outcomes


@pytest.fixture(scope="module")
def timm_files():
    """TINY_MODEL's files as timm publishes them on the hub (its repository: timm's hf_hub_id for its name)."""
    return timm_hub_files(TINY_MODEL["name"], **{k: v for k, v in TINY_MODEL.items() if k != "name"})[0]


@pytest.mark.parametrize("kind", ["fifo", "device link"])
@pytest.mark.parametrize("entry", ["refs/main", "model.safetensors"])
def test_timm_hub_weights_whose_cache_entry_is_no_regular_file_are_one_line(
    timm_files, tmp_path, monkeypatch, entry, kind
):
    snapshot = lay_out_snapshot(tmp_path / "hub", "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", timm_files)
    use_cache(monkeypatch, tmp_path / "hub")
    target = snapshot.parents[1] / "refs" / "main" if entry == "refs/main" else snapshot / entry
    make_hostile(target, kind)
    with no_hang(), pytest.raises(UserError) as err:
        build_backbone(ModelConfig(**TINY_MODEL, pretrained="hub"), 10)
    assert "\n" not in str(err.value) and target.name in str(err.value), str(err.value)


@pytest.mark.parametrize("saved", ["ViTModel", "DeiTForImageClassificationWithTeacher"])
def test_a_checkpoint_of_another_head_loads_every_tensor_of_the_model(tmp_path, saved):
    """A headless ViT with its pooler (left out), a distilled DeiT with its two heads (new, as the one head of
    a classifier is): every other tensor of the model is loaded."""
    import torch
    import transformers as tf

    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    config = (tf.ViTConfig if saved == "ViTModel" else tf.DeiTConfig)(**sizes, image_size=32, patch_size=16)
    torch.manual_seed(0)
    getattr(tf, saved)(config).save_pretrained(tmp_path / "model")
    model = build_backbone(ModelConfig(source="hf", path=str(tmp_path / "model")), 3)
    own = {k: v for k, v in model.model.state_dict().items() if not k.split(".")[0].endswith("classifier")}
    saved_state = getattr(tf, saved).from_pretrained(tmp_path / "model").state_dict()
    saved_state = {k.removeprefix("vit.").removeprefix("deit."): v for k, v in saved_state.items()}
    assert own and all(torch.equal(v, saved_state[k.split(".", 1)[1]]) for k, v in own.items())
