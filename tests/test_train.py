"""The recipe on real data (Fashion-MNIST subsets) with the 2-block 32 px ViT."""

import json
import math
import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file
from testkit import (
    TINY_MODEL,
    assert_peft_loads,
    assert_resumes_bit_identically,
    cli_here,
    needs_fashion_mnist,
    write_fashion_sample,
)

from peftlab.config.schema import load_config
from peftlab.training.run import train
from peftlab.utils.errors import ConfigError

pytestmark = needs_fashion_mnist()

SMALL = {
    "model": TINY_MODEL,
    "data": {"name": "fashion_mnist", "train_subset": 192, "val_subset": 64, "test_subset": 96},
    "train": {"epochs": 2, "batch_size": 32, "eval_batch_size": 96, "lr": 3e-3, "log_every": 1, "ckpt_every": 2},
}


def config(**sections):
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in SMALL.items()}
    for key, value in sections.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return load_config(overrides=merged)


@pytest.fixture(scope="module", autouse=True)
def fashion_sample(tmp_path_factory):
    """SMALL's runs read their subsets from the installed Fashion-MNIST's first 1,000 training and 200 test images,
    in files of their own (``testkit.write_fashion_sample``): every run reads and hashes its data files whole."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(SMALL["data"], "root", str(write_fashion_sample(tmp_path_factory.mktemp("fashion"))))
        yield


def training_records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing fields, which legitimately differ between runs."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_second"} for r in records]


def test_lora_run_writes_a_complete_run_directory(tmp_path):
    result = train(config(method={"name": "lora", "r": 4}), tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.yaml", "metrics.jsonl", "adapter.safetensors", "checkpoint", "result.json"} <= files
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    for section, keys in {
        "metrics": ["test_top1", "test_top5", "val_top1", "best_val_top1"],
        "params": ["total", "trainable", "trainable_ratio"],
        "memory": ["peak_rss_bytes", "cuda_max_allocated_bytes", "weights_bytes"],
        "timing": ["train_seconds", "train_images_per_second", "eval_images_per_second"],
        "merge": ["max_abs_diff", "merged_vs_adapter_latency_ratio", "tf32", "matmul_precision"],
        "provenance": ["git_sha", "git_dirty", "versions", "hardware", "threads", "dtype", "seed", "data_sha256"],
    }.items():
        assert set(keys) <= set(saved[section]), section
    assert saved["merge"]["max_abs_diff"] < 1e-4
    assert saved["merge"]["tf32"] is False and saved["merge"]["matmul_precision"] == "highest"  # full fp32
    assert saved["provenance"]["base_sha256"] is None  # a random base: no weights file
    malloc = saved["provenance"]["malloc"]  # train.malloc: glibc's own rule by default
    assert malloc["mode"] == "system" and malloc["allocator"].startswith(("glibc ", "system"))
    hardware = saved["provenance"]["hardware"]  # the CPU features that pick the kernels, so the numbers
    assert set(hardware["cpu_flags"]) <= {
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "avx512_vnni",
        "amx_tile",
        "amx_bf16",
    }
    assert hardware["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert 0.0 <= saved["metrics"]["test_top1"] <= 1.0
    assert all("lora_" in k or ".head." in k for k in load_file(str(tmp_path / "run" / "adapter.safetensors")))
    assert_peft_loads(tmp_path / "run")
    kinds = [r["kind"] for r in training_records(tmp_path / "run")]
    assert kinds.count("epoch") == 2 and kinds.count("step") == 2 * 6
    # a second call finds the finished run and does not train again
    assert train(config(method={"name": "lora", "r": 4}), tmp_path / "run", progress=False) == saved


class Interrupt(BaseException):
    """Stands for a kill: not an Exception, so nothing records it."""


@pytest.mark.parametrize(
    "method",
    [
        "lora",
        "full",
        "stateful",
        "adalora",
        "adaptive",
        "qalora",
        "bitfit",
        "ssf",
        "difffit",
        "houlsby",
        "vpt",
        "dora",
        "vera",
        "loha",
        "peft",
    ],
)
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, monkeypatch, method):
    import stateful_tuner

    import peftlab.training.recipe
    from peftlab.config.methods import METHODS
    from peftlab.tuners import TUNERS

    monkeypatch.setitem(TUNERS, "stateful", stateful_tuner.SPEC)  # a method with training state of its own
    monkeypatch.setitem(METHODS, "stateful", stateful_tuner.StatefulConfig)  # as peftlab.tuners registers it
    options = {
        "full": {},
        "bitfit": {},
        "ssf": {},
        "difffit": {},
        "houlsby": {"bottleneck": 4},
        "vpt": {"prompt_tokens": 3},
        "adalora": {"init_r": 6, "target_r": 3, "lora_dropout": 0.1},
        "adaptive": {"r": 4, "importance": "sensitivity", "allocation": "threshold", "interval": 1},
        "qalora": {"r": 4, "lora_dropout": 0.1, "schedule": "cosine"},
        "vera": {"r": 16, "vera_dropout": 0.1},
        "loha": {"r": 4, "rank_dropout": 0.1, "module_dropout": 0.1},
        # by name through the bridge: matrices shared by every layer, and dropout
        "peft": {"peft_type": "RANDLORA", "options": {"r": 4, "randlora_dropout": 0.1}},
    }.get(method, {"r": 4, "lora_dropout": 0.1})
    cfg = config(method={"name": method, **options}, data={"augment": True})
    reference = train(cfg, tmp_path / "straight", progress=False)

    original = peftlab.training.recipe.training_step

    def crash_at_step_7(*args, step, **kwargs):
        if step == 7:
            raise Interrupt()
        return original(*args, step=step, **kwargs)

    monkeypatch.setattr(peftlab.training.recipe, "training_step", crash_at_step_7)
    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed" / "result.json").exists()
    assert json.loads((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 7
    monkeypatch.setattr(peftlab.training.recipe, "training_step", original)
    resumed = train(cfg, tmp_path / "resumed", progress=False)

    a = load_file(str(tmp_path / "straight" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "adapter.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert training_records(tmp_path / "straight") == training_records(tmp_path / "resumed")
    assert resumed["metrics"] == reference["metrics"]
    # the crashed process's time up to its last checkpoint, which a study's phases count with the last one's
    assert reference["timing"]["earlier_wall_seconds"] == 0 < resumed["timing"]["earlier_wall_seconds"]
    if method in ("adalora", "adaptive"):  # the controller's state came back with the checkpoint
        assert resumed["ranks"] == reference["ranks"]
        history = (tmp_path / "straight" / "importance.jsonl").read_text()
        assert history == (tmp_path / "resumed" / "importance.jsonl").read_text()
        assert max(json.loads(line)["step"] for line in history.splitlines()) >= 8  # kept on after step 7


def test_huge_learning_rate_ends_diverged(tmp_path):
    cfg = config(method={"name": "full"}, train={"lr": 1e6, "clip_grad": None, "warmup_ratio": 0.0})
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "diverged"
    assert "non-finite" in result["error"] and "at step" in result["error"]
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["status"] == "diverged" and saved["step"] is not None


@pytest.mark.parametrize("what", ["loss", "gradient norm"])
def test_a_non_finite_step_between_log_points_is_reported_at_its_exact_step(tmp_path, monkeypatch, what):
    """The loop reads the device only at log, eval and checkpoint points (here every 3rd step);
    a loss or gradient norm that turns non-finite at step 4 is still reported as step 4."""
    import peftlab.training.step

    original, calls = peftlab.training.step.compute_loss, []

    def non_finite_at_step_4(*args):
        loss = original(*args)
        calls.append(1)
        if len(calls) != 5:  # one micro-batch a step: the 5th call is step 4
            return loss
        if what == "loss":
            return loss * float("nan")
        huge = loss * 1e38  # the same value, gradients scaled by 1e38: their norm overflows
        return huge - huge.detach() + loss.detach()

    monkeypatch.setattr(peftlab.training.step, "compute_loss", non_finite_at_step_4)
    cfg = config(method={"name": "lora", "r": 4}, train={"log_every": 3, "ckpt_every": 3, "max_steps": 6})
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "diverged" and result["step"] == 4
    expected = r"non-finite loss \(nan\)" if what == "loss" else r"non-finite gradient norm \((inf|nan)\)"
    assert re.fullmatch(expected + " at step 4", result["error"]), result["error"]
    records = training_records(tmp_path / "run")
    assert [r["step"] for r in records if r["kind"] == "step"] == [3]  # nothing logged after it
    assert all(math.isfinite(r["loss"]) for r in records if r["kind"] == "step")


def test_an_image_folder_run_is_the_same_with_workers_and_cache(tmp_path, monkeypatch):
    """JPEG files decoded by two DataLoader workers, or cached, train to the same weights, bit for bit,
    as decoding in the main process, augmentation included."""
    from peftlab.bench.data import write_jpeg_folder
    from peftlab.data.sources import ENV_DATA_CACHE

    monkeypatch.setenv(ENV_DATA_CACHE, str(tmp_path / "cache"))  # not ~/.cache
    write_jpeg_folder(tmp_path / "jpegs", n_train=48, size=40, classes=3, n_test=9)
    runs = {}
    for name, data in (
        ("main", {"num_workers": 0}),
        ("workers", {"num_workers": 2}),
        ("cached", {"num_workers": 2, "cache": True}),
    ):
        cfg = config(
            method={"name": "lora", "r": 4},
            data={
                "name": "imagefolder",
                "root": str(tmp_path / "jpegs"),
                "augment": True,
                "train_subset": None,
                "val_subset": None,
                "test_subset": None,
                **data,
            },
            train={"epochs": 2, "batch_size": 16, "log_every": 2, "ckpt_every": 3},
        )
        runs[name] = train(cfg, tmp_path / name, progress=False)
        assert runs[name]["status"] == "completed", runs[name]["error"]
    a = load_file(str(tmp_path / "main" / "adapter.safetensors"))
    for name in ("workers", "cached"):
        b = load_file(str(tmp_path / name / "adapter.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        assert training_records(tmp_path / "main") == training_records(tmp_path / name)
        assert runs["main"]["metrics"] == runs[name]["metrics"]
    assert len(list((tmp_path / "cache" / "decoded").glob("*.npy"))) == 3  # train, val, test


@pytest.mark.parametrize("method", ["bitfit", "ssf", "difffit"])
def test_merged_export_of_a_hand_written_method_is_a_plain_timm_model(tmp_path, method):
    import timm
    from safetensors import safe_open

    from peftlab.cli import main
    from peftlab.training.export import load_trained

    run_dir, out = tmp_path / "run", tmp_path / "merged.safetensors"
    assert (
        train(config(method={"name": method}, train={"max_steps": 2}), run_dir, progress=False)["status"] == "completed"
    )
    assert main(["export", str(run_dir), "--merged", str(out)]) == 0
    with safe_open(str(out), "pt") as f:
        header = f.metadata()
    plain = timm.create_model(header["timm_model"], **json.loads(header["timm_kwargs"]))
    plain.load_state_dict(load_file(str(out)))  # strict: timm's own keys, nothing else
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), load_trained(run_dir).model.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method, options", [("houlsby", {"bottleneck": 4}), ("vpt", {"prompt_tokens": 3})])
def test_a_method_that_does_not_merge_skips_the_merge_check_and_exports_unmerged(tmp_path, capsys, method, options):
    from peftlab.cli import main
    from peftlab.training.export import load_trained, load_unmerged

    run_dir, out = tmp_path / "run", tmp_path / "unmerged.safetensors"
    result = train(config(method={"name": method, **options}, train={"max_steps": 2}), run_dir, progress=False)
    assert result["status"] == "completed", result["error"]
    assert result["merge"] is None and result["metrics"]["merged_test_top1"] is None
    assert not any("merge" in w for w in result["warnings"])
    assert main(["export", str(run_dir), "--merged", str(out)]) == 0
    said = capsys.readouterr()
    assert said.err.count("\n") == 1 and f"method {method!r} does not merge into the base weights" in said.err
    assert said.out == f"wrote the base with the method's unmerged modules to {out}\n"
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(load_unmerged(out).eval()(x), load_trained(run_dir).model.eval()(x), rtol=0, atol=0)


@pytest.mark.e2e
def test_cli_train_then_export_loads_in_plain_timm(tmp_path):
    """``peftlab train`` then ``peftlab export --merged``, through the CLI's entry in this process (``cli_here``)."""
    cfg_path = tmp_path / "run.yaml"
    from peftlab.config.schema import dump_config

    cfg_path.write_text(dump_config(config(method={"name": "lora", "r": 4}, train={"epochs": 1})))
    proc = cli_here("train", str(cfg_path), "--run-dir", str(tmp_path / "run"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "completed" in proc.stdout
    proc = cli_here("export", str(tmp_path / "run"), "--merged", str(tmp_path / "merged.safetensors"))
    assert proc.returncode == 0, proc.stderr
    model = timm.create_model(
        TINY_MODEL["name"], num_classes=10, **{k: v for k, v in TINY_MODEL.items() if k != "name"}
    )
    model.load_state_dict(load_file(str(tmp_path / "merged.safetensors")), strict=True)
    # the header alone says how to build it: timm model name and arguments, input size, normalisation
    from safetensors import safe_open

    with safe_open(str(tmp_path / "merged.safetensors"), "pt") as f:
        header = f.metadata()
    rebuilt = timm.create_model(header["timm_model"], **json.loads(header["timm_kwargs"]))
    rebuilt.load_state_dict(load_file(str(tmp_path / "merged.safetensors")), strict=True)
    assert json.loads(header["input_size"]) == [3, 32, 32] and len(json.loads(header["mean"])) == 3


def test_an_hf_run_exports_a_directory_transformers_loads(tmp_path, hf_dir):
    """An HF ViT's merged model is written with save_pretrained: AutoModelForImageClassification
    loads it and gives the trained (adapter) model's logits."""
    from transformers import AutoModelForImageClassification

    from peftlab.training.export import export_merged, load_trained

    cfg = config(model={"source": "hf", "path": str(hf_dir)}, method={"name": "lora", "r": 4}, train={"epochs": 1})
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    out = export_merged(tmp_path / "run", tmp_path / "merged")
    loaded = AutoModelForImageClassification.from_pretrained(out).eval()
    tuned = load_trained(str(tmp_path / "run")).model.eval()  # a path's text works as a Path does
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x).logits, tuned(x), rtol=1e-4, atol=1e-4)


