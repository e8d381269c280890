"""Shared test helpers (a plain module: several conftest.py files would shadow each other)."""

import contextlib
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The run configs under configs/ (configs/literature.yaml holds published numbers for the paper).
RUN_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if p.name != "literature.yaml")

# A 2-block ViT at 32 px: every invariant test runs on it in well under a second.
TINY_MODEL = {
    "name": "vit_tiny_patch16_224",
    "img_size": 32,
    "patch_size": 8,
    "depth": 2,
    "embed_dim": 64,
    "num_heads": 2,
}


def needs_fashion_mnist():
    """Skip a test that trains on real Fashion-MNIST where it is not installed (``make data`` installs it)."""
    import pytest

    from peftlab.data.sources import fashion_mnist_dir

    return pytest.mark.skipif(
        not (fashion_mnist_dir() / "train-labels-idx1-ubyte.gz").exists(),
        reason="Fashion-MNIST is not installed (make data installs it)",
    )


def write_fashion_sample(root: Path, train: int = 1000, test: int = 200) -> Path:
    """The installed Fashion-MNIST's first ``train`` training and ``test`` test images and labels, in IDX files of
    their own under ``root`` (``data.root``): real images for a run's small subsets, read in a fraction of what every
    run's read and hash of the whole set costs (0.4 CPU s a run)."""
    import gzip

    from peftlab.data.readers.binary import read_idx
    from peftlab.data.sources import fashion_mnist_dir

    root.mkdir(parents=True, exist_ok=True)
    for stem, count in (("train", train), ("t10k", test)):
        for kind, rank in (("images", 3), ("labels", 1)):
            name = f"{stem}-{kind}-idx{rank}-ubyte.gz"
            array = read_idx(fashion_mnist_dir() / name)[:count]
            header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
            (root / name).write_bytes(gzip.compress(header + array.astype("uint8").tobytes()))
    return root


def hf_vision_model(family: str, num_classes: int = 5):
    """A small random transformers classifier of a vision family (vit, deit, dinov2, clip): 2 layers,
    width 32, at 32 px (DINOv2: 28 px, patch 14), to ``save_pretrained`` as an HF model directory."""
    import transformers as tf

    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    if family == "clip":
        config = tf.CLIPConfig(
            vision_config={**sizes, "intermediate_size": 64, "image_size": 32, "patch_size": 16},
            text_config={**sizes, "intermediate_size": 64},
            num_labels=num_classes,
        )
        return tf.CLIPForImageClassification(config)
    if family == "dinov2":
        config = tf.Dinov2Config(**sizes, mlp_ratio=2, image_size=28, patch_size=14, num_labels=num_classes)
        return tf.Dinov2ForImageClassification(config)
    kind = {"vit": (tf.ViTConfig, tf.ViTForImageClassification), "deit": (tf.DeiTConfig, tf.DeiTForImageClassification)}
    config_cls, model_cls = kind[family]
    return model_cls(config_cls(**sizes, intermediate_size=64, image_size=32, patch_size=16, num_labels=num_classes))


def hf_text_model(family: str, num_classes: int = 3, causal: bool = False):
    """A small random transformers sequence classifier of a text family (llama, gpt2, bert, roberta): 2 layers,
    width 32, 2 heads, a vocabulary of 64 tokens, to ``save_pretrained`` as an HF model directory; with
    ``causal`` the decoder's causal LM (llama, gpt2)."""
    import transformers as tf

    sizes = {"vocab_size": 64, "num_labels": num_classes, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
    if causal:
        layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
        if family == "gpt2":
            return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, **sizes))
        return tf.LlamaForCausalLM(tf.LlamaConfig(**layers, num_key_value_heads=2, **sizes))
    if family == "gpt2":
        return tf.GPT2ForSequenceClassification(tf.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, **sizes))
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    if family == "llama":
        return tf.LlamaForSequenceClassification(tf.LlamaConfig(**layers, num_key_value_heads=2, **sizes))
    kind = {
        "bert": (tf.BertConfig, tf.BertForSequenceClassification),
        "roberta": (tf.RobertaConfig, tf.RobertaForSequenceClassification),
    }
    config_cls, model_cls = kind[family]
    return model_cls(config_cls(**layers, max_position_embeddings=66, **sizes))


