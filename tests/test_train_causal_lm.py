"""Causal LMs (model.source hf-text, model.task causal-lm) on instruction data in Alpaca's format: the loss on
the response tokens only, perplexity, frozen LM head, PEFT export, resume; small random Llama and GPT-2."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from testkit import (
    TIMM_ONLY,
    assert_one_line_refusal,
    assert_resumes_bit_identically,
    cli_in_process,
    hf_text_dir,
    write_instruction_task,
    write_text_task,
)

from peftlab.config.schema import load_config, to_dict
from peftlab.training.run import train
from peftlab.tuners import TUNERS
from peftlab.utils.errors import UserError

FAMILIES = ("gpt2", "llama")
PROMPT_LEARNING = {"prompt_tuning", "prefix_tuning"}  # their virtual tokens take positions: tested on their own


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("lm-models")
    return {family: hf_text_dir(root / family, family, causal=True) for family in FAMILIES}


@pytest.fixture(scope="module")
def instructions(tmp_path_factory):
    return write_instruction_task(tmp_path_factory.mktemp("instructions"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_text_task(tmp_path_factory.mktemp("corpus"))  # its labels are not read


def lm_config(model_dir, root, method=None, data=None, **train):
    return load_config(
        overrides={
            "name": "lm",
            "model": {"source": "hf-text", "path": str(model_dir), "task": "causal-lm"},
            "method": method or {"name": "lora", "r": 4},
            "data": {"name": "instructions", "root": str(root), "val_fraction": 0.25, "max_length": 64, **(data or {})},
            "train": {"max_steps": 6, "batch_size": 8, "eval_every": 3, "lr": 3e-3, **train},
        }
    )


def lm_splits(cfg):
    from peftlab.data.text.tokens import build_text_data
    from peftlab.models.backbones import pad_token
    from peftlab.models.hf_config import check_hf_config, load_tokenizer

    config = check_hf_config(cfg.model.path)
    tokenizer = load_tokenizer(cfg.model.path, pad_token(config))
    return tokenizer, build_text_data(cfg.data, tokenizer, config, language_model=True)


def test_the_targets_are_the_response_and_its_end_and_nothing_of_the_prompt(lm_dirs, instructions):
    from peftlab.data.text.tokens import ALPACA_PROMPT, IGNORED

    tokenizer, bundle = lm_splits(lm_config(lm_dirs["gpt2"], instructions))
    row = json.loads((instructions / "test.jsonl").read_text().splitlines()[0])
    prompt = ALPACA_PROMPT.format(instruction=row["instruction"], input=row["input"])
    prompt_ids = [0] + tokenizer(prompt, add_special_tokens=False)["input_ids"]  # <s> first
    response_ids = tokenizer(row["output"], add_special_tokens=False)["input_ids"] + [2]  # </s> last
    tokens, targets = bundle.test.tokens[0], bundle.test.labels[0]
    length = len(prompt_ids) + len(response_ids)
    assert tokens[0, :length].tolist() == prompt_ids + response_ids
    assert tokens[1].tolist() == [1] * length + [0] * (64 - length)
    assert (targets[: len(prompt_ids) - 1] == IGNORED).all()  # no loss on the prompt
    assert targets[len(prompt_ids) - 1 : length - 1].tolist() == response_ids  # position t predicts t + 1
    assert (targets[length - 1 :] == IGNORED).all()  # nor on the padding


def test_perplexity_is_the_exponential_of_transformers_own_loss_per_response_token(lm_dirs, instructions):
    from peftlab.data.text.tokens import IGNORED
    from peftlab.models.backbones import build_backbone
    from peftlab.training.evaluate import evaluate

    cfg = lm_config(lm_dirs["llama"], instructions)
    _, bundle = lm_splits(cfg)
    model = build_backbone(cfg.model, 0).eval()
    got = evaluate(model, bundle.test, 5, torch.device("cpu"), "fp32", "test")  # batches of 5: per-token sums
    tokens, targets = bundle.test.tokens, bundle.test.labels
    labels = torch.cat([torch.full((len(targets), 1), IGNORED), targets], dim=1)  # transformers shifts itself
    with torch.no_grad():
        out = model.model(input_ids=tokens[:, 0], attention_mask=tokens[:, 1], labels=labels)
    assert got["perplexity"] == pytest.approx(math.exp(float(out.loss)), rel=1e-5)
    assert got["f1"] is None and got["matthews"] is None
    # each sequence's summed NLL and scored tokens (a tuning trial keeps them, val_losses.npy): their ratio is the
    # loss, up to float32's rounding of the run's own sum (cross_entropy's, the bits every earlier record holds)
    nll, scored = got["losses"]
    assert scored.tolist() == (targets != IGNORED).sum(1).tolist() and nll.dtype == torch.float64
    assert math.exp(nll.sum() / scored.sum()) == pytest.approx(got["perplexity"], rel=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_lora_run_on_a_causal_lm_trains_the_adapters_alone_and_exports_for_peft(
    lm_dirs, instructions, family, tmp_path, monkeypatch
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from peftlab.training import outcome
    from peftlab.training.export import load_trained

    passes = {}  # the seconds of each pass after training, by its name
    inner = outcome.evaluate
    monkeypatch.setattr(outcome, "evaluate", lambda *a, **k: passes.setdefault(a[5], inner(*a, **k)))
    run_dir = tmp_path / "run"
    result = train(lm_config(lm_dirs[family], instructions, max_steps=12), run_dir, progress=False)
    assert result["status"] == "completed", result["error"]
    # the test passes' time: the test split's and the base's alone (an fp32 merge is checked, not tested merged)
    assert set(passes) == {"test", "base test"}
    tested = sum(passes[name]["seconds"] for name in ("test", "base test"))
    assert result["timing"]["test_seconds"] == pytest.approx(tested) and passes["base test"]["seconds"] > 0
    metrics = result["metrics"]
    assert 1.0 < metrics["test_perplexity"] < 64 * 4 and 1.0 < metrics["val_perplexity"]
    # the base row (issue 89): the base alone on the test tokens, recomputed with transformers' own loss
    from peftlab.data.text.tokens import IGNORED

    _, bundle = lm_splits(lm_config(lm_dirs[family], instructions))
    plain = AutoModelForCausalLM.from_pretrained(lm_dirs[family], use_safetensors=True).eval()
    targets = bundle.test.labels
    with torch.no_grad():  # transformers shifts the labels itself
        shifted = torch.cat([torch.full((len(targets), 1), IGNORED), targets], dim=1)
        loss = plain(input_ids=bundle.test.tokens[:, 0], attention_mask=bundle.test.tokens[:, 1], labels=shifted).loss
    assert metrics["base_test_perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-5)
    assert metrics["test_perplexity"] != metrics["base_test_perplexity"]  # trained: not the base
    # the preflight counted that pass: the float base beside the adapted model and its AdamW state
    from peftlab.training.metrics import weights_bytes

    estimate = result["memory"]["estimate"]
    assert estimate["base_pass_bytes"] == weights_bytes(plain) > 0
    assert estimate["base_pass_beyond_weights_bytes"] == weights_bytes(plain) + estimate["optimizer_state_bytes"]
    assert metrics["val_f1"] is None and metrics["val_matthews"] is None  # a classifier's
    # each evaluation on val logs its perplexity, which a halving search's pruner compares (tune.metric)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] in ("eval", "epoch")]
    assert evals and all(r["val_perplexity"] == pytest.approx(math.exp(r["val_loss"])) for r in evals)
    assert all("val_f1" not in r and "val_matthews" not in r for r in evals)
    # LoRA r=4 on q and v of 2 layers of width 32, nothing else: the LM head stays frozen
    assert result["params"]["trainable"] == 2 * 2 * 4 * (32 + 32)
    assert result["merge"]["ok"], result["merge"]
    base = AutoModelForCausalLM.from_pretrained(lm_dirs[family], use_safetensors=True)
    theirs = PeftModel.from_pretrained(base, run_dir).eval()
    ids = torch.tensor([[0, 4, 5, 6, 7, 8, 2, 1], [0, 9, 10, 11, 12, 13, 14, 15]])
    mask = (ids != 1).long()
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).logits[:, :-1].transpose(1, 2)
        got = load_trained(run_dir).model.eval()(torch.stack([ids, mask], dim=1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_training_lowers_the_perplexity_of_the_responses(lm_dirs, instructions, tmp_path):
    cfg = lm_config(lm_dirs["gpt2"], instructions, method={"name": "full"}, max_steps=40, lr=3e-3, eval_every=40)
    before = lm_config(lm_dirs["gpt2"], instructions, method={"name": "full"}, max_steps=1, lr=1e-9)
    untrained = train(before, tmp_path / "before", progress=False)["metrics"]["test_perplexity"]
    trained = train(cfg, tmp_path / "after", progress=False)["metrics"]["test_perplexity"]
    assert trained < 0.9 * untrained, (trained, untrained)


def test_a_causal_lm_run_resumed_after_a_crash_is_bit_identical(lm_dirs, instructions, tmp_path, monkeypatch):
    cfg = lm_config(lm_dirs["llama"], instructions, method={"name": "lora", "r": 4, "lora_dropout": 0.1})
    assert_resumes_bit_identically(cfg, tmp_path, monkeypatch)


def test_plain_text_trains_a_causal_lm_on_every_token(lm_dirs, tmp_path):
    task = write_text_task(tmp_path / "corpus")  # its labels are not read
    cfg = lm_config(lm_dirs["gpt2"], task, data={"name": "text"}, max_steps=2)
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    assert result["provenance"]["data"]["class_names"] == []


def test_a_merged_export_is_a_folder_transformers_loads_and_generates_from_as_the_run(lm_dirs, corpus, tmp_path):
    """`peftlab export --merged` of a causal LM writes its tokenizer beside the model: AutoModelForCausalLM and
    AutoTokenizer load the folder as it is, and greedy generation from it is the trained adapter model's. The
    run logs its throughput in tokens, not images."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftlab.training.export import load_trained

    run_dir, out = tmp_path / "run", tmp_path / "merged"
    result = train(lm_config(lm_dirs["gpt2"], corpus, data={"name": "text"}, max_steps=2), run_dir, progress=False)
    timing = result["timing"]
    assert timing["train_tokens_per_second"] > 0 and timing["eval_tokens_per_second"] > 0
    assert timing["train_images_per_second"] is None and timing["eval_images_per_second"] is None
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    step = next(record for record in steps if record["kind"] == "step")
    assert step["tokens_per_second"] > step["examples_per_second"] > 0 and "images_per_second" not in step
    assert cli_in_process("export", str(run_dir), "--merged", str(out))[0] == 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    inputs = tokenizer(["w4 w5 w6"], return_tensors="pt")
    trained = next(m for m in load_trained(run_dir).model.modules() if isinstance(m, type(model)))  # adapters in it
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected = trained.eval().generate(
            **inputs, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    assert generated.tolist() == expected.tolist() and generated.shape[1] > inputs["input_ids"].shape[1]
    assert tokenizer.decode(generated[0]).startswith("w4 w5 w6")


def test_params_counts_a_causal_lm_without_classes_and_refuses_them(lm_dirs, corpus, tmp_path):
    """A causal LM's head is its vocabulary's: `peftlab params` of its run config needs no --num-classes."""
    import yaml

    from peftlab import params

    config = tmp_path / "lm.yaml"
    config.write_text(yaml.safe_dump(to_dict(lm_config(lm_dirs["gpt2"], corpus, data={"name": "text"}))))
    counts = params(config)
    assert counts["num_classes"] is None and counts["task"] == "causal-lm"
    assert counts["trainable"] == counts["adapter"] == 2 * 2 * 4 * (32 + 32)  # LoRA r=4 on q and v, the head frozen
    with pytest.raises(UserError, match="--num-classes 3 sizes a classifier's head: a causal LM"):
        params(config, num_classes=3)
    assert params(lm_dirs["gpt2"], task="causal-lm", method="lora", r=4)["trainable"] == counts["trainable"]


def test_a_dry_run_speaks_of_examples_and_tokens_for_a_language_model(lm_dirs, corpus):
    from peftlab.study.estimate import training_estimate

    line = training_estimate([lm_config(lm_dirs["gpt2"], corpus, data={"name": "text"})])
    assert (
        line == "compute: unknown (1 runs whose example and token counts are known only once their data is read "
        "and tokenized)"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"method": {"name": "linear"}}, "method.name='linear' trains a classifier head alone"),
        *(  # GPT-2's 64 learned positions hold the virtual tokens and the text
            (
                {"method": {"name": name, "num_virtual_tokens": 4}},
                "data.max_length=64 is more than the model's 64 positions, less method.num_virtual_tokens=4: "
                "expected <= 60",
            )
            for name in sorted(PROMPT_LEARNING)
        ),
        ({"data": {"name": "glue/rte"}}, "data.name='glue/rte' is not language-model data"),
        ({"data": {"max_length": 8}}, "no train or test example keeps a response token within data.max_length"),
    ],
)
def test_what_a_causal_lm_cannot_do_is_one_line(lm_dirs, instructions, tmp_path, change, message):
    cfg = lm_config(lm_dirs["gpt2"], instructions, method=change.get("method"), data=change.get("data"))
    with pytest.raises(UserError, match=message) as caught:
        from peftlab.config.checks import check_modality

        check_modality(cfg.model, cfg.data)
        train(cfg, tmp_path / "run", progress=False)
    assert "\n" not in str(caught.value)


