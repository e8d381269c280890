"""Model records (peftlab.records) are a cache, never a second truth: what validate, params and a dry-run
read back equals what the live meta-device code answers, for every family and every built-in method; a
damaged, foreign or planted record is rebuilt, never trusted; ``peftlab cache`` lists and clears them."""

import json
import os

import pytest
from testkit import TINY_MODEL, applied_counts, hf_text_dir, hf_vision_model
from tuners.test_families import FAMILIES, NUM_CLASSES

from peftlab.cli import main
from peftlab.config.schema import load_config
from peftlab.records import answers, store
from peftlab.tuners import TUNERS
from peftlab.tuners import params as live
from peftlab.tuners.plans import PLANS
from peftlab.utils.errors import ConfigError, WeightsError

BUILT_IN = [m for m in TUNERS if m not in ("prompt_tuning", "prefix_tuning", "peft")]  # text-only; the bridge
# the families whose layouts differ where methods touch them: fused qkv, separate q/k/v with SwiGLU,
# fused-bias qkv, stages of windows
KINDS = ("vit", "eva02", "beit", "swin")
SWIN_METHODS = ("full", "linear", "lora", "bitfit", "vpt", "ssf", "pfeiffer")  # Swin-T's 12 blocks: a few


def family_config(family: str, method: str):
    name, kwargs = FAMILIES[family]
    if family == "swin":  # a config sizes no stages: Swin-T itself, on the meta device
        kwargs = {}
    return load_config(
        overrides={"model": {"name": name, "num_classes": NUM_CLASSES, **kwargs}, "method": {"name": method}}
    )


def outcome(function, cfg):
    try:
        return function(cfg)
    except ConfigError as err:
        return f"ConfigError: {err}"


def checked(cfg):
    return answers.check_against_model(cfg)


def checked_live(cfg):
    return live.check_against_model(cfg)


@pytest.mark.parametrize("family", KINDS)
def test_every_built_in_method_answers_from_its_record_as_the_live_model_does(family):
    """Cold (built by the live code and written) and warm (read back from JSON): counts, ranks and refusals."""
    for method in BUILT_IN if family != "swin" else SWIN_METHODS:
        cfg = family_config(family, method)
        expected = (outcome(live.count_parameters, cfg), outcome(checked_live, cfg))
        cold = (outcome(answers.count_parameters, cfg), outcome(checked, cfg))
        answers.META_MODELS.clear()
        warm_before = len(store.USED)
        warm = (outcome(answers.count_parameters, cfg), outcome(checked, cfg))
        assert cold == expected == warm, (family, method)
        assert all(used[2] for used in store.USED[warm_before:]), (family, method)  # read, not rebuilt
        assert answers.META_MODELS == {}, (family, method)  # the warm answer built no model


def test_the_memory_estimate_and_flops_read_back_equal_the_live_ones():
    from peftlab.study.estimate import forward_flops
    from peftlab.training.preflight import estimate_for_config

    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": "lora"}})
    assert answers.config_estimate(cfg) == estimate_for_config(cfg) == answers.config_estimate(cfg)
    flops = forward_flops(cfg, {})
    assert flops == answers.forward_flops(cfg) and flops > 0


HF_METHODS = ("lora", "full", "linear", "bitfit", "prompt_tuning", "vpt")  # text-only, timm-only: refused alike


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """A tiny HF ViT (config.json, model.safetensors) and a tiny GPT-2 classifier with its tokenizer."""
    vit = tmp_path_factory.mktemp("hf") / "vit"
    hf_vision_model("vit", NUM_CLASSES).save_pretrained(vit)
    return {"hf": vit, "hf-text": hf_text_dir(tmp_path_factory.mktemp("hf") / "gpt2", "gpt2", NUM_CLASSES)}


def hf_config(path, method: str, source: str = "hf"):
    return load_config(
        overrides={
            "model": {"source": source, "path": str(path), "num_classes": NUM_CLASSES},
            "method": {"name": method},
            "data": {"max_length": 32},  # GPT-2's 64 positions
        }
    )