def test_cli_missing_data_root_is_one_line_exit_2(tmp_path):
    proc = cli_here(
        "train", "/dev/null", "data.name=cifar10", f"data.root={tmp_path}", "--run-dir", str(tmp_path / "run")
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "cifar10" in proc.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    "quant", [{"mode": "nf4", "double_quant": True}, {"mode": "int8"}, {"mode": "nf4", "cpu_kernel": "bnb"}]
)  # bnb's bf16 kernel on AVX512-BF16 CPUs
def test_qlora_run_reports_both_accuracies_and_exports_both_ways(tmp_path, quant):
    from peftlab.data import build_data
    from peftlab.models.backbones import input_spec_for
    from peftlab.training.evaluate import evaluate
    from peftlab.training.export import export_merged, load_quantized

    cfg = config(method={"name": "lora", "r": 4}, quant=quant, train={"epochs": 1})
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    assert result["merge"]["ok"] and result["merge"]["max_abs_diff"] <= result["merge"]["tolerance"]
    assert result["merge"]["requantized_max_abs_diff"] > result["merge"]["max_abs_diff"]  # re-quantization error
    assert 0.0 <= result["metrics"]["merged_test_top1"] <= 1.0
    assert 0 < result["timing"]["test_seconds"] < result["timing"]["wall_seconds"]  # the test and the merged test
    memory = result["memory"]
    assert 0 < memory["base_weights_bytes"] < 0.5 * memory["base_weights_fp32_bytes"]
    assert memory["trainable_state_bytes"] >= 4 * 4 * result["params"]["trainable"]  # weights, grads, 2 Adam moments
    assert result["params"]["initial"]["trainable"] == result["params"]["trainable"]
    assert result["frozen_base"]["equal"], result["frozen_base"]  # codes and statistics (absmax, SCB) unchanged

    # --merged: dequant(W) + ΔW as a plain timm state dict
    export_merged(tmp_path / "run", tmp_path / "merged.safetensors")
    model = timm.create_model(
        TINY_MODEL["name"], num_classes=10, **{k: v for k, v in TINY_MODEL.items() if k != "name"}
    )
    model.load_state_dict(load_file(str(tmp_path / "merged.safetensors")), strict=True)
    # --merged --quantized: the deployable quantized model; loaded back it scores the run's merged test top-1
    export_merged(tmp_path / "run", tmp_path / "merged-q.safetensors", quantized=True)
    loaded = load_quantized(tmp_path / "merged-q.safetensors")
    spec = input_spec_for(cfg.model)
    data = build_data(cfg.data, img_size=spec.img_size, in_chans=spec.in_chans, mean=spec.mean, std=spec.std)
    test = evaluate(loaded, data.test, 96, torch.device("cpu"), "fp32", "test")
    assert test["top1"] == result["metrics"]["merged_test_top1"]