HAND_WRITTEN = TIMM_ONLY  # timm ViTs only (testkit)
OPTIONS = {"adalora": {"init_r": 6, "target_r": 3}, "vera": {"r": 16}, "oft": {}}


@pytest.mark.parametrize(
    "method", [m for m in TUNERS if m not in HAND_WRITTEN | PROMPT_LEARNING | {"linear"}] + ["qlora-nf4"]
)
def test_every_method_that_applies_to_a_causal_lm_trains_with_the_lm_head_frozen(
    lm_dirs, instructions, method, tmp_path
):
    name = "lora" if method == "qlora-nf4" else method
    sized = "r" in TUNERS[name].config_cls.__dataclass_fields__
    options = OPTIONS.get(name, {"r": 4} if sized else {})
    cfg = lm_config(lm_dirs["gpt2"], instructions, method={"name": name, **options}, max_steps=2)
    if method == "qlora-nf4":
        cfg = load_config(overrides={**to_dict(cfg), "quant": {"mode": "nf4"}})
    run_dir = tmp_path / "run"
    result = train(cfg, run_dir, progress=False)
    assert result["status"] == "completed", result["error"]
    assert math.isfinite(result["metrics"]["test_perplexity"])
    merge = result["merge"]
    assert merge is None or merge["ok"], merge
    if name != "full":  # the LM head (tied to the token embeddings in GPT-2) is not among the trained tensors
        trained = load_file(str(run_dir / "adapter.safetensors"))
        assert not [key for key in trained if "lm_head" in key or "wte" in key]