@pytest.mark.parametrize("source", ["hf", "hf-text"])
def test_a_local_hf_directory_answers_from_its_records_as_the_live_model_does(hf_dirs, source):
    """Counts, checks and the memory estimate (and a vision model's FLOPs) of an HF directory: built by the
    live code once, then read back without building a model."""
    from peftlab.study.estimate import forward_flops
    from peftlab.training.preflight import estimate_for_config

    for method in HF_METHODS:
        cfg = hf_config(hf_dirs[source], method, source)
        expected = (outcome(live.count_parameters, cfg), outcome(checked_live, cfg))
        cold = (outcome(answers.count_parameters, cfg), outcome(checked, cfg))
        answers.META_MODELS.clear()
        warm_before = len(store.USED)
        warm = (outcome(answers.count_parameters, cfg), outcome(checked, cfg))
        assert cold == expected == warm, (source, method)
        assert len(store.USED) == warm_before + 2 and all(used[2] for used in store.USED[warm_before:]), method
        assert answers.META_MODELS == {}, (source, method)
    cfg = hf_config(hf_dirs[source], "lora", source)
    assert answers.config_estimate(cfg) == estimate_for_config(cfg) == answers.config_estimate(cfg)
    flops = forward_flops(cfg, {})
    assert flops == answers.forward_flops(cfg) and (flops is None) == (source == "hf-text")
    answers.META_MODELS.clear()
    before = len(store.USED)
    answers.config_estimate(cfg)
    answers.forward_flops(cfg)  # a text model's: None, unrecorded
    assert answers.META_MODELS == {} and all(used[2] for used in store.USED[before:])
    assert [used[0] for used in store.USED[before:]] == ["estimate", "flops"][: 2 if source == "hf" else 1]


def test_an_edited_hf_directory_is_another_record_never_the_old_one(hf_dirs, tmp_path):
    """The payload holds config.json's (and every read file's) size and SHA-256: another depth is another
    model, counted anew; the same bytes again read the first record back; a file the checks refuse is
    refused live, whatever was recorded."""
    import shutil

    from peftlab.models.backbones import input_spec_for

    path = tmp_path / "vit"
    shutil.copytree(hf_dirs["hf"], path)
    cfg = hf_config(path, "lora")
    first = answers.count_parameters(cfg)
    original = (path / "config.json").read_text()
    config = json.loads(original)
    (path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1, "hidden_size": 64}))
    before = len(store.USED)
    edited = answers.count_parameters(cfg)
    assert edited == live.count_parameters(cfg) != first
    assert answers.check_against_model(cfg) == live.check_against_model(cfg)
    assert [used[2] for used in store.USED[before:]] == [False, True]  # a new structure record, then read
    (path / "config.json").write_text(original)
    answers.META_MODELS.clear()
    assert answers.count_parameters(cfg) == first and store.USED[-1][2] and answers.META_MODELS == {}
    flops = answers.forward_flops(cfg)
    processor = path / "preprocessor_config.json"  # read by input_spec_for (its normalisation)
    processor.write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [2] * 3}))
    assert answers.forward_flops(cfg) == flops and not store.USED[-1][2]  # another record, the same FLOPs
    processor.write_text(json.dumps({"image_mean": [20] * 3}))
    for refused in (answers.forward_flops, lambda cfg: input_spec_for(cfg.model)):  # recorded, live
        with pytest.raises(WeightsError, match="image_mean"):
            refused(cfg)
    processor.unlink()
    hostile = {"code.py": "ships its own Python code", "model.safetensors": "is empty", "vocab.txt": "not a regular"}
    for name, refusal in hostile.items():
        target = path / name
        kept = target.read_bytes() if target.exists() else None
        target.unlink(missing_ok=True)
        if name == "vocab.txt":
            os.mkfifo(target)  # a tokenizer file that would block a reader
        else:
            target.write_bytes(b"")
        for count in (live.count_parameters, answers.count_parameters):
            with pytest.raises(WeightsError, match=refusal):
                count(cfg)
        target.unlink()
        if kept is not None:
            target.write_bytes(kept)
    assert answers.count_parameters(cfg) == first and store.USED[-1][2]