TEXT_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3: bos, pad, eos as hf_text_model's configs say
TEXT_WORDS = tuple(f"w{i}" for i in range(60))  # ids 4..63: hf_text_model's vocabulary of 64


def text_tokenizer():
    """A word-level tokenizer over ``TEXT_WORDS`` (whitespace split), built offline with the tokenizers
    library and wrapped as transformers wraps a tokenizer.json: ``save_pretrained`` writes it into a model
    directory, where AutoTokenizer finds it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(TEXT_SPECIALS + TEXT_WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos, pad, eos, unk = TEXT_SPECIALS
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, pad_token=pad, eos_token=eos, unk_token=unk, model_max_length=64
    )


def hf_text_dir(path: Path, family: str, num_classes: int = 3, causal: bool = False) -> Path:
    """``hf_text_model(family)`` saved with ``text_tokenizer()`` at ``path``: an HF text model directory."""
    hf_text_model(family, num_classes, causal).save_pretrained(path)
    text_tokenizer().save_pretrained(path)
    return path


def write_text_task(root: Path, train: int = 48, test: int = 24, num_classes: int = 3, seed: int = 0) -> Path:
    """A learnable text task in ``data.name: text``'s layout (train.jsonl, test.jsonl under ``root``):
    each class has its own 20 words of ``TEXT_WORDS``; an example is 4 to 12 words, three in four of its
    class, the rest of any class."""
    import json

    import numpy as np

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    per_class = len(TEXT_WORDS) // num_classes
    for split, n in (("train", train), ("test", test)):
        lines = []
        for i in range(n):
            label = i % num_classes
            words = [
                TEXT_WORDS[label * per_class + rng.integers(per_class)]
                if rng.random() < 0.75
                else TEXT_WORDS[rng.integers(len(TEXT_WORDS))]
                for _ in range(rng.integers(4, 13))
            ]
            lines.append(json.dumps({"text": " ".join(words), "label": label}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def assert_resumes_bit_identically(cfg, tmp_path: Path, monkeypatch, crash_step: int = 4) -> None:
    """``cfg`` trained straight through, and trained again with a crash at ``crash_step`` then resumed by the
    same call: the same adapter bytes and the same metrics."""
    import pytest
    import torch
    from safetensors.torch import load_file

    import peftlab.training.recipe
    from peftlab.training.run import train

    reference = train(cfg, tmp_path / "straight", progress=False)
    original = peftlab.training.recipe.training_step

    class Crash(BaseException):
        pass

    def crash_at(*args, step, **kwargs):
        if step == crash_step:
            raise Crash()
        return original(*args, step=step, **kwargs)

    monkeypatch.setattr(peftlab.training.recipe, "training_step", crash_at)
    with pytest.raises(Crash):
        train(cfg, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(peftlab.training.recipe, "training_step", original)
    resumed = train(cfg, tmp_path / "resumed", progress=False)
    a = load_file(str(tmp_path / "straight" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["metrics"] == reference["metrics"]


def write_instruction_task(root: Path, train: int = 48, test: int = 16, seed: int = 0) -> Path:
    """An instruction task in Alpaca's JSONL format (``data.name: instructions``): the instruction ``w0``
    asks for the input's words again, ``w1`` for them reversed; inputs of 2 to 6 of ``TEXT_WORDS``."""
    import json

    import numpy as np

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("test", test)):
        lines = []
        for i in range(n):
            words = [TEXT_WORDS[4 + rng.integers(len(TEXT_WORDS) - 4)] for _ in range(rng.integers(2, 7))]
            output = words if i % 2 == 0 else words[::-1]
            row = {"instruction": TEXT_WORDS[i % 2], "input": " ".join(words), "output": " ".join(output)}
            lines.append(json.dumps(row))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def assert_peft_loads(run_dir: Path, adapter_dir: Path | None = None) -> None:
    """PEFT's from_pretrained on the plain timm (or transformers) base, with the run directory as the
    adapter, gives the outputs of peftlab's own model rebuilt from the run."""
    import torch
    from peft import PeftModel

    from peftlab.config.schema import load_config
    from peftlab.models.backbones import HFLogits, build_backbone, input_spec_for
    from peftlab.training.export import load_trained
    from peftlab.utils.seed import seed_everything

    cfg = load_config(run_dir / "config.yaml")
    seed_everything(cfg.seed)  # the recipe's random base (the config names no weights file)
    base = build_backbone(cfg.model, 10)
    hf = isinstance(base, HFLogits)  # PEFT wraps the transformers model itself
    loaded = PeftModel.from_pretrained(base.model if hf else base, adapter_dir or run_dir).eval()
    ours = load_trained(run_dir).model.eval()
    size = input_spec_for(cfg.model).img_size
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = loaded(pixel_values=x).logits if hf else loaded(x)
        torch.testing.assert_close(theirs, ours(x), rtol=1e-5, atol=1e-5)