@pytest.mark.parametrize(
    "method, train_cfg",
    [
        ("lora", {"lr": 1e30}),  # finite loss at its one step, non-finite weights or outputs after it
        ("full", {"weight_decay": 1e30}),
    ],
)
def test_a_run_whose_last_update_is_non_finite_ends_diverged(tmp_path, method, train_cfg):
    options = {"r": 4} if method == "lora" else {}
    cfg = config(
        method={"name": method, **options}, train={"max_steps": 1, "clip_grad": None, "warmup_ratio": 0.0, **train_cfg}
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "diverged", result
    assert "non-finite" in result["error"] and "\n" not in result["error"]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "diverged"


def test_a_checkpoint_of_another_method_is_one_line_and_marked_unusable(tmp_path):
    import shutil

    from peftlab.utils.errors import CheckpointError

    lora = config(method={"name": "lora", "r": 4}, train={"max_steps": 2})
    assert train(lora, tmp_path / "lora", progress=False)["status"] == "completed"
    full = config(method={"name": "full"}, train={"max_steps": 2})
    shutil.copytree(tmp_path / "lora" / "checkpoint", tmp_path / "full" / "checkpoint")
    with pytest.raises(CheckpointError, match="does not fit this run") as err:
        train(full, tmp_path / "full", progress=False)
    assert "\n" not in str(err.value) and "move it aside" in str(err.value)
    saved = json.loads((tmp_path / "full" / "result.json").read_text())
    assert saved["status"] == "failed" and saved["checkpoint_unusable"] is True


def test_threads_come_from_the_config_and_are_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the suite's conftest sets it
    torch.set_num_threads(2)
    result = train(
        config(method={"name": "linear"}, train={"max_steps": 1, "threads": 1}), tmp_path / "a", progress=False
    )
    assert result["provenance"]["threads"] == 1
    from peftlab.training.runtime import default_threads

    torch.set_num_threads(1)
    result = train(config(method={"name": "linear"}, train={"max_steps": 1}), tmp_path / "b", progress=False)
    assert result["provenance"]["threads"] == default_threads()  # not whatever the process had set
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # as torch reads it
    assert default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "0")  # not a thread count: the physical cores
    assert default_threads() == result["provenance"]["threads"]


