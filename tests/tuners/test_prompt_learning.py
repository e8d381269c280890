"""Prompt tuning and prefix tuning (PEFT's prompt learning) on the four HF text families: the counts
follow the formula (``peftlab params`` included), the head trains at the head's rate, a padded batch gives
each example the logits it gets alone, the virtual tokens must leave positions for the text, and the
configs refuse bad values in one line. The family x method matrix (tests/tuners/test_hf_text.py) checks
that they train, and that PEFT loads their export; tests/test_train_text.py trains and resumes them."""

import copy
import json

import pytest
import torch
from testkit import hf_text_dir, hf_text_model

from peftlab.config.schema import load_config
from peftlab.models.backbones import build_backbone
from peftlab.tuners.base import TunerContext, apply_tuner, is_head_param
from peftlab.utils.errors import ConfigError

NUM_CLASSES = 3
FAMILIES = ["llama", "gpt2", "bert", "roberta"]
METHODS = ["prompt_tuning", "prefix_tuning"]
WIDTH, LAYERS, TOKENS = 32, 2, 5


@pytest.fixture(scope="module")
def text_dirs(tmp_path_factory):
    """Each family saved with its weights, and once as its config alone (what ``peftlab params`` reads)."""
    dirs = {}
    torch.manual_seed(0)
    for family in FAMILIES:
        model = hf_text_model(family, NUM_CLASSES)
        dirs[family] = tmp_path_factory.mktemp("text") / family
        model.save_pretrained(dirs[family])
        dirs[f"{family}-config"] = tmp_path_factory.mktemp("text") / f"{family}-config"
        model.config.save_pretrained(dirs[f"{family}-config"])
    return dirs


def config(path, method: str, **options):
    return load_config(
        overrides={
            "model": {"source": "hf-text", "path": str(path), "num_classes": NUM_CLASSES},
            "method": {"name": method, **options},
        }
    )


def adapt(path, method: str, **options):
    cfg = config(path, method, **options)
    torch.manual_seed(0)
    return apply_tuner(build_backbone(cfg.model, NUM_CLASSES), cfg.method, TunerContext.for_checks(cfg))