def test_params_of_an_hf_directory_reads_its_records_warm(hf_dirs, capsys):
    """``peftlab params DIR``: the directory's source and labels, and the counts, from records."""
    for state in (False, True):
        before = len(store.USED)
        answers.META_MODELS.clear()
        assert main(["params", str(hf_dirs["hf-text"]), "--method", "lora", "--json"]) == 0
        counts = json.loads(capsys.readouterr().out)
        assert [used[0] for used in store.USED[before:]] == ["hf-source", "structure"]
        assert all(used[2] == state for used in store.USED[before:])
        assert (answers.META_MODELS == {}) == state
    cfg = load_config(
        overrides={
            "model": {"source": "hf-text", "path": str(hf_dirs["hf-text"]), "num_classes": NUM_CLASSES},
            "method": {"name": "lora"},
        }
    )
    assert counts == live.count_parameters(cfg)
    assert main(["cache"]) == 0 and str(hf_dirs["hf-text"]) in capsys.readouterr().out  # listed by its path


def record_files():
    return sorted(store.records_dir().glob("*.json"))


def test_a_damaged_record_is_rebuilt_never_trusted():
    """A method counted from its plan reads the model's structure record; another its own counts record."""
    for method, part, field in (("lora", "total", None), ("lokr", "counts", "trainable")):
        cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": method}})
        truth = live.count_parameters(cfg)
        answers.count_parameters(cfg)
        (path,) = record_files()
        intact = json.loads(path.read_text())
        record = json.loads(path.read_text())
        if field is None:
            record["body"][part] += 1  # a changed answer whose checksum no longer holds
        else:
            record["body"][part][field] += 1
        path.write_text(json.dumps(record))
        assert answers.count_parameters(cfg) == truth
        assert json.loads(path.read_text())["body"] == intact["body"]  # written over, intact again
        path.write_text("{not json")
        assert answers.count_parameters(cfg) == truth
        path.write_bytes(b"\x80\x04\x95pickle")  # never unpickled: read as JSON, refused
        assert answers.count_parameters(cfg) == truth
        path.unlink()


@pytest.mark.parametrize(("method", "kind"), [("lora", "structure"), ("lokr", "counts")])
def test_a_foreign_record_is_not_trusted_even_with_a_checksum_that_holds(method, kind):
    """A record of another model put under this one's name, or of other library versions, is rebuilt."""
    cfg = load_config(overrides={"model": TINY_MODEL, "method": {"name": method}})
    other = load_config(overrides={"model": {**TINY_MODEL, "depth": 3}, "method": {"name": method}})
    answers.count_parameters(cfg)
    answers.count_parameters(other)
    mine, theirs = (
        store.record_path(kind, store.record_key(kind, payload, store.library_versions()))
        for payload in (counts_payload(cfg, kind), counts_payload(other, kind))
    )
    mine.write_bytes(theirs.read_bytes())
    assert answers.count_parameters(cfg) == live.count_parameters(cfg)
    record = json.loads(mine.read_text())
    record["versions"]["timm"] = "0.0.1"
    record["hmac_sha256"] = store.checksum(record, store.records_key())
    mine.write_text(json.dumps(record))
    assert store.read_record(kind, counts_payload(cfg, kind)) is None


def counts_payload(cfg, kind):
    model = answers.model_payload(cfg.model, cfg.model.num_classes or 1000)
    return json.loads(
        store.canonical(model if kind == "structure" else {**model, **answers.method_payload(cfg.method)})
    )