VIRTUAL = 4  # the prompt-learning runs' virtual tokens: with data.max_length 56, within GPT-2's 64 positions


@pytest.mark.parametrize("data", ["instructions", "text"])
@pytest.mark.parametrize("method", sorted(PROMPT_LEARNING))
@pytest.mark.parametrize("family", FAMILIES)
def test_a_prompt_learning_run_on_a_causal_lm_trains_the_prompts_alone_and_exports_for_peft(
    lm_dirs, instructions, corpus, family, method, data, tmp_path
):
    """The run completes; its test perplexity is the exponential of PEFT's own loss (PEFT's model loaded
    from ``export --peft``, the labels -100 where it puts the virtual tokens) and the logits agree;
    ``export --merged`` is one line naming the method and ``--peft DIR``, and writes nothing."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from peftlab.data.text.tokens import IGNORED
    from peftlab.training.export import load_trained

    run_dir, peft_dir = tmp_path / "run", tmp_path / "peft"
    options = {"name": method, "num_virtual_tokens": VIRTUAL}
    root = instructions if data == "instructions" else corpus
    cfg = lm_config(lm_dirs[family], root, method=options, data={"name": data, "max_length": 56}, max_steps=3)
    result = train(cfg, run_dir, progress=False)
    assert result["status"] == "completed", result["error"]
    assert result["merge"] is None and math.isfinite(result["metrics"]["test_perplexity"])
    # the prompts alone, no head: n x d (prompt tuning) or n x 2 x L x d (prefix tuning), d = 32, L = 2
    assert result["params"]["trainable"] == VIRTUAL * 32 * (1 if method == "prompt_tuning" else 2 * 2)
    status, stderr, _, _ = cli_in_process("export", str(run_dir), "--merged", str(tmp_path / "merged"))
    assert_one_line_refusal(status, stderr, f"method {method!r}", "virtual tokens", "use --peft DIR instead")
    assert not (tmp_path / "merged").exists()
    assert cli_in_process("export", str(run_dir), "--peft", str(peft_dir))[0] == 0
    base = AutoModelForCausalLM.from_pretrained(lm_dirs[family], use_safetensors=True)
    theirs = PeftModel.from_pretrained(base, peft_dir).eval()
    _, bundle = lm_splits(cfg)
    tokens, targets = bundle.test.tokens, bundle.test.labels
    labels = torch.cat([torch.full((len(targets), 1), IGNORED), targets], dim=1)  # transformers shifts itself
    skip = VIRTUAL if method == "prompt_tuning" else 0  # prompt tuning's logits: the virtual positions first
    with torch.no_grad():
        out = theirs(input_ids=tokens[:, 0], attention_mask=tokens[:, 1], labels=labels)
        got = load_trained(run_dir).model.eval()(tokens)
    assert result["metrics"]["test_perplexity"] == pytest.approx(math.exp(float(out.loss)), rel=1e-5)
    torch.testing.assert_close(got, out.logits[:, skip:-1].transpose(1, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family, method", [("gpt2", "prompt_tuning"), ("llama", "prefix_tuning")])
def test_a_prompt_learning_run_on_a_causal_lm_resumed_after_a_crash_is_bit_identical(
    lm_dirs, instructions, family, method, tmp_path, monkeypatch
):
    options = {"name": method, "num_virtual_tokens": VIRTUAL}
    cfg = lm_config(lm_dirs[family], instructions, method=options, data={"max_length": 56})
    assert_resumes_bit_identically(cfg, tmp_path, monkeypatch)


def test_the_summary_line_of_a_causal_lm_names_its_perplexity():
    """The number its study is judged by (a classifier's line reads as it did: no perplexity)."""
    from peftlab.cli.summary import accuracy

    lm = {"test_top1": 0.114, "test_top5": 0.255, "test_perplexity": 264.22, "val_top1": 0.12, "val_perplexity": 262.9}
    assert accuracy(lm) == "test top-1 11.40%  top-5 25.50%  perplexity 264.2"
    trial = {**lm, "test_top1": None, "test_top5": None, "test_perplexity": None}
    assert accuracy(trial) == "val top-1 12.00%  perplexity 262.9, not tested (a tuning trial: train.test=false)"
    assert accuracy({"test_top1": 0.5, "test_top5": None, "test_perplexity": None}) == "test top-1 50.00%"