def head_size(family: str) -> int:
    """The decoders' ``score`` has no bias; RoBERTa's classifier is dense + out_proj."""
    return {
        "llama": WIDTH * NUM_CLASSES,
        "gpt2": WIDTH * NUM_CLASSES,
        "bert": WIDTH * NUM_CLASSES + NUM_CLASSES,
        "roberta": WIDTH * WIDTH + WIDTH + WIDTH * NUM_CLASSES + NUM_CLASSES,
    }[family]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_peftlab_params_counts_the_formula(text_dirs, family, method, capsys):
    """Prompt tuning: n x d; prefix tuning without projection: n x 2 x L x d (a key and a value per layer);
    plus the head, from config.json alone."""
    from peftlab import cli

    argv = ["params", str(text_dirs[f"{family}-config"]), "--method", method, "--num-virtual-tokens", str(TOKENS)]
    assert cli.main([*argv, "--num-classes", str(NUM_CLASSES), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    adapter = TOKENS * WIDTH if method == "prompt_tuning" else TOKENS * 2 * LAYERS * WIDTH
    assert counts["adapter"] == adapter and counts["in_place"] == 0
    assert counts["head"] == head_size(family)
    assert counts["trainable"] == adapter + head_size(family)
    base = sum(p.numel() for p in hf_text_model(family, NUM_CLASSES).parameters())
    assert counts["total"] == base + adapter  # PEFT's frozen original head is not counted twice


def test_prefix_tuning_on_grouped_query_attention_learns_keys_and_values_of_the_kv_heads_width(tmp_path):
    """Llama with 1 key/value head of 2 (head size 16): each layer's prefix keys and values are 16 wide."""
    import transformers as tf

    sizes = {"vocab_size": 64, "num_labels": NUM_CLASSES, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
    layers = {"hidden_size": WIDTH, "intermediate_size": 64, "num_hidden_layers": LAYERS, "num_attention_heads": 2}
    tf.LlamaForSequenceClassification(tf.LlamaConfig(**layers, num_key_value_heads=1, **sizes)).save_pretrained(
        tmp_path
    )
    tuner = adapt(tmp_path, "prefix_tuning", num_virtual_tokens=TOKENS)
    adapter = sum(p.numel() for n, p in tuner.trainable_parameters().items() if not is_head_param(n, tuner.head))
    assert adapter == TOKENS * 2 * LAYERS * (WIDTH // 2)
    ids = torch.randint(3, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    assert tuner.model(ids).shape == (2, NUM_CLASSES)


def test_prefix_projection_counts_its_embeddings_and_mlp(text_dirs):
    """n x d embeddings, then d -> h -> 2 x L x d, with biases."""
    hidden = 8
    tuner = adapt(
        text_dirs["bert"],
        "prefix_tuning",
        num_virtual_tokens=TOKENS,
        prefix_projection=True,
        encoder_hidden_size=hidden,
    )
    adapter = sum(p.numel() for n, p in tuner.trainable_parameters().items() if not is_head_param(n, tuner.head))
    assert adapter == TOKENS * WIDTH + (WIDTH * hidden + hidden) + (hidden * 2 * LAYERS * WIDTH + 2 * LAYERS * WIDTH)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_the_head_and_only_the_head_is_in_the_head_group(text_dirs, family, method):
    """PEFT's trained copy of the head (modules_to_save) gets the head's learning rate; the virtual tokens
    the method's; the frozen original head and the base do not train."""
    tuner = adapt(text_dirs[family], method, num_virtual_tokens=TOKENS)
    names = {id(p): n for n, p in tuner.trainable_parameters().items()}
    groups = tuner.param_groups(lr=1.0, weight_decay=0.0, head_lr=2.0, head_weight_decay=0.0)
    head = {names[id(p)] for g in groups if g["lr"] == 2.0 for p in g["params"]}
    body = {names[id(p)] for g in groups if g["lr"] == 1.0 for p in g["params"]}
    assert head and all(".modules_to_save.default." in n for n in head)
    assert sum(tuner.trainable_parameters()[n].numel() for n in head) == head_size(family)
    assert body == {"model.prompt_encoder.default.embedding.weight"}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", FAMILIES)
def test_a_padded_batch_gives_each_example_the_logits_it_gets_alone(text_dirs, family, method):
    """Ids and mask stacked, padded on the right to the longest example: PEFT extends the mask over the
    virtual tokens, and a decoder under prompt tuning is classified at its last real token (PEFT's model
    would classify it at the last position, a padding token)."""
    tuner = adapt(text_dirs[family], method, num_virtual_tokens=TOKENS)
    with torch.no_grad():  # the prompts away from their start, so a wrong position would show
        for param in tuner.trainable_parameters().values():
            param.add_(torch.randn_like(param), alpha=0.5)
    model = tuner.model.eval()
    lengths = [3, 7, 5]
    ids = torch.full((3, 7), 1)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, 64, (n,), generator=torch.Generator().manual_seed(i))
    mask = (torch.arange(7) < torch.tensor(lengths)[:, None]).long()
    with torch.no_grad():
        batch = model(torch.stack([ids, mask], dim=1))
        for i, n in enumerate(lengths):
            alone = model(torch.stack([ids[i : i + 1, :n], mask[i : i + 1, :n]], dim=1))
            torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-5, atol=1e-5, msg=f"example {i}")


def test_sample_vocab_starts_the_prompts_at_embeddings_of_the_vocabulary(text_dirs):
    tuner = adapt(text_dirs["bert"], "prompt_tuning", num_virtual_tokens=TOKENS, prompt_tuning_init="sample_vocab")
    prompts = tuner.model.model.prompt_encoder.default.embedding.weight
    vocabulary = tuner.model.model.word_embeddings.weight
    assert all(any(torch.equal(row, word) for word in vocabulary) for row in prompts)


@pytest.mark.parametrize("method", METHODS)
def test_virtual_tokens_that_leave_the_text_no_position_are_one_line(text_dirs, method):
    """GPT-2's 64 learned positions: 64 virtual tokens leave none; Llama's rotary positions have no table."""
    with pytest.raises(
        ConfigError, match=r"method.num_virtual_tokens=64 is invalid: expected fewer than the model's 64"
    ) as caught:
        adapt(text_dirs["gpt2"], method, num_virtual_tokens=64)
    assert "\n" not in str(caught.value)
    assert adapt(text_dirs["llama"], method, num_virtual_tokens=64).model is not None


@pytest.mark.parametrize(
    "method, options, message",
    [
        (
            "prompt_tuning",
            {"num_virtual_tokens": 0},
            r"method.num_virtual_tokens=0 is invalid: expected an integer in \[1, 4096\]",
        ),
        ("prefix_tuning", {"num_virtual_tokens": 10**6}, r"method.num_virtual_tokens=1000000 is invalid"),
        ("prompt_tuning", {"prompt_tuning_init": "text"}, r"method.prompt_tuning_init='text' is invalid"),
        ("prefix_tuning", {"encoder_hidden_size": 8}, r"method.encoder_hidden_size=8 is invalid: expected null unless"),
        ("prefix_tuning", {"prefix_projection": True, "encoder_hidden_size": 0}, r"method.encoder_hidden_size=0"),
    ],
)
def test_bad_values_are_one_line(text_dirs, method, options, message):
    with pytest.raises(ConfigError, match=message) as caught:
        config(text_dirs["bert"], method, **options)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("method", METHODS)
def test_the_tuned_model_copies_and_reloads_its_adapter(text_dirs, method):
    """adapter.safetensors' round trip: the trained tensors into a fresh tuner give the same logits."""
    tuner = adapt(text_dirs["roberta"], method, num_virtual_tokens=TOKENS)
    with torch.no_grad():
        for param in tuner.trainable_parameters().values():
            param.add_(torch.randn_like(param), alpha=0.5)
    fresh = adapt(text_dirs["roberta"], method, num_virtual_tokens=TOKENS)
    fresh.load_adapter_state_dict(copy.deepcopy(tuner.adapter_state_dict()))
    ids = torch.randint(3, 64, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fresh.model.eval()(ids), tuner.model.eval()(ids), rtol=0, atol=0)
    assert tuner.merged_model() is None


# A causal LM (model.task causal-lm): PEFT's CAUSAL_LM, the LM head frozen, the prompts alone train.

VIRTUAL = 3  # virtual tokens of the causal-LM tests


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("lm")
    return {family: hf_text_dir(root / family, family, causal=True) for family in ("gpt2", "llama")}


def adapt_lm(path, method: str, virtual: int = VIRTUAL):
    """The tuned causal LM, its prompts moved away from their start (so that a misplaced one would show)."""
    cfg = load_config(
        overrides={
            "model": {"source": "hf-text", "path": str(path), "task": "causal-lm"},
            "method": {"name": method, "num_virtual_tokens": virtual},
        }
    )
    torch.manual_seed(0)
    tuner = apply_tuner(build_backbone(cfg.model, 0), cfg.method, TunerContext.for_checks(cfg))
    with torch.no_grad():
        for param in tuner.trainable_parameters().values():
            param.add_(torch.randn_like(param), alpha=0.5)
    return tuner


def lm_batch():
    """Ids and mask right-padded (B x 2 x L) and targets as peftlab.data.text.tokens builds them (B x L - 1):
    position t predicts token t + 1, -100 on the first (prompt) positions and on the padding."""
    lengths, width = [4, 7, 6], 7
    ids = torch.full((3, width), 1)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, 64, (n,), generator=torch.Generator().manual_seed(i))
    mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    targets[:, :2] = -100  # a prompt of two tokens: no loss there
    return torch.stack([ids, mask], dim=1), targets


def prefix_cache(tuner, config, batch_size: int):
    """Prefix tuning's keys and values as transformers' own cache of earlier tokens: per layer
    (batch, kv heads, virtual, head size), read off the learned (virtual, 2 x layers x kv) table."""
    from transformers import DynamicCache

    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    table = tuner.model.model.prompt_encoder.default.embedding.weight.detach()
    table = table.view(VIRTUAL, 2 * config.num_hidden_layers, heads, -1).permute(1, 2, 0, 3)
    pairs = [(table[2 * i], table[2 * i + 1]) for i in range(config.num_hidden_layers)]
    return DynamicCache(
        ddp_cache_data=[(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in pairs]
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_causal_lm_loss_is_transformers_own_with_the_virtual_tokens_given_by_hand(lm_dirs, family, method):
    """peftlab's logits (B, vocabulary, L - 1) against the targets give the loss transformers' own model
    computes (its plain Conv1D GPT-2 included) with the virtual tokens handed to it: prompt tuning's
    embeddings before the text's (inputs_embeds), prefix tuning's keys and values as its cache; the mask
    extended over them, the labels -100 there."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    tuner = adapt_lm(lm_dirs[family], method)
    tokens, targets = lm_batch()
    ids, mask = tokens[:, 0], tokens[:, 1]
    plain = AutoModelForCausalLM.from_pretrained(lm_dirs[family], use_safetensors=True).eval()
    mask_v = torch.cat([torch.ones(len(ids), VIRTUAL, dtype=torch.long), mask], dim=1)
    with torch.no_grad():
        logits = tuner.model.eval()(tokens)
        assert logits.shape == (3, 64, ids.shape[1] - 1)
        ours = F.cross_entropy(logits, targets)
        if method == "prompt_tuning":
            prompts = tuner.model.model.prompt_encoder.default.embedding.weight.expand(len(ids), -1, -1)
            embeds = torch.cat([prompts, plain.get_input_embeddings()(ids)], dim=1)
            labels = torch.cat([torch.full((len(ids), VIRTUAL + 1), -100), targets], dim=1)  # it shifts them itself
            theirs = plain(inputs_embeds=embeds, attention_mask=mask_v, labels=labels).loss
        else:
            labels = torch.cat([torch.full((len(ids), 1), -100), targets], dim=1)
            cache = prefix_cache(tuner, plain.config, len(ids))
            theirs = plain(input_ids=ids, attention_mask=mask_v, past_key_values=cache, labels=labels).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_on_a_causal_lm_the_prompts_alone_train_as_peftlab_params_counts_them(lm_dirs, method, capsys):
    """n x d (prompt tuning), n x 2 x L x d (prefix tuning), no head: the gradient reaches the prompt
    table and nothing else, and ``peftlab params DIR --task causal-lm`` prints the same counts."""
    import torch.nn.functional as F

    from peftlab import cli

    tuner = adapt_lm(lm_dirs["gpt2"], method)
    adapter = VIRTUAL * WIDTH if method == "prompt_tuning" else VIRTUAL * 2 * LAYERS * WIDTH
    assert {n: p.numel() for n, p in tuner.trainable_parameters().items()} == {
        "model.prompt_encoder.default.embedding.weight": adapter
    }
    assert [g["name"] for g in tuner.param_groups(lr=1.0, weight_decay=0.0, head_lr=2.0, head_weight_decay=0.0)] == [
        "body"
    ]
    tokens, targets = lm_batch()
    F.cross_entropy(tuner.model.train()(tokens), targets).backward()
    grads = [n for n, p in tuner.model.named_parameters() if p.grad is not None]
    assert grads == ["model.prompt_encoder.default.embedding.weight"]
    argv = ["params", str(lm_dirs["gpt2"]), "--task", "causal-lm", "--method", method]
    assert cli.main([*argv, "--num-virtual-tokens", str(VIRTUAL), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["adapter"] == counts["trainable"] == adapter and counts["head"] == 0
    base = sum(p.numel() for p in hf_text_model("gpt2", causal=True).parameters())  # the LM head tied: once
    assert counts["total"] == base + adapter


@pytest.mark.parametrize("method", METHODS)
def test_a_padded_causal_lm_batch_gives_each_example_the_logits_it_gets_alone(lm_dirs, method):
    tuner = adapt_lm(lm_dirs["gpt2"], method)
    tokens, _ = lm_batch()
    with torch.no_grad():
        batch = tuner.model.eval()(tokens)
        for i, n in enumerate(tokens[:, 1].sum(1).tolist()):
            alone = tuner.model(tokens[i : i + 1, :, :n])
            torch.testing.assert_close(batch[i : i + 1, :, : n - 1], alone, rtol=1e-5, atol=1e-5, msg=f"example {i}")


def test_virtual_tokens_leave_a_causal_gpt2_positions_for_the_text(lm_dirs):
    """GPT-2's 64 learned positions, as for its classifier (tests/test_train_causal_lm.py checks data.max_length)."""
    with pytest.raises(
        ConfigError, match=r"method.num_virtual_tokens=64 is invalid: expected fewer than the model's 64"
    ):
        adapt_lm(lm_dirs["gpt2"], "prefix_tuning", virtual=64)