def test_one_structure_record_answers_every_rank_and_target_of_a_model_without_building_it():
    """LoRA's r, its targets, a rank pattern and DoRA read the one record of the model; another model is
    another record; a method counted by applying it keeps one record per method config."""
    lora, tiny = {"name": "lora", "r": 4}, {**TINY_MODEL, "num_classes": 10}  # counts and checks: 10 classes
    answers.count_parameters(load_config(overrides={"model": tiny, "method": lora}))
    answers.META_MODELS.clear()
    for method in (
        {**lora, "r": 2},
        {**lora, "target_modules": "all-linear", "rank_pattern": {"fc1": 8}},
        {"name": "dora", "r": 16},
        *({"name": name} for name in PLANS),
    ):
        cfg = load_config(overrides={"model": tiny, "method": method})
        before = len(store.USED)
        assert answers.count_parameters(cfg) == live.count_parameters(cfg), method
        assert answers.check_against_model(cfg) == live.check_against_model(cfg), method
        assert [used[2] for used in store.USED[before:]] == [True, True], method  # read warm
    answers.META_MODELS.clear()
    cfg = load_config(overrides={"model": tiny, "method": {**lora, "r": 3}})
    answers.count_parameters(cfg)
    assert answers.META_MODELS == {}  # nothing built
    answers.count_parameters(load_config(overrides={"model": {**tiny, "depth": 1}, "method": lora}))
    answers.count_parameters(load_config(overrides={"model": tiny, "method": {"name": "lokr"}}))
    assert [p.name.split("-")[0] for p in record_files()] == ["counts", "structure", "structure"]


@pytest.mark.parametrize("family", KINDS)
def test_the_methods_counted_from_a_structure_count_what_peft_applied_holds(family):
    """The oracle: the structure's counts equal those of the method applied on the meta model (PEFT's
    layers for LoRA and DoRA, every weight trainable for full, the head alone for linear)."""
    for method in PLANS:
        cfg = family_config(family, method)
        counts, expected = outcome(answers.count_parameters, cfg), outcome(applied_counts, cfg)
        if isinstance(expected, dict) and isinstance(counts, dict):  # else refused alike (VPT on BEiT, Swin)
            counts = {k: counts[k] for k in expected}
        assert counts == expected, (family, method)


def test_validate_show_names_its_records_and_cache_lists_and_clears_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PEFTLAB_DATA_CACHE", str(tmp_path / "data"))
    (tmp_path / "data" / "decoded").mkdir(parents=True)
    (tmp_path / "data" / "decoded" / "x.npy").write_bytes(b"0" * 2048)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"model": TINY_MODEL, "method": {"name": "lora"}}))
    for state in ("built now", "read"):
        assert main(["validate", str(config), "--show"]) == 0
        shown = capsys.readouterr().out
        assert "#   structure  structure-" in shown and f"({state}, " in shown and "#   estimate   estimate-" in shown
    assert main(["cache"]) == 0
    listing = capsys.readouterr().out
    assert "model records: 2," in listing and "vit_tiny_patch16_224" in listing
    assert "decoded" in listing and "2.0 KiB" in listing
    assert main(["cache", "clear", "--data"]) == 0
    assert "removed 2 model records" in capsys.readouterr().out
    # an earlier peftlab's cache (its own entries alone) is marked as peftlab's when cleared
    assert record_files() == [] and [p.name for p in (tmp_path / "data").iterdir()] == [".peftlab-cache"]


@pytest.mark.parametrize("made", ["nothing", "a file"])
def test_a_cache_folder_that_is_missing_or_a_file_lists_no_records(tmp_path, monkeypatch, made):
    """`peftlab cache` lists what is there: a model cache never made (a fresh machine), or a file where its folder
    should be, lists nothing rather than failing."""
    folder = tmp_path / "models"
    if made == "a file":
        folder.write_text("not a folder")
    monkeypatch.setenv(store.ENV_MODEL_CACHE, str(folder))
    assert store.listed() == []