def test_export_of_a_mismatched_run_is_one_line(tmp_path, capsys):
    from safetensors.torch import save_file

    from peftlab.cli import main

    run_dir = tmp_path / "run"
    assert (
        train(config(method={"name": "lora", "r": 4}, train={"max_steps": 1}), run_dir, progress=False)["status"]
        == "completed"
    )
    adapter = load_file(str(run_dir / "adapter.safetensors"))
    out = tmp_path / "merged.safetensors"

    def export_error(*extra) -> str:
        assert main(["export", str(run_dir), "--merged", str(out), *extra]) == 2
        stderr = capsys.readouterr().err
        assert stderr.startswith("peftlab: error: ") and stderr.count("\n") == 1, stderr
        return stderr

    out.mkdir()
    assert "is a directory" in export_error()
    out.rmdir()
    key = next(k for k in adapter if "lora_A" in k)
    for broken in (
        {k: v for k, v in adapter.items() if k != key},  # a missing key
        {**adapter, "extra.weight": torch.zeros(1)},  # an extra key
        {**adapter, key: torch.zeros(3, 3)},
    ):  # a wrong shape
        save_file(broken, str(run_dir / "adapter.safetensors"))
        assert "adapter.safetensors does not match the run's config" in export_error()
    save_file({**adapter, key: torch.full_like(adapter[key], float("nan"))}, str(run_dir / "adapter.safetensors"))
    assert "holds non-finite values (NaN or inf)" in export_error("--force") and not out.exists()
    save_file(adapter, str(run_dir / "adapter.safetensors"))
    result = json.loads((run_dir / "result.json").read_text())
    (run_dir / "result.json").write_text(
        json.dumps({**result, "config": {**result["config"], "method": {"name": "full"}}})
    )
    assert "its method is not 'lora'" in export_error()
    (run_dir / "result.json").write_text(json.dumps({**result, "provenance": None}))
    assert "number of classes" in export_error()
    (run_dir / "result.json").write_text(json.dumps(result))
    assert main(["export", str(run_dir), "--merged", str(out)]) == 0
    assert main(["export", str(run_dir), "--peft", str(tmp_path / "peft")]) == 0  # for runs trained before
    assert_peft_loads(run_dir, tmp_path / "peft")


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["int4", "nf4"])
def test_qalora_run_merges_exactly_and_its_quantized_export_scores_the_same(tmp_path, fmt):
    from safetensors import safe_open

    from peftlab.data import build_data
    from peftlab.models.backbones import input_spec_for
    from peftlab.training.evaluate import evaluate
    from peftlab.training.export import load_quantized

    cfg = config(
        method={"name": "qalora", "r": 4, "format": fmt, "group_size": 32, "schedule": "linear"},
        train={"epochs": 1, "merged_test": "always"},  # an exact merge is tested merged only when asked
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    merge = result["merge"]
    assert merge["ok"] and merge["requantized_ok"] and merge["codes_unchanged"], merge
    assert merge["requantized_max_abs_diff"] <= merge["tolerance"]
    report = result["quantization"]
    assert report["format"] == fmt and report["lambda"] == 1.0
    assert len(report["layer_relative_error"]) == 6 * TINY_MODEL["depth"]  # q, k, v, proj, fc1, fc2 per block
    assert all(0 < e < 0.2 for e in report["layer_relative_error"].values())
    memory = result["memory"]
    assert 0 < memory["base_weights_bytes"] < 0.5 * memory["base_weights_fp32_bytes"]

    # peftlab export RUN --quantized OUT: packed codes, scales, zeros / offsets and metadata
    proc = cli_here("export", str(tmp_path / "run"), "--quantized", str(tmp_path / "qalora.safetensors"))
    assert proc.returncode == 0, proc.stderr
    with safe_open(str(tmp_path / "qalora.safetensors"), "pt") as f:
        metadata = f.metadata()
        codes = f.get_tensor("blocks.0.attn.qkv.q.codes")
        shift = f.get_tensor("blocks.0.attn.qkv.q." + ("zeros" if fmt == "int4" else "offsets"))
    d = TINY_MODEL["embed_dim"]
    assert metadata["format"] == "peftlab-groupwise" and metadata["quant_format"] == fmt
    assert metadata["group_size"] == "32" and json.loads(metadata["layers"])["blocks.1.mlp.fc2"] == [d, 4 * d]
    assert codes.dtype == torch.uint8 and codes.numel() == d * d // 2 and shift.shape == (d, d // 32)

    loaded = load_quantized(tmp_path / "qalora.safetensors")
    spec = input_spec_for(cfg.model)
    data = build_data(cfg.data, img_size=spec.img_size, in_chans=spec.in_chans, mean=spec.mean, std=spec.std)
    test = evaluate(loaded, data.test, 96, torch.device("cpu"), "fp32", "test")
    assert test["top1"] == result["metrics"]["merged_test_top1"]


def test_a_run_whose_validation_outlasts_its_training_says_so(tmp_path, monkeypatch):
    """A run hands its measured validation and training seconds and its validation size to the check, and
    the check's warning reaches result.json naming val_subset. Which of two sub-second timings is larger
    is the machine's load, not the code's: the check sees a validation 60 s longer than training."""
    from peftlab.training import outcome

    seen = []

    def slow(val_seconds, train_seconds, val_images, text=False):
        seen.append((val_seconds, train_seconds, val_images))
        return real(train_seconds + 60.0, train_seconds, val_images, text=text)

    real = outcome.slow_validation
    monkeypatch.setattr(outcome, "slow_validation", slow)
    result = train(
        config(
            method={"name": "linear"}, data={"root": None, "train_subset": 32, "val_subset": 1000}, train={"epochs": 2}
        ),
        tmp_path / "run",
        progress=False,
    )
    assert result["status"] == "completed", result["error"]
    assert seen == [(result["timing"]["val_seconds"], result["timing"]["train_seconds"], 1000)]
    assert result["timing"]["val_seconds"] > 0 and result["timing"]["train_seconds"] > 0
    assert len(result["warnings"]) == 1 and "data.val_subset (now 1000 images)" in result["warnings"][0]


def test_a_short_validation_is_not_worth_a_warning_whatever_the_load():
    """Below 30 s of validation the two timings are noise: the line must not come and go with the load."""
    from peftlab.training.outcome import slow_validation

    assert slow_validation(0.3, 0.1, 32) == [] and slow_validation(29.0, 1.0, 32) == []
    assert slow_validation(31.0, 30.5, 32) != [] and slow_validation(31.0, 40.0, 32) == []
    assert "(now 32 examples)" in slow_validation(31.0, 30.5, 32, text=True)[0]  # a text run's unit


def test_a_run_without_a_validation_split_reports_no_val_accuracy_and_refuses_early_stopping(tmp_path):
    """data.val_fraction 0: val_top1 and best_val_top1 are null (not 0%), every epoch runs, and
    early stopping, which would stop for "no improvement", is a one-line config error."""
    result = train(
        config(method={"name": "linear"}, data={"val_fraction": 0.0, "val_subset": None}, train={"epochs": 3}),
        tmp_path / "run",
        progress=False,
    )
    assert result["status"] == "completed", result["error"]
    assert result["metrics"]["val_top1"] is None and result["metrics"]["best_val_top1"] is None
    epochs = [r for r in training_records(tmp_path / "run") if r["kind"] == "epoch"]
    assert [r["val_top1"] for r in epochs] == [None, None, None]
    assert result["metrics"]["test_top1"] > 0
    with pytest.raises(
        ConfigError,
        match=r"train.early_stop_patience=1 is invalid: expected null when "
        r"data.val_fraction is 0",
    ):
        config(data={"val_fraction": 0.0, "val_subset": None}, train={"early_stop_patience": 1})


def test_a_failed_runs_directory_takes_a_corrected_config_and_keeps_the_failure_aside(tmp_path):
    """A config that failed (here: a class that does not exist) can be fixed and rerun in the same
    directory: the failed attempt moves to failed-<time>/, nothing is deleted. A completed run's
    directory still refuses another config."""
    run_dir = tmp_path / "run"
    bad = config(method={"name": "linear"}, data={"classes": [0, 99]})
    with pytest.raises(ConfigError):
        train(bad, run_dir, progress=False)
    assert json.loads((run_dir / "result.json").read_text())["status"] == "failed"
    fixed = config(method={"name": "linear"}, data={"classes": [0, 1]})
    result = train(fixed, run_dir, progress=False)
    assert result["status"] == "completed", result["error"]
    (aside,) = run_dir.glob("failed-*")
    assert json.loads((aside / "result.json").read_text())["status"] == "failed"
    assert load_config(aside / "config.yaml") == bad and load_config(run_dir / "config.yaml") == fixed
    with pytest.raises(ConfigError, match="different config.yaml"):
        train(bad, run_dir, progress=False)


def test_device_switches_resolve_on_cpu_and_are_recorded(tmp_path):
    """precision auto is fp32 on a CPU, TF32 applies to CUDA only, AdamW is the foreach one unless asked."""
    result = train(
        config(method={"name": "lora", "r": 4}, train={"epochs": 1, "max_steps": 2}), tmp_path / "a", progress=False
    )
    assert result["config"]["train"]["precision"] == "auto"
    provenance = result["provenance"]
    assert (provenance["dtype"], provenance["tf32"], provenance["fused_adamw"], provenance["compile"]) == (
        "fp32",
        False,
        False,
        None,
    )
    fused = train(
        config(method={"name": "lora", "r": 4}, train={"epochs": 1, "max_steps": 2, "fused_adamw": True}),
        tmp_path / "b",
        progress=False,
    )
    assert fused["status"] == "completed" and fused["provenance"]["fused_adamw"] is True


def test_the_fused_cpu_adamw_of_a_reproducible_run_resumes_bit_identically(tmp_path, monkeypatch):
    # train.reproducible takes it on CPU (its square root exactly rounded on every vendor's CPU)
    cfg = config(method={"name": "lora", "r": 4}, train={"fused_adamw": True})
    assert_resumes_bit_identically(cfg, tmp_path, monkeypatch, crash_step=7)


def test_a_model_that_cannot_compile_trains_eagerly_after_one_line(tmp_path, monkeypatch, capsys):
    def broken_compile(self, *args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("inductor: no C++ compiler")  # what a machine without gcc reports

        self._compiled_call_impl = fail

    monkeypatch.setattr(torch.nn.Module, "compile", broken_compile)
    cfg = config(method={"name": "lora", "r": 4}, train={"epochs": 1, "max_steps": 2, "compile": True})
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    record = result["provenance"]["compile"]
    assert record["used"] is False and "no C++ compiler" in record["error"]
    err = capsys.readouterr().err
    assert err.count("train.compile") == 1 and "training eagerly" in err


@pytest.mark.e2e
def test_a_compiled_run_trains_like_the_eager_one(tmp_path):
    """torch.compile (inductor on CPU) changes the order of some float operations, not the run."""
    train_cfg, one_block = {"epochs": 1, "max_steps": 3}, {"depth": 1}  # inductor compiles each block's code anew
    train(config(model=one_block, method={"name": "lora", "r": 4}, train=train_cfg), tmp_path / "eager", progress=False)
    compiled = train(
        config(model=one_block, method={"name": "lora", "r": 4}, train={**train_cfg, "compile": True}),
        tmp_path / "compiled",
        progress=False,
    )
    assert compiled["status"] == "completed", compiled["error"]
    assert compiled["provenance"]["compile"]["used"] is True and compiled["provenance"]["compile"]["seconds"] > 0
    a, b = (load_file(str(tmp_path / name / "adapter.safetensors")) for name in ("eager", "compiled"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4)


def test_a_run_whose_training_cannot_fit_is_refused_before_its_first_step(tmp_path, monkeypatch):
    import peftlab.training.preflight

    monkeypatch.setattr(peftlab.training.preflight, "available_bytes", lambda device: 1024)  # a machine with 1 KiB free
    with pytest.raises(Exception, match="GiB for training beyond its weights"):
        train(config(method={"name": "lora", "r": 4}), tmp_path / "run", progress=False)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and "train.batch_size" in result["error"] and result["step"] is None
    assert not (tmp_path / "run" / "checkpoint").exists()
    monkeypatch.undo()  # the same run on the real machine fits, and records its estimate
    done = train(
        config(method={"name": "lora", "r": 4}, train={"epochs": 1, "max_steps": 1}), tmp_path / "ok", progress=False
    )
    estimate = done["memory"]["estimate"]
    assert estimate["activations_per_image_bytes"] > 0 and estimate["batch_size"] == 32


def out_of_memory_above(monkeypatch, images: int, after_calls: int = 0):
    """compute_loss raises CUDA's out-of-memory error for micro-batches of more than ``images``
    images once it has been called ``after_calls`` times: a device that fills up mid-run."""
    import peftlab.training.step

    real, calls = peftlab.training.step.compute_loss, [0]

    def compute_loss(model, batch, labels, precision, device, label_smoothing=0.0):
        calls[0] += 1
        if calls[0] > after_calls and len(batch) > images:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(batch)} images")
        return real(model, batch, labels, precision, device, label_smoothing)

    monkeypatch.setattr(peftlab.training.step, "compute_loss", compute_loss)


def test_auto_batch_halves_the_micro_batch_and_trains_the_same_steps(tmp_path, monkeypatch):
    train_cfg = {"epochs": 1, "ckpt_every": 2}
    plain = train(config(method={"name": "lora", "r": 4}, train=train_cfg), tmp_path / "plain", progress=False)
    out_of_memory_above(monkeypatch, 8, after_calls=3)  # fits until step 4, then only 8 images at once
    auto = train(
        config(method={"name": "lora", "r": 4}, train={**train_cfg, "auto_batch": True}),
        tmp_path / "auto",
        progress=False,
    )
    assert auto["status"] == "completed", auto["error"]
    record = auto["auto_batch"]
    assert record["micro_batch"] == 8 and record["pieces_per_micro_batch"] == 4
    assert [event["micro_batch"] for event in record["events"]] == [32, 16]
    assert plain["auto_batch"] is None and plain["step"] == auto["step"] == 6
    a, b = (load_file(str(tmp_path / name / "adapter.safetensors")) for name in ("plain", "auto"))
    for key in a:  # the same steps from the checkpoint on, the gradients summed over quarters
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "step"
    ]
    assert steps == list(range(1, 7))  # the records after the checkpoint were written once


def test_out_of_memory_without_auto_batch_fails_the_run_and_names_the_switch(tmp_path, monkeypatch):
    out_of_memory_above(monkeypatch, 8)
    with pytest.raises(torch.OutOfMemoryError, match="train.auto_batch=true"):
        train(config(method={"name": "lora", "r": 4}), tmp_path / "run", progress=False)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and "train.auto_batch=true" in result["error"]


def test_a_failed_merge_check_is_a_warning_and_export_refuses_it(tmp_path, monkeypatch):
    """A merge that is not the evaluated model never passes silently (issue 22: a repacked 4-bit base
    once merged to 13.7% against 60.5% and the run said nothing)."""
    from peftlab.training.export import export_merged
    from peftlab.tuners.lora.model import LoraTuner
    from peftlab.utils.errors import UserError

    merged_model = LoraTuner.merged_model

    def wrong_merge(self, quantized=False):
        model = merged_model(self, quantized)
        with torch.no_grad():
            next(p for n, p in model.named_parameters() if n.endswith("qkv.weight")).mul_(2.0)
        return model

    monkeypatch.setattr(LoraTuner, "merged_model", wrong_merge)
    result = train(config(method={"name": "lora", "r": 4}, train={"max_steps": 2}), tmp_path / "run", progress=False)
    assert result["status"] == "completed" and result["merge"]["ok"] is False, result["merge"]
    assert any(w.startswith("merge check failed") for w in result["warnings"]), result["warnings"]
    with pytest.raises(UserError, match="merge check failed.*--force"):
        export_merged(tmp_path / "run", tmp_path / "merged.safetensors")
    assert not (tmp_path / "merged.safetensors").exists()
    export_merged(tmp_path / "run", tmp_path / "merged.safetensors", force=True)
    assert (tmp_path / "merged.safetensors").exists()


def test_a_peft_type_on_qv_slices_warns_at_its_end_and_its_peft_export_names_it(tmp_path, capsys):
    """A PEFT type without an exact rewrite onto timm's whole qkv (VeRA on the q and v slices): the run says at its
    end that PEFT cannot load its adapter, and `export --peft` refuses naming that type, not a fixed list."""
    from peftlab.cli import main

    cfg = config(method={"name": "peft", "peft_type": "VERA", "target_modules": "standard"}, train={"max_steps": 1})
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["status"] == "completed", result["error"]
    (warning,) = [w for w in result["warnings"] if "PEFT cannot load" in w]
    assert "peft (VERA) adapter sits on q/k/v slices" in warning and "`peftlab export --merged` works" in warning
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "--peft", str(tmp_path / "peft")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "peft (VERA) adapter sits on q/k/v slices" in err and "vera, loha" not in err
    assert main(["export", str(tmp_path / "run"), "--merged", str(tmp_path / "merged.safetensors")]) == 0
