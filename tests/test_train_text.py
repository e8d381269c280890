"""Training HF text models (model.source hf-text) on text data (data.name text): the recipe end to end on
a small random model of each family with its own tokenizer (testkit.hf_text_dir), resume, reload, errors."""

import json

import pytest
import torch
from testkit import (
    TIMM_ONLY,
    assert_resumes_bit_identically,
    cli_in_process,
    hf_text_dir,
    text_tokenizer,
    write_text_task,
)

from peftlab.config.schema import load_config, to_dict
from peftlab.training.run import train
from peftlab.tuners import TUNERS
from peftlab.utils.errors import UserError

FAMILIES = ("gpt2", "llama", "bert", "roberta")


@pytest.fixture(scope="module")
def text_dirs(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("text-models")
    return {family: hf_text_dir(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_text_task(tmp_path_factory.mktemp("text-task"))


def text_config(model_dir, task, method=None, data=None, **train):
    return load_config(
        overrides={
            "name": "text",
            "model": {"source": "hf-text", "path": str(model_dir)},
            "method": method or {"name": "lora", "r": 4},
            "data": {"name": "text", "root": str(task), "val_fraction": 0.25, "max_length": 16, **(data or {})},
            "train": {"max_steps": 6, "batch_size": 8, "eval_every": 3, "lr": 3e-3, **train},
        }
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_a_lora_run_on_each_text_family_completes_and_reloads(text_dirs, task, family, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from peftlab.training.export import load_trained

    run_dir = tmp_path / "run"
    result = train(text_config(text_dirs[family], task), run_dir, progress=False)
    assert result["status"] == "completed", result["error"]
    assert 0.0 <= result["metrics"]["test_top1"] <= 1.0
    assert result["provenance"]["data"]["split_sizes"] == {"train": 36, "val": 12, "test": 24}
    assert result["protocol"]["resolution"] is None
    assert "at most 16 per example" in result["protocol"]["tokens"]
    assert result["params"]["trainable"] < result["params"]["total"]
    assert result["merge"]["ok"], result["merge"]
    # three classes: each evaluation on val logs the Matthews correlation, no F1 (a two-class score), and
    # result.json holds the final weights' (a study tunes on them: tune.metric)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] in ("eval", "epoch")]
    assert evals and all(-1 <= r["val_matthews"] <= 1 for r in evals)
    assert not any("val_f1" in r or "val_perplexity" in r for r in evals)
    assert result["metrics"]["val_f1"] is None and -1 <= result["metrics"]["val_matthews"] <= 1
    # the run directory's adapter rebuilds the trained model, and PEFT loads it on the plain transformers
    # model (GPT-2's c_attn a Conv1D there): the same logits
    ours = load_trained(run_dir).model.eval()
    base = AutoModelForSequenceClassification.from_pretrained(text_dirs[family], num_labels=3, use_safetensors=True)
    theirs = PeftModel.from_pretrained(base, run_dir).eval()
    ids = torch.tensor([[4, 5, 6, 7, 8, 1, 1], [9, 10, 11, 12, 13, 14, 15]])
    mask = (ids != 1).long()
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(ours(torch.stack([ids, mask], dim=1)), expected, rtol=1e-5, atol=1e-5)


def test_padding_a_batch_to_its_longest_example_gives_the_logits_of_padding_to_max_length(text_dirs, task):
    from peftlab.data.text.tokens import build_text_data
    from peftlab.models.backbones import build_backbone, pad_token
    from peftlab.models.hf_config import check_hf_config, load_tokenizer

    for family in FAMILIES:
        cfg = text_config(text_dirs[family], task, data={"max_length": 32})
        config = check_hf_config(cfg.model.path)
        bundle = build_text_data(cfg.data, load_tokenizer(cfg.model.path, pad_token(config)), config)
        model = build_backbone(cfg.model, 3).eval()
        trimmed, labels = bundle.test.load_batch(torch.arange(8))
        full = bundle.test.tokens[:8]
        assert trimmed.shape[-1] == int(full[:, 1].sum(1).max()) < 32
        with torch.no_grad():
            torch.testing.assert_close(model(trimmed), model(full), rtol=1e-5, atol=1e-5, msg=family)
        assert torch.equal(labels, torch.as_tensor([i % 3 for i in range(8)]))


def test_a_text_run_resumed_after_a_crash_is_bit_identical(text_dirs, task, tmp_path, monkeypatch):
    cfg = text_config(text_dirs["gpt2"], task, method={"name": "lora", "r": 4, "lora_dropout": 0.1})
    assert_resumes_bit_identically(cfg, tmp_path, monkeypatch)


def test_peftlab_train_runs_a_tiny_text_run_from_the_command_line(text_dirs, task, tmp_path):
    import yaml

    path = tmp_path / "text.yaml"
    cfg = text_config(text_dirs["bert"], task)
    path.write_text(yaml.safe_dump({"model": {"source": "hf-text", "path": cfg.model.path}, "data": {"name": "text"}}))
    argv = ["train", str(path), f"data.root={task}", "data.max_length=16", "train.max_steps=2", "train.batch_size=8"]
    status, stderr, _, _ = cli_in_process(*argv, "--run-dir", str(tmp_path / "out"), "--quiet")
    assert status == 0, stderr
    assert json.loads((tmp_path / "out" / "result.json").read_text())["status"] == "completed"


def test_a_model_directory_without_a_tokenizer_is_one_line(text_dirs, task, tmp_path):
    from testkit import hf_text_model

    hf_text_model("bert").save_pretrained(tmp_path / "bare")
    with pytest.raises(UserError, match="holds no tokenizer") as caught:
        train(text_config(tmp_path / "bare", task), tmp_path / "run", progress=False)
    assert "\n" not in str(caught.value)


def test_more_tokens_than_the_model_has_positions_is_one_line(text_dirs, task, tmp_path):
    with pytest.raises(UserError, match=r"data.max_length=100 is more than the model's 64 positions") as caught:
        train(text_config(text_dirs["gpt2"], task, data={"max_length": 100}), tmp_path / "run", progress=False)
    assert "\n" not in str(caught.value)


def test_an_example_longer_than_max_length_without_truncation_is_one_line(text_dirs, task, tmp_path):
    cfg = text_config(text_dirs["bert"], task, data={"max_length": 6, "truncation": False})
    with pytest.raises(UserError, match=r"data.truncation=false: train example \d+ has \d+ tokens") as caught:
        train(cfg, tmp_path / "run", progress=False)
    assert "\n" not in str(caught.value)


def test_cut_examples_are_counted_in_the_data_notes(text_dirs, task, tmp_path):
    cfg = text_config(text_dirs["bert"], task, data={"max_length": 6}, max_steps=1)
    result = train(cfg, tmp_path / "run", progress=False)
    notes = result["provenance"]["data"]["notes"]
    assert any(note.startswith("train: ") and "cut to data.max_length=6 tokens" in note for note in notes), notes


def test_a_tokenizer_that_pads_with_another_id_than_the_model_is_one_line(task, tmp_path):
    from testkit import hf_text_model

    model = hf_text_model("gpt2")
    model.config.pad_token_id = 2  # the model pads with </s>, its tokenizer with <pad> (1)
    model.save_pretrained(tmp_path / "model")
    text_tokenizer().save_pretrained(tmp_path / "model")
    with pytest.raises(UserError, match="the tokenizer pads with token 1 and the model with 2"):
        train(text_config(tmp_path / "model", task), tmp_path / "run", progress=False)


@pytest.mark.parametrize(
    "family, joined",
    [("roberta", "the tokenizer's pair template A B"), ("gpt2", "the tokenizer's end-of-sequence token </s>")],
)
def test_a_glue_task_in_its_release_layout_trains_with_dev_as_the_test_split(text_dirs, tmp_path, family, joined):
    """GLUE's RTE as its download script writes it (RTE/train.tsv, dev.tsv; sentence pairs, string labels):
    dev.tsv is the test split (GLUE's test labels are hidden), validation is carved from train. The record says
    how each pair was joined: by the encoder's tokenizer (the test tokenizer has no template), by a decoder's
    end-of-sequence token."""
    import numpy as np
    from testkit import TEXT_WORDS

    rng = np.random.default_rng(0)
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    for split, n in (("train", 40), ("dev", 16)):
        rows = ["index\tsentence1\tsentence2\tlabel"]
        for i in range(n):
            first, second = (" ".join(rng.choice(TEXT_WORDS, 5)) for _ in range(2))
            rows.append(f"{i}\t{first}\t{second}\t{('entailment', 'not_entailment')[i % 2]}")
        (tmp_path / "glue" / "RTE" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    cfg = load_config(
        overrides={
            "name": "rte",
            "model": {"source": "hf-text", "path": str(text_dirs[family])},
            "method": {"name": "lora", "r": 4},
            "data": {"name": "glue/rte", "root": str(tmp_path / "glue"), "max_length": 16},
            "train": {"max_steps": 2, "batch_size": 8},
        }
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    data = result["provenance"]["data"]
    assert data["split_sizes"] == {"train": 36, "val": 4, "test": 16}
    assert 0 <= result["metrics"]["val_f1"] <= 1 and 0 <= result["metrics"]["test_f1"] <= 1  # two classes: MRPC's F1
    assert data["class_names"] == ["entailment", "not_entailment"]
    assert "dev.tsv" in data["split_sources"]["test"]
    assert data["pair_join"] == result["protocol"]["pair_join"] == joined


@pytest.mark.parametrize("method", ["dora", "adalora"])
def test_gpt2_adapters_of_the_lora_family_load_in_peft_on_the_plain_conv1d_model(text_dirs, task, method, tmp_path):
    import warnings

    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from peftlab.training.export import load_trained

    options = {"dora": {"r": 4}, "adalora": {"init_r": 6, "target_r": 3}}[method]
    run_dir = tmp_path / "run"
    result = train(text_config(text_dirs["gpt2"], task, method={"name": method, **options}), run_dir, progress=False)
    assert result["status"] == "completed", result["error"]
    config = json.loads((run_dir / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True  # transformers' GPT-2 keeps (in, out) weights in Conv1D
    base = AutoModelForSequenceClassification.from_pretrained(text_dirs["gpt2"], num_labels=3, use_safetensors=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="fan_in_fan_out")
        theirs = PeftModel.from_pretrained(base, run_dir).eval()
    ids = torch.tensor([[4, 5, 6, 7, 8, 1, 1], [9, 10, 11, 12, 13, 14, 15]])
    mask = (ids != 1).long()
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).logits
        got = load_trained(run_dir).model.eval()(torch.stack([ids, mask], dim=1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


HAND_WRITTEN = TIMM_ONLY  # timm ViTs only (testkit)
OPTIONS = {"adalora": {"init_r": 6, "target_r": 3}, "vera": {"r": 16}, "qalora": {"r": 4}}


@pytest.mark.parametrize("method", [m for m in TUNERS if m not in HAND_WRITTEN] + ["qlora-nf4"])
@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_every_method_that_applies_to_text_trains_through_the_recipe(text_dirs, task, family, method, tmp_path):
    quant = {"mode": "nf4"} if method == "qlora-nf4" else {}
    name = "lora" if method == "qlora-nf4" else method
    sized = "r" in TUNERS[name].config_cls.__dataclass_fields__ and name != "oft"  # OFT: r x block size = width
    overrides = {"name": name, **({"r": 4} if sized else {})}
    cfg = text_config(text_dirs[family], task, method={**overrides, **OPTIONS.get(name, {})}, max_steps=2)
    if quant:
        cfg = load_config(overrides={**to_dict(cfg), "quant": quant})
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    assert result["metrics"]["test_top1"] is not None
    merge = result["merge"]
    assert merge is None or merge["ok"], merge


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_peftlab_export_merged_writes_a_directory_transformers_loads_as_itself(text_dirs, task, family, tmp_path):
    """GPT-2's merged c_attn, c_proj and c_fc go back to transformers' Conv1D layout ((in, out) weights)."""
    from transformers import AutoModelForSequenceClassification

    from peftlab.training.export import export_merged, load_trained

    run_dir = tmp_path / "run"
    cfg = text_config(text_dirs[family], task, method={"name": "lora", "r": 4, "target_modules": "all-linear"})
    assert train(cfg, run_dir, progress=False)["status"] == "completed"
    out = export_merged(run_dir, tmp_path / "merged")
    plain = AutoModelForSequenceClassification.from_pretrained(out, use_safetensors=True).eval()
    if family == "gpt2":
        assert type(plain.transformer.h[0].attn.c_attn).__name__ == "Conv1D"
    ids = torch.tensor([[4, 5, 6, 7, 8, 1, 1], [9, 10, 11, 12, 13, 14, 15]])
    mask = (ids != 1).long()
    with torch.no_grad():
        expected = load_trained(run_dir).model.eval()(torch.stack([ids, mask], dim=1))
        torch.testing.assert_close(plain(input_ids=ids, attention_mask=mask).logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_learning_runs_export_what_peft_loads_on_the_plain_model(text_dirs, task, family, method, tmp_path):
    """The run directory's PEFT files on the plain transformers model give peftlab's logits: on an unpadded
    batch always; on a padded one too, but for prompt tuning on a decoder, where PEFT's model classifies at
    the last position, a padding token (peftlab's at the last real token: tuners/prompt_learning.py)."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from peftlab.training.export import load_trained

    run_dir = tmp_path / "run"
    options = {"name": method, "num_virtual_tokens": 4}
    result = train(text_config(text_dirs[family], task, method=options, max_steps=2), run_dir, progress=False)
    assert result["status"] == "completed", result["error"]
    assert result["merge"] is None
    assert result["params"]["trainable"] < result["params"]["total"]
    ours = load_trained(run_dir).model.eval()
    base = AutoModelForSequenceClassification.from_pretrained(text_dirs[family], num_labels=3, use_safetensors=True)
    theirs = PeftModel.from_pretrained(base, run_dir).eval()
    ids = torch.tensor([[4, 5, 6, 7, 8, 1, 1], [9, 10, 11, 12, 13, 14, 15]])
    mask = (ids != 1).long()
    rows = [1] if method == "prompt_tuning" and family in ("gpt2", "llama") else [0, 1]
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).logits
        got = ours(torch.stack([ids, mask], dim=1))
        torch.testing.assert_close(got[rows], expected[rows], rtol=1e-5, atol=1e-5)
        unpadded = ids[1:]
        torch.testing.assert_close(ours(unpadded), theirs(input_ids=unpadded).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_a_prompt_learning_run_exports_with_peft_and_refuses_to_merge_in_one_line(text_dirs, task, method, tmp_path):
    """``export --merged DIR`` names the method and ``--peft DIR`` and writes nothing (virtual tokens fold
    into no weight); ``export --peft DIR`` writes what ``PeftModel.from_pretrained`` loads on the plain
    model (GPT-2's Conv1D) to peftlab's logits."""
    from peft import PeftModel
    from testkit import assert_one_line_refusal
    from transformers import AutoModelForSequenceClassification

    from peftlab.training.export import load_trained

    run_dir, peft_dir = tmp_path / "run", tmp_path / "peft"
    options = {"name": method, "num_virtual_tokens": 4}
    result = train(text_config(text_dirs["gpt2"], task, method=options, max_steps=2), run_dir, progress=False)
    assert result["status"] == "completed", result["error"]
    status, stderr, _, _ = cli_in_process("export", str(run_dir), "--merged", str(tmp_path / "merged"))
    assert_one_line_refusal(status, stderr, f"method {method!r}", "virtual tokens", "use --peft DIR instead")
    assert not (tmp_path / "merged").exists()
    assert cli_in_process("export", str(run_dir), "--peft", str(peft_dir))[0] == 0
    base = AutoModelForSequenceClassification.from_pretrained(text_dirs["gpt2"], num_labels=3, use_safetensors=True)
    theirs = PeftModel.from_pretrained(base, peft_dir).eval()
    ids = torch.tensor([[9, 10, 11, 12, 13, 14, 15], [4, 5, 6, 7, 8, 20, 30]])  # no padding: see the test above
    with torch.no_grad():
        torch.testing.assert_close(load_trained(run_dir).model.eval()(ids), theirs(input_ids=ids).logits)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_a_prompt_learning_run_resumed_after_a_crash_is_bit_identical(text_dirs, task, tmp_path, monkeypatch, method):
    cfg = text_config(text_dirs["llama"], task, method={"name": method, "num_virtual_tokens": 4})
    assert_resumes_bit_identically(cfg, tmp_path, monkeypatch)


def test_virtual_tokens_and_text_beyond_the_model_positions_are_one_line(text_dirs, task, tmp_path):
    """GPT-2's 64 positions: 50 virtual tokens leave 14 for data.max_length=16."""
    cfg = text_config(text_dirs["gpt2"], task, method={"name": "prompt_tuning", "num_virtual_tokens": 50})
    expected = (
        r"data.max_length=16 is more than the model's 64 positions, less method.num_virtual_tokens=50: expected <= 14"
    )
    with pytest.raises(UserError, match=expected) as caught:
        train(cfg, tmp_path / "run", progress=False)
    assert "\n" not in str(caught.value)