def check_cell(tuner, base, images, out_dir: Path, identity: bool = True) -> None:
    """A cell of the family x method matrix: the adapted model starts as ``base`` (where the method
    defines a start), every tensor it trains gets a gradient from the first backward, and, with the
    adapters moved from their start, its merged model computes what it does and loads strictly into
    the plain architecture, and its PEFT-format files (where peftlab writes them) load with PEFT."""
    import copy

    import torch

    from peftlab.training.step import check_reached

    if identity:
        tuner.model.eval()
        with torch.no_grad():
            torch.testing.assert_close(tuner.model(images), base(images), rtol=0, atol=1e-6)
    tuner.model.train()
    tuner.model(images).sum().backward()
    check_reached(tuner)
    with torch.no_grad():  # adapters away from their start, so merged == unmerged is not trivial
        for param in tuner.trainable_parameters().values():
            param.add_(torch.randn_like(param), alpha=0.05)
    merged = tuner.merged_model()
    if merged is not None:
        tuner.model.eval()
        merged.eval()
        with torch.no_grad():
            torch.testing.assert_close(merged(images), tuner.model(images), rtol=1e-4, atol=1e-4)
        reloaded = copy.deepcopy(base)  # the merged weights in the plain architecture, strictly
        reloaded.load_state_dict(merged.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(reloaded(images), merged(images), rtol=0, atol=0)
    assert_peft_format_loads(tuner, base, images, out_dir)


def assert_peft_format_loads(tuner, base, images, out_dir: Path) -> None:
    """Where peftlab writes a tuner's adapter in PEFT's format, PEFT's own ``from_pretrained`` on a copy
    of the plain ``base`` (a transformers model inside peftlab's wrapper: that model) computes what the
    tuner's model does."""
    import copy

    import torch
    from peft import PeftModel

    from peftlab.models.backbones import HFLogits, HFTextLogits
    from peftlab.training.export import write_peft_adapter

    if not write_peft_adapter(tuner, out_dir):
        return
    plain = copy.deepcopy(base)
    hf = isinstance(plain, HFLogits)
    loaded = PeftModel.from_pretrained(plain.model if hf else plain, out_dir).eval()
    tuner.model.eval()
    with torch.no_grad():
        inputs = {"input_ids" if isinstance(plain, HFTextLogits) else "pixel_values": images}
        theirs = loaded(**inputs).logits if hf else loaded(images)
        torch.testing.assert_close(theirs, tuner.model(images), rtol=1e-5, atol=1e-5)


def write_tiny_run(path: Path, **train) -> Path:
    """A two-step LoRA run of the tiny ViT on a Fashion-MNIST subset, as a config file at ``path``."""
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "model": TINY_MODEL,
                "method": {"name": "lora", "r": 2},
                "data": {"name": "fashion_mnist", "train_subset": 64, "val_subset": 32, "test_subset": 32},
                "train": {"max_steps": 2, "batch_size": 16, **train},
            }
        )
    )
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None):
    """Run ``python -m peftlab.cli ARGS`` in a subprocess (in ``env``, else this process's environment);
    returns CompletedProcess."""
    import subprocess

    env = dict(os.environ if env is None else env, PYTHONPATH=str(REPO / "src"))
    return subprocess.run(
        [sys.executable, "-m", "peftlab.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=timeout,
    )


# the hand-written methods that wrap timm's blocks: an HF model (vision or text) is their one-line refusal
TIMM_ONLY = {
    "ssf",
    "difffit",
    "houlsby",
    "pfeiffer",
    "adaptformer",
    "convpass",
    "repadapter",
    "fact_tt",
    "fact_tk",
    "vpt",
}

# PEFT types' defaults sized for real widths, shrunk to the tiny models' 64 (ViT) and 32 (GPT-2): method.options
PEFT_TINY_OPTIONS = {
    "VBLORA": {"vector_length": 16},
    "C3A": {"block_size": 16},
    "MISS": {"r": 8},
    "ROAD": {"group_size": 16},
    "WAVEFT": {"n_frequency": 100},
}

# methods of HF text models only (PEFT's prompt learning), and the start of their one-line refusal elsewhere
TEXT_ONLY = {"prompt_tuning", "prefix_tuning"}
TEXT_ONLY_REFUSAL = r"supports HF text models \(model.source: hf-text"


# each target preset and the canonical layers it adapts on every family (the HF matrices' parametrization)
PRESET_PARTS = [
    ("standard", {"q", "v"}),
    ("extended", {"q", "k", "v", "proj"}),
    ("all-linear", {"q", "k", "v", "proj", "fc1", "fc2"}),
]


def run_python(script: str, *args: str, timeout: int = 600):
    """Run ``python -c SCRIPT ARGS`` with peftlab's source importable; returns CompletedProcess."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO / "src")),
        timeout=timeout,
    )


def train_with_hooks(tuner, steps: int, images, labels, lr: float = 1e-2, each_step=None):
    """The recipe's order of a tuner's hooks (regularization, after_backward, step, after_step) on
    one fixed batch; ``each_step(step, tuner, optimizer)`` after each step. Returns the optimizer."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.AdamW(tuner.param_groups(lr, 0.01, lr, 0.01))
    tuner.attach_optimizer(optimizer)
    tuner.model.train()
    for step in range(steps):
        loss = F.cross_entropy(tuner.model(images), labels) + tuner.regularization()
        loss.backward()
        tuner.after_backward(step, False)
        optimizer.step()
        tuner.after_step(step)
        if each_step:
            each_step(step + 1, tuner, optimizer)
        optimizer.zero_grad()
    return optimizer


def peak_rss_reset() -> None:
    """Start this process's peak resident memory (VmHWM) over from its current size."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    """This process's peak resident memory in bytes since the last ``peak_rss_reset``."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its children that have ended.

    Tests that bound how long something may take bound this, never the wall clock: other
    processes on a loaded machine stretch the wall clock several times over, not this. A
    hang that spins (a backtracking regex, a huge allocation) still runs past any budget."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def assert_searches_overlapped(tune_dir: Path, searches) -> None:
    """Each search of ``tune_dir`` wrote a trial file before every other search's last result: they ran side by
    side. One search after another writes the next search's first file (its trials' spec.json included) after
    the last result of the one before; the order of file times, not their differences, is checked."""
    started = {s: min(f.stat().st_mtime_ns for f in (tune_dir / s).glob("runs/*/*") if f.is_file()) for s in searches}
    ended = {s: max(f.stat().st_mtime_ns for f in (tune_dir / s).glob("runs/*/result.json")) for s in searches}
    assert all(started[a] < ended[b] for a in searches for b in searches if a != b), (started, ended)


def wait_until(condition, seconds: float = 300, every: float = 0.05) -> bool:
    """Poll ``condition()`` until it is true (True) or ``seconds`` of wall clock pass (False).
    The limit is generous: it ends only a test whose condition never comes, never a slow one."""
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` still lives."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


# the functools caches of the libraries' "is bitsandbytes installed" answers (``bitsandbytes_shown_again``)
BITSANDBYTES_ANSWERS = {
    "peft.import_utils": ("is_bnb_available", "is_bnb_4bit_available"),
    "transformers.utils.import_utils": ("is_bitsandbytes_available",),
}


def bitsandbytes_shown_again() -> None:
    """bitsandbytes importable again in this process where ``libraries.without_bitsandbytes`` hid it, and PEFT's and
    transformers' cached answers to "is it installed" asked again (conftest's ``bitsandbytes_importable_again``)."""
    if "bitsandbytes" not in sys.modules or sys.modules["bitsandbytes"] is not None:
        return
    del sys.modules["bitsandbytes"]
    for module, names in BITSANDBYTES_ANSWERS.items():
        for name in names if module in sys.modules else ():
            getattr(sys.modules[module], name).cache_clear()


def built_once(tmp_path_factory, name: str, build):
    """``build(folder)``'s result (a path in ``folder``), built once for every xdist worker of this pytest run: the
    first worker to ask builds it in the run's own temporary folder, which the workers share, under a file lock; a
    later one waits for it and reads what it built. For a session fixture that only reads what it gets (a test that
    changes it copies it first). Outside xdist, in this process's own folder. A build that failed leaves no mark,
    so the next worker to ask builds it again, from an empty folder."""
    import json
    import shutil

    from filelock import FileLock

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    folder = tmp_path_factory.getbasetemp().parent / f"built-once-{name}"  # pytest-N/: this run's, not another's
    with FileLock(f"{folder}.lock"):
        mark = folder.with_name(folder.name + ".json")
        if mark.is_file():
            return Path(json.loads(mark.read_text()))
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        made = build(folder)
        mark.write_text(json.dumps(str(made)))
        return made


def cli_in_process(*argv: str) -> tuple[int, str, float, int]:
    """(exit status, stderr, CPU seconds, peak memory growth in bytes) of ``peftlab ARGV`` run in this process."""
    import io

    from peftlab import cli

    stderr = io.StringIO()
    peak_rss_reset()
    before, start = peak_rss(), cpu_seconds()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(list(argv))
    return status, stderr.getvalue(), cpu_seconds() - start, peak_rss() - before


def command_in_process(*argv: str) -> tuple[int, str]:
    """(exit status, stderr) of ``peftlab ARGV`` in this process through ``cli.run_command`` (no atexit hooks), its
    SIGTERM handler restored after it."""
    import io
    import signal

    from peftlab import cli

    stderr, previous = io.StringIO(), signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            status = cli.run_command(list(argv))
    finally:
        signal.signal(signal.SIGTERM, previous)
    return status, stderr.getvalue()


def cli_here(*argv: str):
    """``run_cli``'s answer (a CompletedProcess: exit status, stdout, stderr) for ``peftlab ARGV`` run in this process
    through ``cli.run_command``, from the repository folder (argparse's exit is its status), its SIGTERM handler
    restored after it: for a test of what a command computes or refuses, where no process of its own is tested."""
    import io
    import signal
    import subprocess

    from peftlab import cli

    out, err, previous = io.StringIO(), io.StringIO(), signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.chdir(REPO), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.run_command(list(argv))
            except SystemExit as done:
                status = 0 if done.code is None else done.code
    finally:
        signal.signal(signal.SIGTERM, previous)
    return subprocess.CompletedProcess(["peftlab", *argv], status, out.getvalue(), err.getvalue())


def assert_one_line_refusal(status: int, stderr: str, *needles: str) -> None:
    """Exit status 2 and one line on stderr, ``peftlab: error: ...``, holding each of ``needles``."""
    assert status == 2 and stderr.startswith("peftlab: error: ") and stderr.count("\n") == 1, (status, stderr)
    assert all(needle in stderr for needle in needles), stderr


def header_images(paths, preprocessing: dict):
    """Image files made into a float batch by an export's ``preprocessing`` record alone (its header's,
    or an HF export's peftlab_preprocessing.json), with PIL and torch and no peftlab code: decode, convert
    to its channels, resize (its interpolation, antialiased), round to uint8, scale, subtract the mean and
    divide by the std."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    assert preprocessing["crop"] is None, preprocessing  # the oracle knows no crop
    batch = []
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert(preprocessing["channels"]), dtype=np.uint8)
        x = torch.from_numpy(pixels.copy()).reshape(pixels.shape[0], pixels.shape[1], -1).permute(2, 0, 1)
        x = F.interpolate(
            x[None].float(),
            size=tuple(preprocessing["resize"]),
            mode=preprocessing["interpolation"],
            antialias=preprocessing["antialias"],
            align_corners=False,
        )[0]
        if preprocessing["rounded_to_uint8"]:
            x = x.round().clamp(0, 255)
        batch.append(x)
    mean, std = (torch.tensor(preprocessing[k], dtype=torch.float32).view(-1, 1, 1) for k in ("mean", "std"))
    return (torch.stack(batch) * preprocessing["scale"] - mean) / std


def header_accuracy(model, paths, labels, preprocessing: dict, batch_size: int = 64) -> float:
    """Top-1 of ``model`` (a plain timm model, or a transformers classifier) on image files, preprocessed by
    ``header_images``."""
    import torch

    model.eval()
    hits = 0
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            x = header_images(paths[start : start + batch_size], preprocessing)
            out = model(x) if not hasattr(model, "config") else model(pixel_values=x).logits
            hits += int((out.argmax(-1) == torch.as_tensor(labels[start : start + batch_size])).sum())
    return hits / len(paths)


def meta_of(cfg):
    """The meta model ``peftlab params`` counts ``cfg`` on."""
    from peftlab.tuners.params import meta_backbone

    return meta_backbone(cfg.model, cfg.model.num_classes or 1000)


def applied_counts(cfg) -> dict:
    """``count_parameters``'s total, trainable and head the long way: the method applied to the meta model
    (PEFT's layers), for a method that ``count_parameters`` counts from its plan (its ``size`` hook)."""
    from peftlab.tuners.base import is_head_param
    from peftlab.tuners.params import meta_tuner

    tuner = meta_tuner(cfg.method, meta_of(cfg))
    head = sum(p.numel() for n, p in tuner.trainable_parameters().items() if is_head_param(n, tuner.head))
    return {**tuner.parameter_counts(), "head": head}


@contextlib.contextmanager
def figures_drawn_only(*drawn: str):
    """``write_figures_empty`` for as long as the context lasts, the figures named ``drawn`` drawn: a module fixture
    of a module whose tests read one figure's file, or whose report alone draws one figure's data."""
    import pytest

    with pytest.MonkeyPatch.context() as patch:
        write_figures_empty(patch, drawn)
        yield


def write_figures_empty(patch, drawn: tuple[str, ...] = ()) -> None:
    """``Figure.savefig`` writes an empty file where it would draw one (``patch``: a pytest MonkeyPatch): every figure
    a report or paper draws is still built as it builds it, and each file written where the command writes it,
    through the same checks; matplotlib's layout and drawing, most of a report's cost, are left out, the draw that
    measures a log axis' tick labels before saving (``ticks.thin_log_labels``) too. For tests that read a command's
    text, tables, exit status or stderr, never a figure (the ``unrendered_figures`` fixture, a module's
    ``FIGURES_DRAWN``). ``drawn``: the names of the figures a test does read (``importance_heatmap``), drawn and
    saved as ``save_figure`` saves them, their log axes' labels left unthinned."""
    from matplotlib.figure import Figure

    from peftlab.analysis.figures import style

    real = getattr(Figure.savefig, "drawing", Figure.savefig)  # inside another such patch: the one that draws

    def savefig(self, fname, **kwargs):
        name = Path(fname).name  # write_atomic's temporary name: .NAME.png.HEX.tmp
        if any(name.startswith(f".{kept}.") or name.startswith(f"{kept}.") for kept in drawn):
            return real(self, fname, **kwargs)
        Path(fname).write_bytes(b"")

    savefig.drawing = real
    patch.setattr(Figure, "savefig", savefig)
    patch.setattr(style, "thin_log_labels", lambda fig: None)


def extract_all(tar, where) -> None:
    """``tar.extractall(where)`` through tarfile's 'data' filter where this Python has it (3.11.4 and later; Debian
    12's 3.11.2 has none, and the suite's own archives are extracted as they are there)."""
    import tarfile

    if hasattr(tarfile, "data_filter"):
        tar.extractall(where, filter="data")
    else:
        tar.extractall(where)
