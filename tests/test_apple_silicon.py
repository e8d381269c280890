"""Apple Silicon seams: device choice, precision, quantized bases, memory readings on macOS.

No test here has run on Apple hardware (none is available to CI): each fakes the platform at the
narrowest seam (torch.backends.mps.is_available, sys.platform, getrusage, torch.mps) and checks what
peftlab decides there. The DataLoader side (pinned memory, workers, macOS's spawn start) is in
tests/data/test_loading.py; docs/run-directory.md ("Apple Silicon") says what has never run.
"""

import types

import pytest
import torch

from peftlab.config.schema import load_config
from peftlab.training import metrics, preflight, runtime
from peftlab.utils.errors import ConfigError

MPS = torch.device("mps")


@pytest.fixture
def gpus(monkeypatch):
    """Which GPUs this 'machine' has: set the returned dict's cuda / mps."""
    present = {"cuda": False, "mps": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: present["cuda"])
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: present["mps"])
    return present


@pytest.mark.parametrize("cuda, mps, chosen", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_picks_cuda_then_mps_then_cpu(gpus, cuda, mps, chosen):
    gpus.update(cuda=cuda, mps=mps)
    assert runtime.select_device("auto") == torch.device(chosen)


def test_mps_where_there_is_none_is_refused_in_one_line(gpus):
    with pytest.raises(ConfigError) as err:
        runtime.select_device("mps")
    assert str(err.value) == (
        "train.device='mps' is invalid: no Apple MPS device is available here (Apple Silicon, "
        "macOS 14 or later); use auto or cpu"
    )
    gpus["mps"] = True
    assert runtime.select_device("mps") == MPS


def test_the_config_accepts_mps_and_names_it_among_the_devices():
    assert load_config(overrides={"train": {"device": "mps"}}).train.device == "mps"
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda, cuda:N or mps"):
        load_config(overrides={"train": {"device": "metal"}})


@pytest.fixture
def autocasts(monkeypatch):
    """torch.autocast recorded, not entered (it would need the device)."""
    made = []
    monkeypatch.setattr(torch, "autocast", lambda device_type, dtype: made.append((device_type, dtype)) or "ctx")
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: True)
    return made


def test_auto_precision_is_fp32_on_mps_until_measured():
    assert runtime.resolve_precision("auto", MPS) == "fp32"


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mps_autocasts_in_bf16_and_fp16_as_torch_allows_there(autocasts, precision, dtype):
    """torch 2.14's autocast takes both dtypes on MPS (read in torch/amp/autocast_mode.py, and its
    GradScaler, which fp16 needs, handles MPS); fp32 is no autocast at all."""
    assert runtime.autocast(precision, MPS) == "ctx" and autocasts == [("mps", dtype)]
    assert runtime.autocast("fp32", MPS) is not None and len(autocasts) == 1


def test_bf16_on_mps_before_macos_14_and_fp16_on_cpu_are_refused_in_one_line(autocasts, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: (major, minor) < (14, 0))
    with pytest.raises(
        ConfigError,
        match=r"^train.precision='bf16' is invalid on MPS before macOS 14 .*: "
        r"expected fp32 or fp16$",
    ):
        runtime.autocast("bf16", MPS)
    with pytest.raises(ConfigError, match=r"^train.precision='fp16' is invalid on CPU: expected fp32 or bf16$"):
        runtime.autocast("fp16", torch.device("cpu"))
    assert autocasts == []


def test_a_quantized_layer_bitsandbytes_cannot_move_to_the_device_is_a_one_line_refusal():
    """bitsandbytes 0.50 lists int8, nf4 and fp4 as supported on MPS (pure-PyTorch kernels); should
    a kernel be missing after all, torch raises NotImplementedError, and peftlab says so in one line."""
    from peftlab.quant.bases import BNB_PIN, moved

    class NoKernel(torch.nn.Module):
        def to(self, *args, **kwargs):
            raise NotImplementedError(
                "Could not run 'bitsandbytes::int8_vectorwise_quant' with arguments from the "
                "'MPS' backend. This could be because the operator doesn't exist for this "
                "backend,\nor was omitted during the selective/custom build process."
            )

    with pytest.raises(ConfigError) as err:
        moved(NoKernel(), MPS, "int8")
    assert str(err.value) == (
        f"quant.mode='int8' is not supported by {BNB_PIN} on mps (Could not run "
        "'bitsandbytes::int8_vectorwise_quant' with arguments from the 'MPS' backend); use "
        "train.device=cpu or quant.mode=none"
    )
    layer = torch.nn.Linear(2, 2)
    assert moved(layer, torch.device("cpu"), "int8") is layer


@pytest.mark.parametrize("platform, expected", [("darwin", 5_000_000), ("linux", 5_000_000 * 1024)])
def test_peak_rss_reads_ru_maxrss_as_bytes_on_macos_and_kib_on_linux(monkeypatch, platform, expected):
    monkeypatch.setattr(metrics.resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=5_000_000))
    monkeypatch.setattr(metrics.sys, "platform", platform)
    assert metrics.peak_rss_bytes() == expected


def test_the_peak_above_the_baseline_on_macos_comes_from_ru_maxrss_in_bytes(monkeypatch):
    """macOS has no /proc: no resettable high-water mark, so the lifetime peak is the bound."""
    monkeypatch.setattr(metrics.PeakRSS, "reset_peak", staticmethod(lambda: False))
    monkeypatch.setattr(metrics.PeakRSS, "_status", staticmethod(lambda field: None))
    monkeypatch.setattr(metrics.sys, "platform", "darwin")
    rss = metrics.PeakRSS()
    monkeypatch.setattr(
        metrics.resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=rss.baseline + 7 * 2**20)
    )
    assert rss.peak_above_baseline() == 7 * 2**20


def test_memory_available_on_mps_is_bounded_by_metals_working_set(monkeypatch):
    monkeypatch.setattr(preflight.psutil, "virtual_memory", lambda: types.SimpleNamespace(available=12 * 2**30))
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 10 * 2**30)
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 3 * 2**30)
    assert preflight.available_bytes(MPS) == 7 * 2**30
    assert preflight.available_bytes(torch.device("cpu")) == 12 * 2**30
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 11 * 2**30)
    assert preflight.available_bytes(MPS) == 0


def test_timings_on_mps_wait_for_the_gpu(monkeypatch):
    waited = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: waited.append("mps"))
    metrics.synchronize(MPS)
    metrics.synchronize(torch.device("cpu"))
    assert waited == ["mps"]
