"""A decoder pair run's id names how its pairs are joined (peftlab.config.pair_joins): a study resumed across the
change that put the tokenizer's end-of-sequence token between a decoder's two texts trains those runs again, and
no other run's id moves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hubcache import lay_out_snapshot

from peftlab.config.pair_joins import EOS_JOIN, auto_tables, decoder_type
from peftlab.config.run_ids import hashed_dict
from peftlab.config.schema import config_hash, load_config, to_dict


def text_cfg(data: str, path: str | None = "/models/m", *extra: str):
    model = [f"model.path={path}"] if path else ["model.pretrained=hub", "model.name=org/tiny-lm"]
    return load_config(overrides=["model.source=hf-text", *model, f"data.name={data}", "data.root=/data", *extra])


def model_dir(tmp_path: Path, model_type: str) -> str:
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return str(folder)


def test_a_decoder_pair_run_has_a_new_id_and_every_other_run_keeps_its_own():
    # ids of these configs before the change (/models/m holds nothing yet: a base still to pretrain, a decoder)
    assert config_hash(text_cfg("glue/rte")) != "36cc39d06c1c"  # decoder pairs, joined by nothing then
    assert config_hash(text_cfg("glue/sst2")) == "0182e9350ef8"  # a single text
    assert config_hash(text_cfg("glue/rte", "/models/m", 'data.pair_separator=" | "')) == "1272365c72f9"


@pytest.mark.parametrize(("model_type", "joined"), [("gpt2", True), ("llama", True), ("bert", False), ("bart", False)])
def test_the_id_names_the_join_exactly_for_decoders(tmp_path, model_type, joined):
    folder = model_dir(tmp_path, model_type)
    hashed = hashed_dict(to_dict(text_cfg("glue/mrpc", folder)))
    assert hashed["data"].get("pair_join") == (EOS_JOIN if joined else None)
    assert "pair_join" not in hashed_dict(to_dict(text_cfg("glue/sst2", folder)))["data"]
    if joined:  # a separator the config sets is in the id as data.pair_separator
        assert "pair_join" not in hashed_dict(to_dict(text_cfg("glue/mrpc", folder, "data.pair_separator=|")))["data"]


def test_a_hub_model_is_judged_by_its_cached_config(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert "pair_join" not in hashed_dict(to_dict(text_cfg("glue/qnli", None)))["data"]  # not cached: no join known
    lay_out_snapshot(tmp_path, "org/tiny-lm", {"config.json": json.dumps({"model_type": "gpt2"}).encode()})
    assert hashed_dict(to_dict(text_cfg("glue/qnli", None)))["data"]["pair_join"] == EOS_JOIN


def test_the_tables_read_as_data_are_transformers_own():
    from transformers.models.auto import modeling_auto

    causal, masked = auto_tables()
    assert causal == set(modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    assert masked == set(modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES)
    assert decoder_type("gpt2") and not decoder_type("roberta") and not decoder_type(None)
