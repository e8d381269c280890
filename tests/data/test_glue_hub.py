"""``data.name: glue/<task>`` with ``data.download: true`` and no data.root: the task from the HF hub's GLUE
dataset (``nyu-mll/glue``), read offline by huggingface_hub's own snapshot_download from a hub cache laid
out as the hub client writes it (tests/hubcache.py), its parquet files written with the hub's columns."""

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hubcache import COMMIT, lay_out_snapshot, use_cache
from testkit import cli_in_process, hf_text_dir

from peftlab.config.schema import load_config
from peftlab.data.text.glue import HUB_REPO
from peftlab.data.text.tasks import load_text_splits
from peftlab.utils.errors import ConfigError, DataError

PAIRS = [(f"premise {i} about topic {i % 5}", f"hypothesis {i}", i % 2) for i in range(40)]


def parquet(columns: dict) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out)
    return out.getvalue()


def rte_files(train=PAIRS, validation=PAIRS[:10]) -> dict[str, bytes]:
    def split(rows):
        return parquet(
            {
                "sentence1": [a for a, _, _ in rows],
                "sentence2": [b for _, b, _ in rows],
                "label": pa.array([y for _, _, y in rows], type=pa.int64()),
                "idx": list(range(len(rows))),
            }
        )

    hidden = [(a, b, -1) for a, b, _ in PAIRS[:5]]  # the hub's test split: labels hidden as -1, never read
    return {
        "rte/train-00000-of-00001.parquet": split(train),
        "rte/validation-00000-of-00001.parquet": split(validation),
        "rte/test-00000-of-00001.parquet": split(hidden),
        "README.md": b"---\npretty_name: GLUE\n---\n",
    }


def hub_glue(tmp_path, monkeypatch, files=None):
    cache = tmp_path / "hub-cache"
    lay_out_snapshot(cache, HUB_REPO, rte_files() if files is None else files, repo_type="dataset")
    use_cache(monkeypatch, cache)
    return cache


def glue_cfg(*overrides):
    return load_config(None, ["data.name=glue/rte", "data.download=true", *overrides]).data


def test_a_glue_task_from_the_hub_cache_is_its_train_minus_val_and_its_validation_as_test(tmp_path, monkeypatch):
    from huggingface_hub import scan_cache_dir

    cache = hub_glue(tmp_path, monkeypatch)
    assert not scan_cache_dir(cache).warnings
    splits, info = load_text_splits(glue_cfg("data.val_fraction=0.25"))
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (30, 10, 10)
    assert sorted(splits["train"].texts + splits["val"].texts) == sorted((a, b) for a, b, _ in PAIRS)
    assert splits["test"].texts == [(a, b) for a, b, _ in PAIRS[:10]] and list(splits["test"].labels) == [0, 1] * 5
    assert info.class_names == ["entailment", "not_entailment"]
    assert info.source.endswith(f"datasets--nyu-mll--glue/snapshots/{COMMIT}")
    assert set(info.sha256) == {"rte/train-00000-of-00001.parquet", "rte/validation-00000-of-00001.parquet"}
    assert f"rte/validation of nyu-mll/glue@{COMMIT[:12]}" in info.split_sources["test"]


def test_without_data_root_glue_needs_download_and_one_missing_from_the_cache_says_how_to_fetch_it(
    tmp_path, monkeypatch
):
    with pytest.raises(ConfigError, match=r"^data.root=None is invalid: expected a directory when .* data.download"):
        load_config(None, ["data.name=glue/rte"])
    use_cache(monkeypatch, tmp_path / "empty-cache")
    with pytest.raises(DataError) as err:
        load_text_splits(glue_cfg())
    message = str(err.value)
    assert "\n" not in message and message.startswith("data.name='glue/rte' (data.download: true, no data.root)")
    assert "`hf download nyu-mll/glue --repo-type dataset --include 'rte/*.parquet'`" in message


@pytest.mark.parametrize(
    "files, message",
    [
        (rte_files(train=[("a", "b", 2)] * 4), r"rte/train-00000-of-00001.parquet row 0: label 2 .*expected 0 or 1"),
        (
            {"rte/validation-00000-of-00001.parquet": rte_files()["rte/validation-00000-of-00001.parquet"]},
            r"holds no rte/train-\*.parquet: expected the layout of nyu-mll/glue",
        ),
        (
            {**rte_files(), "rte/train-00000-of-00001.parquet": parquet({"text": ["x"], "label": [0]})},
            r"train-00000-of-00001.parquet: not nyu-mll/glue's rte parquet with columns",
        ),
    ],
    ids=["label", "no-train", "columns"],
)
def test_a_hub_glue_file_not_in_the_hubs_layout_is_one_line_naming_it(tmp_path, monkeypatch, files, message):
    hub_glue(tmp_path, monkeypatch, files)
    with pytest.raises(DataError, match=message) as err:
        load_text_splits(glue_cfg())
    assert "\n" not in str(err.value)


def test_peftlab_train_runs_on_glue_from_the_hub_and_records_the_files_it_read(tmp_path, monkeypatch):
    hub_glue(tmp_path, monkeypatch)
    config = {
        "model": {"source": "hf-text", "path": str(hf_text_dir(tmp_path / "model", "roberta"))},
        "method": {"name": "lora", "r": 2},
        "data": {"name": "glue/rte", "download": True, "max_length": 16},
        "train": {"max_steps": 2, "batch_size": 8, "eval_batch_size": 16},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    status, stderr, _, _ = cli_in_process("train", str(tmp_path / "run.yaml"), "--run-dir", str(tmp_path / "run"))
    assert status == 0, stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "completed" and result["metrics"]["test_f1"] is not None
    assert "rte/train-00000-of-00001.parquet" in json.dumps(result)
